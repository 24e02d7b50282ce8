"""torchreid datasets of this package, registered in torchreid's dataset registry on import.

- ``synthetic_market``: the synthetic Market-1501 (:mod:`.synthetic`), generated under
  ``root`` on first use, so a config runs without any download.
- ``synthetic_market_hard``: its hard style (:mod:`.synthetic_hard`: textured clothing,
  clutter, strong camera nuisances), generated under ``root/market1501_hard`` likewise.
- ``<base>_val`` (``synthetic_market_val``, ``synthetic_market_hard_val``, ``market1501_val``,
  ``msmt17_val``, ``cuhk03_val``; more through :func:`register_val_split`): the identity-disjoint
  validation split of ``<base>``'s TRAIN set (:mod:`.split`): ``train`` = the remaining
  training identities relabelled 0..n-1, ``query``/``gallery`` = val-query/val-gallery.
  The test set of ``<base>`` is never read into it, so model selection on it is honest.

Usage::

    import torchreid_privacy.data  # registers the datasets
    dm = bridge.ImageDataManager(root="reid-data", sources="synthetic_market_val", height=64, width=32)
"""
from __future__ import annotations

import glob
import logging
import os.path as osp
import re
from typing import Any, List, Optional, Tuple

from torchreid_privacy import bridge
from torchreid_privacy.data.split import split_items
from torchreid_privacy.data.synthetic import DATASET_DIR, HARD_DATASET_DIR, MARKET_SUBDIR, ensure_synthetic_market

log = logging.getLogger(__name__)

_MARKET_NAME = re.compile(r"([-\d]+)_c(\d)")
VAL_SPLIT_BASES = ("synthetic_market", "synthetic_market_hard", "market1501", "msmt17", "cuhk03")
DEFAULT_SPLIT = (0.2, 0)  # (val_ratio, split_seed) of the built-in <base>_val datasets


class SyntheticMarket(bridge.ImageDataset):
    """Synthetic Market-1501 under ``root/market1501``; generated with defaults if missing.

    Parsing is Market-1501's (pid -1 junk ignored, camids 0-based, train relabelled), with
    sorted file lists so the relabelling and item order do not depend on the filesystem.
    A file whose name does not follow the pattern (a stray ``notes.jpg``) is skipped, counted
    and logged instead of crashing the loader as torchreid's Market-1501 does.
    """

    _junk_pids = [0, -1]
    dataset_dir = DATASET_DIR
    registry_name = "synthetic_market"
    style = "plain"

    def __init__(self, root: str = "", market1501_500k: bool = False, **kwargs: Any) -> None:
        if market1501_500k:
            raise ValueError("market1501_500k: the synthetic set has no 500k distractor images")
        self.root = osp.abspath(osp.expanduser(root))
        self.dataset_dir = str(ensure_synthetic_market(self.root, style=self.style))
        self.data_dir = osp.join(self.dataset_dir, MARKET_SUBDIR)
        train = self.process_dir(osp.join(self.data_dir, "bounding_box_train"), relabel=True)
        query = self.process_dir(osp.join(self.data_dir, "query"), relabel=False)
        gallery = self.process_dir(osp.join(self.data_dir, "bounding_box_test"), relabel=False)
        super().__init__(train, query, gallery, **kwargs)

    @classmethod
    def process_dir(cls, dir_path: str, relabel: bool = False) -> List[Tuple[str, int, int]]:
        items, stray = [], []
        for path in sorted(glob.glob(osp.join(dir_path, "*.jpg"))):
            match = _MARKET_NAME.search(osp.basename(path))
            if match is None:
                stray.append(osp.basename(path))
                continue
            pid, camid = map(int, match.groups())
            if pid != -1:  # junk boxes are ignored, as in Market-1501
                items.append((path, pid, camid - 1))
        if stray:
            log.warning("%s: skipped %d file(s) in %s whose name does not match %s (first: %s)",
                        cls.registry_name, len(stray), dir_path, _MARKET_NAME.pattern, stray[0])
        if relabel:
            labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
            items = [(path, labels[pid], camid) for path, pid, camid in items]
        return items


