"""Identity-disjoint validation split of a ReID training set.

Why: the progressive supervision upgrade and model selection must never look at the test
split, so they evaluate on identities held out of the training set. Identities go 80/20 to
train/val (``GroupShuffleSplit``, groups = pids); each val identity's images then go ~80/20
to val-gallery/val-query, choosing queries that keep a gallery match on another camera so
that the Market-1501 protocol (same pid and same camera removed) leaves every query scorable.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
from sklearn.model_selection import GroupShuffleSplit

from torchreid_privacy import bridge

Item = Tuple[str, int, int]  # (img_path, pid, camid)


def _check_ratio(name: str, value: float) -> None:
    if not isinstance(value, (int, float)) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name}: must be in (0, 1), got {value!r}")


def split_identities(pids: Sequence[int], camids: Sequence[int], val_ratio: float = 0.2,
                     query_ratio: float = 0.2, seed: int = 0) -> Dict[str, List[int]]:
    """Split image indices into ``train`` / ``val_gallery`` / ``val_query`` (sorted lists).

    ``train`` and the val lists share no identity; every val-query identity is in the
    val-gallery. A val identity gets ``round(query_ratio * n_images)`` queries (at least 1)
    when it has >= 2 images on >= 2 cameras, each query keeping a gallery image of the same
    identity on another camera; an identity seen by one camera only goes wholly to the gallery
    (a query there could never be matched under the Market-1501 protocol).
    """
    _check_ratio("val_ratio", val_ratio)
    _check_ratio("query_ratio", query_ratio)
    pids_arr = np.asarray(pids, dtype=np.int64)
    cams_arr = np.asarray(camids, dtype=np.int64)
    if pids_arr.ndim != 1 or pids_arr.shape != cams_arr.shape:
        raise ValueError(f"camids: must be a 1-D sequence as long as pids ({len(pids_arr)}), "
                         f"got shape {cams_arr.shape}")
    n_ids = len(np.unique(pids_arr))
    n_val = int(np.ceil(val_ratio * n_ids))  # what GroupShuffleSplit does with a float test_size
    if n_ids < 2 or n_val >= n_ids:
        raise ValueError(f"val_ratio: {val_ratio} leaves an empty train or val split with {n_ids} identities")
    splitter = GroupShuffleSplit(n_splits=1, test_size=val_ratio, random_state=seed)
    train_idx, val_idx = next(splitter.split(np.zeros(len(pids_arr)), groups=pids_arr))

    rng = np.random.default_rng(seed)
    by_pid: Dict[int, List[int]] = defaultdict(list)
    for i in sorted(val_idx.tolist()):
        by_pid[int(pids_arr[i])].append(i)
    query: List[int] = []
    for pid in sorted(by_pid):
        query += _pick_queries(by_pid[pid], cams_arr, query_ratio, rng)
    query_set = set(query)
    gallery = [i for i in sorted(val_idx.tolist()) if i not in query_set]
    return {"train": sorted(train_idx.tolist()), "val_gallery": gallery, "val_query": sorted(query)}


def _pick_queries(indices: List[int], camids: np.ndarray, query_ratio: float,
                  rng: np.random.Generator) -> List[int]:
    """Greedy random choice of queries that each keep an other-camera image in the gallery."""
    cams = {i: int(camids[i]) for i in indices}
    if len(indices) < 2 or len(set(cams.values())) < 2:
        return []
    want = min(len(indices) - 1, max(1, int(round(query_ratio * len(indices)))))
    chosen: List[int] = []
    for i in rng.permutation(indices).tolist():
        if len(chosen) == want:
            break
        trial = chosen + [i]
        left = [j for j in indices if j not in trial]
        if all(any(cams[j] != cams[q] for j in left) for q in trial):
            chosen = trial
    return chosen


def split_items(items: Sequence[Sequence[Any]], val_ratio: float = 0.2, query_ratio: float = 0.2,
                seed: int = 0) -> Dict[str, List[Item]]:
    """Split torchreid ``(path, pid, camid, ...)`` items; train pids relabelled to 0..n-1.

    Val-query and val-gallery keep the original pids (they are only compared to each other).
    """
    pids = [int(it[1]) for it in items]
    camids = [int(it[2]) for it in items]
    idx = split_identities(pids, camids, val_ratio=val_ratio, query_ratio=query_ratio, seed=seed)
    relabel = {pid: label for label, pid in enumerate(sorted({pids[i] for i in idx["train"]}))}

    def pick(key: str, remap: bool) -> List[Item]:
        return [(str(items[i][0]), relabel[pids[i]] if remap else pids[i], camids[i]) for i in idx[key]]

    return {"train": pick("train", True), "val_query": pick("val_query", False),
            "val_gallery": pick("val_gallery", False)}


def write_split(dataset_name: str, root: str | os.PathLike, output_json: str | os.PathLike,
                val_ratio: float = 0.2, query_ratio: float = 0.2, seed: int = 0,
                **dataset_kwargs: Any) -> Path:
    """Split the TRAIN set of torchreid dataset ``dataset_name`` and write it as JSON.

    The body of ``torchreid-privacy split``. Writes ``{"dataset", "seed", "val_ratio",
    "query_ratio", "train": [[path, pid, camid], ...], "val_query": [...], "val_gallery":
    [...]}`` atomically (temp file + link), and never overwrites an existing file. The
    package's own datasets (``synthetic_market``, ``<base>_val``) are registered by importing
    :mod:`torchreid_privacy.data`, which importing this module already does.
    """
    out = Path(output_json)
    if out.exists():
        raise FileExistsError(f"output_json: {out} already exists; refusing to overwrite it")
    _check_ratio("val_ratio", val_ratio)
    _check_ratio("query_ratio", query_ratio)
    from torchreid_privacy.data.folder import register_folder_names

    register_folder_names([dataset_name], key="--dataset")
    dataset = bridge.init_image_dataset(dataset_name, root=os.fspath(root), mode="train",
                                        verbose=False, **dataset_kwargs)
    parts = split_items(dataset.train, val_ratio=val_ratio, query_ratio=query_ratio, seed=seed)
    doc = {"dataset": dataset_name, "seed": seed, "val_ratio": val_ratio, "query_ratio": query_ratio,
           **{k: [list(it) for it in v] for k, v in parts.items()}}
    _write_new_file(out, json.dumps(doc, indent=1))
    return out


def _write_new_file(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` only if ``path`` does not exist, never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        try:
            os.link(tmp, path)  # atomic, and fails if path appeared meanwhile
        except FileExistsError:
            raise FileExistsError(f"output_json: {path} already exists; refusing to overwrite it") from None
        except OSError:  # filesystem without hard links
            if path.exists():
                raise FileExistsError(f"output_json: {path} already exists; refusing to overwrite it")
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
