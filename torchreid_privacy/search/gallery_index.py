"""A faiss index over a gallery's features, for ``search --index`` on large galleries.

Why faiss: it is the vector index ReID deployments use, and a million-image gallery is past what
ranking every query against every feature in memory does well. Features are L2-normalized, so
the squared Euclidean distance the evaluation ranks by is ``2 - 2 q.g`` and inner-product
search finds the same neighbours:

- ``flat``: exact inner-product search (``IndexFlatIP``); its candidates are re-ranked with the
  evaluation's own distances, so the rank lists equal the brute-force ones (``top_k``) wherever
  two distances are not tied within float32 rounding;
- ``ivf``: an inverted file (``IndexIVFFlat``, ``nlist`` about 4 sqrt(n) cells, ``nprobe`` of them
  searched), approximate, for large galleries;
- ``ivfpq``: the same cells with product-quantized codes (``m`` sub-vectors of 8 bits), for
  galleries whose features do not fit in memory as float32;
- ``hnsw``: a graph (``IndexHNSWFlat``: ``M`` links per vector, ``efConstruction`` candidates while
  linking, ``efSearch`` while searching), approximate, the fastest at high recall; it holds a copy
  of the features plus ``2 M`` links per vector, and its build is the slowest (see ``bench scale``).

Every kind's candidates (``candidates``, at least the ``k`` asked for) are re-ranked with the
evaluation's distances of the full features, so an approximate index's lists are exact distances in
exact order, of what it found.

The index is saved beside the feature cache (``INDEX_DIR``) with the digest of the features it
was built from and rebuilt only when they change; a file that cannot be read, metadata that is not
what ``open_or_build`` writes, or an index of another faiss type or metric than its name promises
(an ``ivf`` index copied over ``flat.faiss`` would hand out approximate lists as exact ones) is an
error naming the file, to delete so that the index is rebuilt. Nothing is written through a
symbolic link (``atomic.safe_child``).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from torchreid_privacy.search.index_defaults import HNSW_EF_CONSTRUCTION, HNSW_EF_SEARCH, HNSW_M, INDEX_KINDS, NPROBE
from torchreid_privacy.utils import atomic

__all__ = ["INDEX_KINDS", "HNSW_M", "HNSW_EF_CONSTRUCTION", "HNSW_EF_SEARCH", "NPROBE", "IndexOptions", "GalleryIndex",
           "build", "open_or_build", "search_top_k", "recall_at_k", "index_summary", "normalized", "import_faiss"]

log = logging.getLogger(__name__)

INDEX_DIR = "index"
TRAIN_POINTS_PER_CELL = 64
FORMAT = 1


@dataclass(frozen=True)
class IndexOptions:
    """How an index is built (``nlist``, ``pq_m``, ``hnsw_m``, ``ef_construction``: 0 = the default, or the
    saved index's) and searched (``nprobe``, ``ef_search``, ``candidates`` re-ranked: 0 = ``k``)."""

    nlist: int = 0
    pq_m: int = 0
    hnsw_m: int = 0
    ef_construction: int = 0
    nprobe: int = NPROBE
    ef_search: int = HNSW_EF_SEARCH
    candidates: int = 0

    def check(self) -> "IndexOptions":
        """Itself, or a ValueError naming the flag of the first bad value."""
        for name, least in (("nlist", 0), ("pq_m", 0), ("hnsw_m", 0), ("ef_construction", 0), ("nprobe", 1),
                            ("ef_search", 1), ("candidates", 0)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
                flag = "--" + {"hnsw_m": "hnsw-m"}.get(name, name.replace("_", "-"))
                raise ValueError(f"{flag}: expected an integer >= {least}, got {value!r}")
        if 0 < self.hnsw_m < 2:
            raise ValueError(f"--hnsw-m: expected >= 2 links per vector, got {self.hnsw_m}")
        return self


def import_faiss():
    try:
        import faiss
    except ImportError as exc:  # an optional extra
        raise ValueError("--index: needs faiss (pip install 'torchreid-privacy[index]', i.e. faiss-cpu)") from exc
    return faiss


def normalized(features: torch.Tensor | np.ndarray) -> np.ndarray:
    """float32, C-contiguous, L2-normalized rows: what faiss takes and the evaluation ranks."""
    t = torch.as_tensor(features).float()
    return np.ascontiguousarray(F.normalize(t, dim=1).numpy(), dtype=np.float32)


def features_digest(names: Sequence[str], features: np.ndarray) -> str:
    """Which gallery an index was built for: its names, in order, and its features' bytes."""
    h = hashlib.sha256()
    for name in names:
        h.update(name.encode("utf-8", "surrogateescape") + b"\0")
    h.update(np.ascontiguousarray(features, dtype=np.float32).tobytes())
    return h.hexdigest()


def default_nlist(n: int) -> int:
    """About 4 sqrt(n) cells, with at least 39 training vectors per cell (faiss's advice)."""
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


@dataclass
class GalleryIndex:
    """A built (or loaded) index and what it was built from."""

    kind: str
    index: Any
    digest: str
    size: int
    dim: int
    nlist: int = 0
    built_s: float = 0.0
    reused: bool = False
    hnsw_m: int = 0
    ef_construction: int = 0

    def search(self, queries: np.ndarray, k: int, nprobe: int = NPROBE,
               ef_search: int = HNSW_EF_SEARCH) -> Tuple[np.ndarray, np.ndarray]:
        """(inner products, indices) of each query's ``k`` candidates; -1 where fewer exist.
        ``nprobe``: cells searched (ivf, ivfpq); ``ef_search``: the graph's search breadth (hnsw; at least k)."""
        k = int(min(k, self.size))
        if self.kind in ("ivf", "ivfpq"):
            self.index.nprobe = max(1, min(int(nprobe), self.nlist))
        elif self.kind == "hnsw":
            self.index.hnsw.efSearch = max(int(ef_search), k)
        return self.index.search(np.ascontiguousarray(queries, dtype=np.float32), k)


def build(features: np.ndarray, kind: str, digest: str, nlist: Optional[int] = None, pq_m: int = 0,
          seed: int = 0, hnsw_m: int = 0, ef_construction: int = 0) -> GalleryIndex:
    """Build a ``kind`` index over normalized ``features`` (n, d)."""
    faiss = import_faiss()
    if kind not in INDEX_KINDS:
        raise ValueError(f"--index: expected one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    n, d = features.shape
    t0 = time.perf_counter()
    links = efc = 0
    if kind == "flat":
        index, cells = faiss.IndexFlatIP(d), 0
    elif kind == "hnsw":
        links, efc, cells = int(hnsw_m or HNSW_M), int(ef_construction or HNSW_EF_CONSTRUCTION), 0
        index = faiss.IndexHNSWFlat(d, links, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = efc
    else:
        cells = int(nlist or default_nlist(n))
        quantizer = faiss.IndexFlatIP(d)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, cells, faiss.METRIC_INNER_PRODUCT)
        else:
            m = pq_m or _pq_subvectors(d)
            if d % m:
                raise ValueError(f"--pq-m: {m} does not divide the feature dimension {d}")
            index = faiss.IndexIVFPQ(quantizer, d, cells, m, 8, faiss.METRIC_INNER_PRODUCT)
        index.cp.seed = seed  # the k-means of the cells: the same index for the same features
        # k-means on at most 64 vectors per cell (faiss's default 256 makes a million-image build
        # train on every vector: minutes on 2 cores for no measurable recall)
        index.cp.max_points_per_centroid = TRAIN_POINTS_PER_CELL
        index.train(features)
    index.add(features)
    return GalleryIndex(kind, index, digest, n, d, cells, time.perf_counter() - t0, hnsw_m=links,
                        ef_construction=efc)


def _pq_subvectors(d: int) -> int:
    """The largest divisor of ``d`` up to d / 8 (8 dimensions per 8-bit code), at least 1."""
    for m in range(max(1, d // 8), 0, -1):
        if d % m == 0:
            return m
    return 1


def _paths(folder: Path, kind: str) -> Tuple[Path, Path]:
    return atomic.safe_child(folder, f"{kind}.faiss"), atomic.safe_child(folder, f"{kind}.json")


# what each kind is built as (``build``): the faiss class ``read_index`` gives back, inner-product metric
FAISS_TYPES = {"flat": "IndexFlatIP", "ivf": "IndexIVFFlat", "ivfpq": "IndexIVFPQ", "hnsw": "IndexHNSWFlat"}
META_FIELDS = {"format": int, "kind": str, "digest": str, "size": int, "dim": int, "nlist": int, "pq_m": int}
# added with hnsw: absent (an index saved before) reads as 0
OPTIONAL_META_FIELDS = {"hnsw_m": int, "ef_construction": int}


def _read_meta(meta_path: Path, kind: str) -> Dict[str, Any]:
    """``KIND.json`` as ``open_or_build`` writes it, or a ValueError naming the file."""
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError is a ValueError
        raise ValueError(f"--index: cannot read {meta_path} ({exc}); delete it to rebuild the index") from exc
    if not isinstance(meta, dict):
        why = f"holds a JSON {type(meta).__name__}, not an object"
    else:
        for k in OPTIONAL_META_FIELDS:
            meta.setdefault(k, 0)
        wrong = [k for k, t in {**META_FIELDS, **OPTIONAL_META_FIELDS}.items()
                 if not isinstance(meta.get(k), t) or isinstance(meta.get(k), bool)]
        why = (f"lacks or mistypes {', '.join(wrong)}" if wrong else
               f"describes a {meta['kind']!r} index, not {kind!r}" if meta["kind"] != kind else "")
    if why:
        raise ValueError(f"--index: {meta_path} {why}, not the description of a saved {kind} index; delete it to "
                         "rebuild the index")
    return meta


def _check_loaded(index: Any, index_path: Path, meta_path: Path, kind: str, meta: Dict[str, Any], size: int,
                  dim: int) -> None:
    """The loaded index is what ``build`` makes for ``kind`` over this gallery, or a ValueError naming the file."""
    faiss = import_faiss()
    found = type(index).__name__
    if found != FAISS_TYPES[kind] or index.metric_type != faiss.METRIC_INNER_PRODUCT:
        raise ValueError(f"--index: {index_path} holds a faiss {found} (metric {index.metric_type}), not the {kind} "
                         f"index its name promises ({FAISS_TYPES[kind]}, inner product); delete it to rebuild")
    if index.ntotal != size or index.d != dim:
        raise ValueError(f"--index: {index_path} holds {index.ntotal} x {index.d} features, not the "
                         f"gallery's {size} x {dim}; delete it to rebuild")
    if kind in ("ivf", "ivfpq") and (index.nlist != meta["nlist"] or not index.is_trained):
        raise ValueError(f"--index: {index_path} has {index.nlist} cells (trained: {index.is_trained}), "
                         f"{meta_path} says {meta['nlist']}; delete both to rebuild")
    if kind == "hnsw" and index.hnsw.nb_neighbors(1) != meta["hnsw_m"]:
        raise ValueError(f"--index: {index_path} has {index.hnsw.nb_neighbors(1)} links per vector, {meta_path} "
                         f"says {meta['hnsw_m']}; delete both to rebuild")


def open_or_build(folder: Optional[Path], names: Sequence[str], features: np.ndarray, kind: str,
                  nlist: Optional[int] = None, pq_m: int = 0, hnsw_m: int = 0,
                  ef_construction: int = 0) -> GalleryIndex:
    """The saved index of these features, or a new one (saved when ``folder`` is given). A build
    option left at 0 takes the saved index's value (else the default); one that differs rebuilds."""
    faiss = import_faiss()
    digest = features_digest(names, features)
    if folder is not None:
        index_path, meta_path = _paths(folder, kind)
        if meta_path.exists() and index_path.exists():
            meta = _read_meta(meta_path, kind)
            wanted = {"format": FORMAT, "digest": digest, "nlist": int(nlist or meta["nlist"]),
                      "pq_m": int(pq_m or meta["pq_m"]), "size": len(names), "dim": int(features.shape[1]),
                      "hnsw_m": int(hnsw_m or meta["hnsw_m"]),
                      "ef_construction": int(ef_construction or meta["ef_construction"])}
            if all(meta.get(key) == value for key, value in wanted.items()):
                try:
                    index = faiss.read_index(str(index_path))
                except RuntimeError as exc:
                    raise ValueError(f"--index: cannot read {index_path} ({str(exc).splitlines()[0]}); delete it "
                                     "to rebuild the index") from exc
                _check_loaded(index, index_path, meta_path, kind, meta, len(names), features.shape[1])
                return GalleryIndex(kind, index, digest, len(names), features.shape[1], meta["nlist"], reused=True,
                                    hnsw_m=meta["hnsw_m"], ef_construction=meta["ef_construction"])
            log.info("search: the gallery's features (or the index options) changed since %s was built; "
                     "rebuilding it", index_path)
    built = build(features, kind, digest, nlist=nlist, pq_m=pq_m, hnsw_m=hnsw_m, ef_construction=ef_construction)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        index_path, meta_path = _paths(folder, kind)  # checked again: no link planted meanwhile
        atomic.write_bytes(index_path, faiss.serialize_index(built.index).tobytes())
        atomic.write_json(meta_path, {"format": FORMAT, "kind": kind, "digest": digest, "size": built.size,
                                      "dim": built.dim, "nlist": built.nlist, "pq_m": int(pq_m),
                                      "hnsw_m": built.hnsw_m, "ef_construction": built.ef_construction,
                                      "built_s": round(built.built_s, 3)})
    return built


def search_top_k(index: GalleryIndex, qf: torch.Tensor, gf: torch.Tensor, k: int, nprobe: int = NPROBE,
                 ids: Optional[Sequence[np.ndarray]] = None, block: int = 1024, ef_search: int = HNSW_EF_SEARCH,
                 candidates: int = 0) -> Tuple[np.ndarray, np.ndarray]:
    """``top_k_features``'s result from the index: each query's ``k`` nearest, ascending.

    With ``ids`` (q_pids, g_pids, q_camids, g_camids) the protocol's same-identity same-camera
    gallery images are dropped: the index proposes ``k`` plus as many candidates as a query has
    such images, or ``candidates`` if that is more. Candidates are re-ranked with the evaluation's
    distances (2 - 2 q.g, batched per block), so ``flat`` gives the brute-force lists and the
    approximate kinds the brute-force order of what they found.
    """
    q = normalized(qf)
    gt = torch.as_tensor(gf).float()
    extra = np.zeros(len(q), dtype=np.int64)
    if ids is not None:
        q_pids, g_pids, q_camids, g_camids = (np.asarray(a) for a in ids)
        pairs, counts = np.unique(np.stack([g_pids, g_camids], 1), axis=0, return_counts=True)
        lookup = {(int(p), int(c)): int(n) for (p, c), n in zip(pairs, counts)}
        extra = np.array([lookup.get((int(p), int(c)), 0) for p, c in zip(q_pids, q_camids)], dtype=np.int64)
    qn, gn = torch.from_numpy(q), F.normalize(gt, dim=1)
    out_idx, out_val = [], []
    for start in range(0, len(q), block):
        stop = min(start + block, len(q))
        want = min(max(int(k) + int(extra[start:stop].max()), int(candidates)), index.size)
        _, cand = index.search(q[start:stop], want, nprobe, ef_search)
        cand = torch.from_numpy(np.sort(cand, axis=1))  # gallery order (-1 first), so ties break as top_k's
        found = cand >= 0
        safe = cand.clamp(min=0)
        # the evaluation's distance, 2 - 2 q.g of normalized features, for every candidate at once
        d = (2.0 - 2.0 * torch.einsum("bd,bkd->bk", qn[start:stop], gn[safe])).clamp_(min=0.0)
        drop = ~found
        if ids is not None:
            drop |= torch.from_numpy((g_pids[safe.numpy()] == q_pids[start:stop, None])
                                     & (g_camids[safe.numpy()] == q_camids[start:stop, None]))
        d = d.masked_fill(drop, float("inf"))
        vals, order = d.sort(dim=1, stable=True)  # ascending, ties in gallery order
        idx = cand.gather(1, order)[:, :k]
        vals = vals[:, :k]
        idx = torch.where(torch.isinf(vals), torch.full_like(idx, -1), idx)
        pad = k - idx.shape[1]  # fewer candidates than k: padded like top_k
        if pad > 0:
            idx = F.pad(idx, (0, pad), value=-1)
            vals = F.pad(vals, (0, pad), value=float("inf"))
        out_idx.append(idx.numpy())
        out_val.append(vals.numpy())
    return np.concatenate(out_idx), np.concatenate(out_val)


def recall_at_k(approx: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each query's exact top-k found in the approximate top-k."""
    hits = [len(set(a[a >= 0]) & set(e[e >= 0])) / max(1, int((e >= 0).sum())) for a, e in zip(approx, exact)]
    return float(np.mean(hits)) if hits else 0.0


def index_summary(index: GalleryIndex, nprobe: int, ef_search: int = HNSW_EF_SEARCH,
                  candidates: int = 0) -> Dict[str, Any]:
    """What ``search`` reports (ranks.json's ``index``) about the index it ranked through."""
    out = {"kind": index.kind, "size": index.size, "dim": index.dim, "nlist": index.nlist,
           "nprobe": (min(nprobe, index.nlist) if index.kind in ("ivf", "ivfpq") else None), "reused": index.reused,
           "built_s": round(index.built_s, 3), "candidates": int(candidates)}
    if index.kind == "hnsw":
        out.update(hnsw_m=index.hnsw_m, ef_construction=index.ef_construction, ef_search=int(ef_search))
    return out
