"""Shipped YAML configs (installed as data of ``torchreid_privacy.configs``)."""
