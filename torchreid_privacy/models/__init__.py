"""The networks of a run built from its config (``nets``: C, G, G_R, discriminators, adversary)
and their optimizers and schedulers (``optimizers``)."""