class SyntheticMarketHard(SyntheticMarket):
    """The hard style under ``root/market1501_hard``; generated with defaults if missing."""

    dataset_dir = HARD_DATASET_DIR
    registry_name = "synthetic_market_hard"
    style = "hard"


class ValSplitDataset(bridge.ImageDataset):
    """Base of the ``<base>_val`` datasets; :func:`register_val_split` makes the subclasses."""

    # val pids are the base's relabelled train labels: 0 is a real identity, not junk
    _junk_pids: List[int] = []
    # the mark is_val_split reads: a class made before this module was reloaded (a notebook's
    # autoreload) is still a validation split, though no longer a subclass of the new base
    is_privacy_val_split = True
    base_name = ""
    default_val_ratio = 0.2
    default_split_seed = 0
    default_query_ratio = 0.2

    def __init__(self, root: str = "", val_ratio: Optional[float] = None, split_seed: Optional[int] = None,
                 query_ratio: Optional[float] = None, transform: Any = None, k_tfm: int = 1,
                 mode: str = "train", combineall: bool = False, verbose: bool = True, **kwargs: Any) -> None:
        if not self.base_name:
            raise TypeError("ValSplitDataset is abstract; use register_val_split(base_name)")
        self.val_ratio = self.default_val_ratio if val_ratio is None else val_ratio
        self.split_seed = self.default_split_seed if split_seed is None else split_seed
        self.query_ratio = self.default_query_ratio if query_ratio is None else query_ratio
        # base-specific kwargs (split_id, cuhk03_labeled, market1501_500k, ...) go to the base
        base = bridge.init_image_dataset(self.base_name, root=root, mode="train", combineall=False,
                                         verbose=False, **kwargs)
        self.root = getattr(base, "root", root)
        parts = split_items(base.train, val_ratio=self.val_ratio, query_ratio=self.query_ratio,
                            seed=self.split_seed)
        super().__init__(parts["train"], parts["val_query"], parts["val_gallery"], transform=transform,
                         k_tfm=k_tfm, mode=mode, combineall=combineall, verbose=verbose)


def register_val_split(base_name: str, name: Optional[str] = None, val_ratio: float = 0.2,
                       split_seed: int = 0, query_ratio: float = 0.2, force: bool = False) -> type:
    """Register ``name`` (default ``<base_name>_val``): the validation split of ``base_name``.

    The constructor's ``val_ratio``/``split_seed``/``query_ratio`` kwargs override the defaults
    given here. Re-registering with the same arguments is a no-op (module reloads); the same
    name with other arguments is an error unless ``force``.
    """
    if base_name not in bridge.available_datasets():
        raise ValueError(f"base_name: '{base_name}' is not a registered torchreid image dataset")
    name = name or f"{base_name}_val"
    attrs = {"base_name": base_name, "default_val_ratio": val_ratio, "default_split_seed": split_seed,
             "default_query_ratio": query_ratio, "__module__": __name__,
             "__doc__": f"Identity-disjoint validation split of '{base_name}' (its train set only)."}
    cls = type(f"ValSplit_{base_name}", (ValSplitDataset,), attrs)
    # the qualname carries the parameters: bridge treats equal (module, qualname) as the same class
    cls.__qualname__ = (f"ValSplit[{base_name},val_ratio={val_ratio},split_seed={split_seed},"
                        f"query_ratio={query_ratio}]")
    bridge.register_dataset(name, cls, force=force)
    return cls


def is_val_split(name: str) -> bool:
    """Whether torchreid's dataset ``name`` is one of our identity-disjoint validation splits."""
    cls = bridge.dataset_class(name)
    return isinstance(cls, type) and getattr(cls, "is_privacy_val_split", False) is True


def _register_builtins() -> None:
    for cls in (SyntheticMarket, SyntheticMarketHard):
        bridge.register_dataset(cls.registry_name, cls)
    for base in VAL_SPLIT_BASES:
        try:
            register_val_split(base)
        except KeyError:
            # the name is taken by a split re-registered with other parameters (e.g. a config's
            # val_ratio, before a module reload) or by someone else's dataset: keep theirs
            continue


_register_builtins()
