"""Rank lists on the evaluation's terms: its distances, the Market-1501 protocol, the top k.

Why its own module: ``search`` (folders), ``visualize`` and the engine's TensorBoard views all show
"the k nearest gallery images" and must agree with the numbers ``test`` prints. Distances and
metrics come from :mod:`torchreid_privacy.metrics.settings` (``feature_distance``, ``evaluate_rank``);
this module only adds the listing (top k without the gallery images the protocol drops).
"""
from __future__ import annotations

import contextlib
from typing import Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from torchreid_privacy.metrics.settings import (
    evaluate_rank, evaluate_rank_blocks, feature_distance, normalized_distance, streamed_chunk)

RANKS = (1, 5, 10)


@contextlib.contextmanager
def eval_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode inside; every submodule's own mode restored after (a caller may be training it)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def distances(qf: torch.Tensor, gf: torch.Tensor) -> np.ndarray:
    """The evaluation's distances: what ``evaluate_settings`` computes (normalize, then
    :func:`feature_distance`), so ranks and metrics equal ``test``'s on the same features."""
    return feature_distance(F.normalize(qf.float(), dim=1), F.normalize(gf.float(), dim=1))


def protocol_mask(q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray, g_camids: np.ndarray) -> np.ndarray:
    """(n_q, n_g) True where the Market-1501 protocol drops the gallery image (same pid and camera)."""
    q_pids, g_pids, q_camids, g_camids = map(np.asarray, (q_pids, g_pids, q_camids, g_camids))
    return (q_pids[:, None] == g_pids[None, :]) & (q_camids[:, None] == g_camids[None, :])


def top_k(distmat: np.ndarray, k: int, exclude: Optional[np.ndarray] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Each row's ``k`` nearest gallery indices and distances, ascending (equal distances in gallery order).

    Entries in ``exclude`` are never returned; a row with fewer than ``k`` left is padded with
    index -1 and distance inf.
    """
    d = torch.from_numpy(np.ascontiguousarray(distmat, dtype=np.float32))
    if exclude is not None:
        d = d.masked_fill(torch.from_numpy(np.asarray(exclude, dtype=bool)), float("inf"))
    k = min(int(k), d.shape[1])
    vals, idx = torch.topk(d, k, dim=1, largest=False, sorted=False)  # ~5x numpy's argpartition (measured)
    idx, perm = idx.sort(dim=1)
    vals, order = vals.gather(1, perm).sort(dim=1, stable=True)  # ascending, ties in gallery order
    idx = idx.gather(1, order).numpy()
    vals = vals.numpy()
    return np.where(np.isinf(vals), -1, idx), vals


def rank_metrics(distmat: np.ndarray, q_pids: np.ndarray, g_pids: np.ndarray, q_camids: np.ndarray,
                 g_camids: np.ndarray) -> Dict[str, float]:
    """R1/R5/R10, mAP, mINP (fractions) exactly as ``evaluate_settings`` reports them."""
    cmc, m_ap, m_inp = evaluate_rank(distmat, q_pids, g_pids, q_camids, g_camids, max_rank=max(RANKS))
    out = {f"R{k}": float(cmc[min(k, len(cmc)) - 1]) for k in RANKS}
    out.update(mAP=m_ap, mINP=m_inp)
    return out


def top_k_features(qf: torch.Tensor, gf: torch.Tensor, k: int,
                   ids: Optional[Sequence[np.ndarray]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """:func:`top_k` of :func:`distances` (``ids``: the protocol's exclusion), one block of queries
    at a time, so a large gallery never needs the whole distance matrix."""
    qf, gf = qf.float(), F.normalize(gf.float(), dim=1)
    step = streamed_chunk(len(gf), 1024)
    idx, vals = [], []
    for start in range(0, len(qf), step):
        stop = min(start + step, len(qf))
        d = normalized_distance(F.normalize(qf[start:stop], dim=1), gf)
        exclude = None
        if ids is not None:
            q_pids, g_pids, q_camids, g_camids = ids
            exclude = protocol_mask(q_pids[start:stop], g_pids, q_camids[start:stop], g_camids)
        i, v = top_k(d, k, exclude)
        idx.append(i)
        vals.append(v)
    return np.concatenate(idx), np.concatenate(vals)


def rank_metrics_features(qf: torch.Tensor, gf: torch.Tensor, q_pids: np.ndarray, g_pids: np.ndarray,
                          q_camids: np.ndarray, g_camids: np.ndarray) -> Dict[str, float]:
    """:func:`rank_metrics` of :func:`distances`, streamed by blocks of queries."""
    q, g = F.normalize(qf.float(), dim=1), F.normalize(gf.float(), dim=1)
    cmc, m_ap, m_inp = evaluate_rank_blocks(lambda a, b: normalized_distance(q[a:b], g), (len(q), len(g)), q_pids,
                                            g_pids, q_camids, g_camids, max_rank=max(RANKS),
                                            chunk_size=streamed_chunk(len(g)))
    out = {f"R{k}": float(cmc[min(k, len(cmc)) - 1]) for k in RANKS}
    out.update(mAP=m_ap, mINP=m_inp)
    return out
