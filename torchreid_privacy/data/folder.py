"""Any folder of pedestrian crops as a torchreid dataset: ``data.sources ['folder:/data/cams']``.

Why: a user's first question is "can I train it on my own crops?"; the answer should be one
config override, not a dataset class. Two layouts are read:

- **Market-1501**: ``bounding_box_train/``, ``query/``, ``bounding_box_test/`` (in the folder
  itself or in its only subfolder, as the Market-1501 archive unpacks), files named
  ``<pid>_c<cam>...`` (``0001_c1s1_000151_01.jpg``; pid -1 is junk and ignored, as in Market);
- **one subfolder per identity**: ``<root>/<pid>/<cam>_<anything>.jpg`` (camera ``c3``, ``cam3``
  or ``3``, or any word); train and test identities are drawn reproducibly (``split_seed``,
  ``test_ratio``) from the identities seen by >= 2 cameras, and each test identity gives one
  query per camera (Market-1501's habit), the rest is its gallery.

``folder:PATH`` names are registered in torchreid's dataset registry when a config names them
(:func:`register_folder_names`), so ``<name>_val``, ``search``, ``visualize`` and the attacks
work on them as on any torchreid dataset. A relative PATH is resolved against the current
directory. Unreadable images and names that do not parse are skipped, counted and logged; a
folder that cannot make a ReID set (missing, no parsable name, one identity, one camera,
mixed layouts) is a :class:`FolderLayoutError` naming the folder and the expected layout.
"""
from __future__ import annotations

import logging
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from torchreid_privacy import bridge
from torchreid_privacy.utils.images import UNREADABLE_IMAGE

log = logging.getLogger(__name__)

PREFIX = "folder:"
MARKET_DIRS = ("bounding_box_train", "query", "bounding_box_test")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
_MARKET_NAME = re.compile(r"^(-?\d+)_c(\d+)")
_CAMERA_WORD = re.compile(r"^(?:c|cam|camera)?(\d+)$", re.IGNORECASE)
LAYOUTS = ("Market-1501 (bounding_box_train/, query/, bounding_box_test/ with <pid>_c<cam>_*.jpg) or one "
           "subfolder per identity (<pid>/<cam>_<anything>.jpg)")

Item = Tuple[str, int, int]  # (img_path, pid, camid), as torchreid's datasets hold them


class FolderLayoutError(ValueError):
    """A folder that cannot be read as a ReID set; the message names it and the expected layout."""


def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _readable(path: Path) -> bool:
    """Whether PIL recognises the file's header (cheap: the pixels are not decoded); a decompression
    bomb (more pixels than PIL decodes: ``DecompressionBombError``) is unreadable too."""
    try:
        with Image.open(path) as img:
            return img.size[0] > 0 and img.size[1] > 0
    except UNREADABLE_IMAGE as exc:
        log.debug("folder: unreadable image %s: %s", path, exc)
        return False


class _Skips:
    """Skipped files of one folder, counted by reason and logged once."""

    def __init__(self) -> None:
        self.by_reason: Dict[str, List[str]] = defaultdict(list)

    def add(self, reason: str, path: Path) -> None:
        self.by_reason[reason].append(str(path))

    def log(self, root: Path) -> None:
        for reason, paths in self.by_reason.items():
            more = f", ... ({len(paths) - 5} more)" if len(paths) > 5 else ""
            log.warning("folder:%s: skipped %d %s (first: %s%s)", root, len(paths), reason, ", ".join(paths[:5]), more)

    @property
    def total(self) -> int:
        return sum(len(v) for v in self.by_reason.values())


def find_layout(root: Path) -> Tuple[str, Path]:
    """``("market", folder holding the three splits)`` or ``("identity", root)``."""
    if not root.is_dir():
        raise FolderLayoutError(f"folder:{root}: no such folder (expected {LAYOUTS})")
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for base in [root] + (subdirs if len(subdirs) == 1 else []):
        present = [d for d in MARKET_DIRS if (base / d).is_dir()]
        if not present:
            continue
        if len(present) < len(MARKET_DIRS):
            missing = ", ".join(d for d in MARKET_DIRS if d not in present)
            raise FolderLayoutError(f"folder:{base}: has {', '.join(present)} but not {missing} (expected {LAYOUTS})")
        others = [p.name for p in subdirs if base == root and p.name not in MARKET_DIRS and _images(p)]
        if others or (base == root and _images(root)):
            what = f"identity folders ({others[0]}, ...)" if others else "images at its top level"
            raise FolderLayoutError(f"folder:{root}: mixed layouts: Market-1501 split folders and {what} "
                                    f"(expected {LAYOUTS})")
        return "market", base
    if _images(root):
        raise FolderLayoutError(f"folder:{root}: images at the top level and no identity subfolders "
                                f"(expected {LAYOUTS})")
    if not subdirs:
        raise FolderLayoutError(f"folder:{root}: is empty (expected {LAYOUTS})")
    return "identity", root


