"""A trained run applied to the user's files: folders of images through G / G_R and sealed
sidecars (``process``), and the O/M/P/R views of a run (``visualize``)."""
