"""Pre-flight checks around torchreid's datamanager: clear errors before any training step.

Why: torchreid meets bad data late and obscurely. Its ``read_image`` retries an unreadable
image forever ("Will redo. Don't worry. Just chill."), so one truncated JPEG hangs training
mid-epoch; a file name off the dataset's pattern crashes its loader with ``AttributeError:
'NoneType' object has no attribute 'groups'``; too few identities for the identity sampler
is a bare ``assert``; a wrong ``data.root`` starts a download of Market-1501 into it.

:func:`checked_datamanager` wraps the datamanager's construction: it checks ``data.root``
and the desensitizer parameters first, turns those torchreid failures into one-line
``ValueError``\\ s naming the file or the setting, then decodes every image once (in
threads) and checks that no split is empty. Unreadable images are an error, not a skip:
dropping query or gallery images would silently change the evaluation protocol.
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, TypeVar

from PIL import Image

from torchreid_privacy import bridge

log = logging.getLogger(__name__)

T = TypeVar("T")
SELF_MADE_PREFIX = "synthetic_market"  # datasets generated under data.root on first use


def check_root(cfg: Any) -> None:
    """``data.root`` must exist unless every dataset is generated on first use."""
    names = list(dict.fromkeys([*cfg.data.sources, *cfg.data.targets]))
    # synthetic sets are generated under data.root; folder:PATH names carry their own path
    needs = [n for n in names if not n.startswith((SELF_MADE_PREFIX, "folder:"))]
    if needs and not os.path.isdir(os.path.expanduser(cfg.data.root)):
        raise ValueError(f"data.root: no such folder: {cfg.data.root} (needed by {', '.join(needs)})")


def check_desensitizer(cfg: Any) -> None:
    """Name and parameters of ``privacy.desensitizer``, before anything is built."""
    from torchreid_privacy.desensitize import resolve_desensitizer

    d = cfg.privacy.desensitizer
    try:
        resolve_desensitizer(d.name, dict(d.params))
    except KeyError as exc:
        raise ValueError(f"privacy.desensitizer.name: {exc.args[0] if exc.args else exc}") from None
    except (ValueError, TypeError) as exc:
        raise ValueError(f"privacy.desensitizer.params: {exc}") from None


@contextmanager
def torchreid_data_errors(cfg: Optional[Any] = None) -> Iterator[None]:
    """Re-raise torchreid's dataset/sampler crashes as one-line ``ValueError``\\ s (see module doc)."""
    try:
        yield
    except (AttributeError, AssertionError, IndexError, RuntimeError) as exc:
        message = explain(exc, cfg)
        if message is None:
            raise
        raise ValueError(message) from exc


def explain(exc: BaseException, cfg: Optional[Any] = None) -> Optional[str]:
    """A one-line explanation of a known torchreid data failure, or None for anything else."""
    func, local = bridge.failure_context(exc)
    owner = type(local.get("self")).__name__ if "self" in local else ""
    if isinstance(exc, (AttributeError, AssertionError)) and "img_path" in local:
        pattern = getattr(local.get("pattern"), "pattern", None)
        rule = f" (pattern {pattern})" if pattern else ""
        return (f"data: {local['img_path']}: file name does not follow the {owner or 'dataset'} naming scheme"
                f"{rule}; rename or remove the file")
    if isinstance(exc, AssertionError) and owner == "RandomIdentitySampler":
        sampler = local["self"]
        have, need = len(getattr(sampler, "pids", [])), getattr(sampler, "num_pids_per_batch", "?")
        setting = ""
        if cfg is not None:
            setting = (f" (train.batch_size {cfg.train.batch_size} / sampler.num_instances "
                       f"{cfg.sampler.num_instances})")
            if cfg.privacy.enabled and cfg.privacy.val_ratio > 0:
                setting += f"; privacy.val_ratio {cfg.privacy.val_ratio} holds identities out for validation"
        return (f"data: the training split has {have} identit{'y' if have == 1 else 'ies'}, fewer than the "
                f"{need} one batch needs"
                f"{setting}; use a smaller batch or more training identities")
    if isinstance(exc, IndexError) and func == "__init__" and {"train", "query", "gallery"} <= set(local):
        empty = [k for k in ("train", "query", "gallery") if not local[k]]
        if empty:
            return (f"data: the {' and '.join(empty)} split of {owner or 'the dataset'} is empty; check "
                    f"data.root and the dataset folder")
    if isinstance(exc, RuntimeError) and func == "check_before_run":
        root = f" (data.root {cfg.data.root})" if cfg is not None else ""
        return f"data: {exc}{root}; is the dataset laid out as torchreid expects?"
    return None


def _unreadable(path: str) -> Optional[str]:
    """Why ``path`` cannot be decoded, or None. JPEGs decode at 1/8 scale (fast, still complete)."""
    try:
        with Image.open(path) as im:
            im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as exc:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def scan_images(paths: Sequence[str], workers: Optional[int] = None) -> List[Tuple[str, str]]:
    """(path, reason) for every image that cannot be decoded (PIL decodes outside the GIL)."""
    unique = sorted(set(paths))
    workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        reasons = list(pool.map(_unreadable, unique, chunksize=64))
    return [(p, r) for p, r in zip(unique, reasons) if r is not None]


def _items(dataset: Any) -> List[Any]:
    """Items of a torchreid dataset, or the item list itself (``dm.test_dataset`` holds lists)."""
    if isinstance(dataset, (list, tuple)):
        return list(dataset)
    return list(getattr(dataset, "data", None) or [])


def check_datamanager(dm: Any) -> None:
    """Every split non-empty and every image decodable; errors name the split or the file."""
    splits: Dict[str, List[Any]] = {"train": _items(dm.train_loader.dataset)}
    for target, parts in dm.test_dataset.items():
        for split, dataset in parts.items():
            splits[f"{target} {split}"] = _items(dataset)
    for name, items in splits.items():
        if not items:
            raise ValueError(f"data: the {name} split is empty; check data.sources/data.targets and the "
                             f"dataset folder")
    if len(dm.train_loader) == 0:
        raise ValueError(f"data: the training split ({len(splits['train'])} images) gives no full batch of "
                         f"train.batch_size; use a smaller batch or more training images")
    paths = [p for items in splits.values() for item in items
             for p in (item[0] if isinstance(item[0], (list, tuple)) else [item[0]])]
    t0 = time.time()
    bad = scan_images(paths)
    log.info("checked %d images in %.1fs", len(set(paths)), time.time() - t0)
    if bad:
        path, reason = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(f"data: unreadable image {path}: {reason}{more}; remove or replace it "
                         f"(torchreid would retry it forever)")


def checked_datamanager(cfg: Any, build: Callable[[], T]) -> T:
    """``build()`` the datamanager with every check above around it."""
    check_root(cfg)
    if cfg.privacy.enabled:
        check_desensitizer(cfg)
    with torchreid_data_errors(cfg):
        dm = build()
    check_datamanager(dm)
    return dm