def read_market_split(folder: Path, skips: _Skips) -> List[Item]:
    """``(path, pid, camid)`` of one Market-1501 split folder; camid 0-based, junk (-1) ignored."""
    items = []
    for path in _images(folder):
        match = _MARKET_NAME.match(path.name)
        if match is None:
            skips.add("file(s) whose name is not <pid>_c<cam>...", path)
        elif not _readable(path):
            skips.add("unreadable image(s)", path)
        elif int(match.group(1)) != -1:
            items.append((str(path), int(match.group(1)), int(match.group(2)) - 1))
    return items


def _word_ids(words: Iterable[str]) -> Dict[str, int]:
    """Sorted words -> 0..n-1; numerically when every word is a number (``2`` before ``10``)."""
    unique = sorted(set(words))
    if all(w.isascii() and w.isdigit() for w in unique):  # '\u00b2' is a digit to str.isdigit, not to int()
        unique.sort(key=int)
    return {w: i for i, w in enumerate(unique)}


def _camera_word(name: str) -> Optional[str]:
    market = _MARKET_NAME.match(name)
    if market:  # Market-named crops sorted into identity folders keep their camera
        return market.group(2).lstrip("0") or "0"
    head = name.split("_", 1)[0] if "_" in name else None
    if not head:
        return None
    match = _CAMERA_WORD.match(head)
    return match.group(1).lstrip("0") or "0" if match else head


def read_identity_folders(root: Path, skips: _Skips) -> List[Item]:
    """``(path, pid, camid)`` of ``<root>/<pid>/<cam>_*.jpg``; pids and cameras numbered in sorted order."""
    raw = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in _images(folder):
            cam = _camera_word(path.stem)
            if cam is None:
                skips.add("file(s) whose name is not <cam>_<anything>", path)
            elif not _readable(path):
                skips.add("unreadable image(s)", path)
            else:
                raw.append((str(path), folder.name, cam))
    pids, cams = _word_ids(r[1] for r in raw), _word_ids(r[2] for r in raw)
    return [(path, pids[pid], cams[cam]) for path, pid, cam in raw]


def split_identity_items(items: Sequence[Item], test_ratio: float, seed: int) -> Dict[str, List[Item]]:
    """Train / query / gallery of an identity-folder set: identities disjoint, queries one per camera."""
    by_pid: Dict[int, List[Item]] = defaultdict(list)
    for it in items:
        by_pid[it[1]].append(it)
    eligible = sorted(pid for pid, its in by_pid.items() if len({c for _, _, c in its}) >= 2)
    n_test = int(round(test_ratio * len(by_pid)))
    n_test = min(max(n_test, 1), len(eligible), len(by_pid) - 1)
    rng = np.random.default_rng(seed)
    test = set(rng.choice(eligible, size=n_test, replace=False).tolist()) if n_test > 0 else set()
    out: Dict[str, List[Item]] = {"train": [], "query": [], "gallery": []}
    for pid in sorted(by_pid):
        its = by_pid[pid]
        if pid not in test:
            out["train"] += its
            continue
        per_cam: Dict[int, List[Item]] = defaultdict(list)
        for it in its:
            per_cam[it[2]].append(it)
        queries = {per_cam[c][int(rng.integers(len(per_cam[c])))] for c in sorted(per_cam)}
        out["query"] += [it for it in its if it in queries]
        out["gallery"] += [it for it in its if it not in queries]
    return out


def relabel(items: Sequence[Item]) -> List[Item]:
    labels = {pid: i for i, pid in enumerate(sorted({pid for _, pid, _ in items}))}
    return [(path, labels[pid], cam) for path, pid, cam in items]


