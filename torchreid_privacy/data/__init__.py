"""Data: synthetic Market-1501, identity-disjoint validation split, folders of crops, torchreid datasets.

Importing this package registers ``synthetic_market``, ``synthetic_market_hard`` and the
``<base>_val`` datasets in torchreid's dataset registry; ``register_folder_dataset(name, path)``
adds a folder of crops under any name (configs say ``folder:PATH`` and get it registered).
"""
from torchreid_privacy.data.datasets import SyntheticMarket, SyntheticMarketHard, ValSplitDataset, register_val_split
from torchreid_privacy.data.folder import FolderLayoutError, read_folder, register_folder_dataset
from torchreid_privacy.data.split import split_identities, split_items, write_split
from torchreid_privacy.data.synthetic import (
    SyntheticSpec,
    ensure_synthetic_market,
    make_synthetic_market,
    read_manifest,
)

__all__ = [
    "FolderLayoutError",
    "SyntheticMarket",
    "SyntheticMarketHard",
    "SyntheticSpec",
    "ValSplitDataset",
    "ensure_synthetic_market",
    "make_synthetic_market",
    "read_folder",
    "read_manifest",
    "register_folder_dataset",
    "register_val_split",
    "split_identities",
    "split_items",
    "write_split",
]
