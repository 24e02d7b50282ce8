"""Applications on a trained model: folders through G / G_R (``folders``), ``search``, the
``visualize`` writer, the ``demo``, its tables (``report``) and the benchmarks."""