def _check(root: Path, parts: Dict[str, List[Item]]) -> None:
    """A set torchreid can train and score: >= 2 train identities, queries matched on another camera."""
    everything = [it for v in parts.values() for it in v]
    if not everything:
        raise FolderLayoutError(f"folder:{root}: no image with a parsable name (expected {LAYOUTS})")
    if len({pid for _, pid, _ in everything}) < 2:
        raise FolderLayoutError(f"folder:{root}: one identity only; a ReID set needs several (expected {LAYOUTS})")
    if len({cam for _, _, cam in everything}) < 2:
        raise FolderLayoutError(f"folder:{root}: one camera only; a query is matched on another camera "
                                f"(expected {LAYOUTS})")
    if len({pid for _, pid, _ in parts["train"]}) < 2:
        raise FolderLayoutError(f"folder:{root}: fewer than 2 training identities")
    if not parts["query"] or not parts["gallery"]:
        raise FolderLayoutError(f"folder:{root}: empty query or gallery (no identity is seen by 2 cameras)")


def read_folder(root: str | os.PathLike, test_ratio: float = 0.5, split_seed: int = 0) -> Dict[str, List[Item]]:
    """``{"train", "query", "gallery"}`` items of a folder in either layout (train relabelled 0..n-1)."""
    if not 0.0 < test_ratio < 1.0:
        raise ValueError(f"test_ratio: must be in (0, 1), got {test_ratio}")
    root = Path(root)
    layout, base = find_layout(root)
    skips = _Skips()
    if layout == "market":
        parts = {"train": read_market_split(base / "bounding_box_train", skips),
                 "query": read_market_split(base / "query", skips),
                 "gallery": read_market_split(base / "bounding_box_test", skips)}
    else:
        parts = split_identity_items(read_identity_folders(root, skips), test_ratio, split_seed)
    skips.log(root)
    _check(root, parts)
    parts["train"] = relabel(parts["train"])
    return parts


class FolderDataset(bridge.ImageDataset):
    """Base of the ``folder:PATH`` datasets (:func:`register_folder_dataset` binds the path)."""

    _junk_pids = [0, -1]  # Market-1501's distractor and junk labels
    folder = ""
    test_ratio = 0.5
    split_seed = 0

    def __init__(self, root: str = "", **kwargs) -> None:
        if not self.folder:
            raise TypeError("FolderDataset is abstract; use register_folder_dataset(name, folder)")
        self.root = self.dataset_dir = self.folder  # data.root is not used: the name holds the path
        parts = read_folder(self.folder, self.test_ratio, self.split_seed)
        super().__init__(parts["train"], parts["query"], parts["gallery"], **kwargs)


def folder_path(name: str) -> Path:
    """The absolute folder of a ``folder:PATH`` name."""
    text = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not text:
        raise FolderLayoutError(f"{name}: expected folder:PATH")
    return Path(os.path.abspath(os.path.expanduser(text)))


def register_folder_dataset(name: str, folder: str | os.PathLike, test_ratio: float = 0.5,
                            split_seed: int = 0) -> type:
    """Register torchreid dataset ``name`` reading ``folder`` (either layout); idempotent."""
    path = os.path.abspath(os.path.expanduser(os.fspath(folder)))
    attrs = {"folder": path, "test_ratio": float(test_ratio), "split_seed": int(split_seed),
             "__module__": __name__, "__doc__": f"The crops under {path} (torchreid_privacy.data.folder)."}
    cls = type("Folder", (FolderDataset,), attrs)
    # the qualname carries the parameters: bridge treats equal (module, qualname) as the same class
    cls.__qualname__ = f"Folder[{path},test_ratio={test_ratio},split_seed={split_seed}]"
    bridge.register_dataset(name, cls)
    return cls


def register_folder_names(names: Iterable[str], key: str = "data.sources") -> List[str]:
    """Register every ``folder:PATH`` among ``names`` (a config's sources/targets); the others pass."""
    done = []
    for name in names:
        if isinstance(name, str) and name.startswith(PREFIX):
            path = folder_path(name)
            if not path.is_dir():
                raise FolderLayoutError(f"{key}: {name}: no such folder {path} (expected {LAYOUTS})")
            register_folder_dataset(name, path)
            done.append(name)
    return done
