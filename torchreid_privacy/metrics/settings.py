"""Evaluation of a privacy-preserving ReID run: the four query/gallery settings and image metrics.

O = raw images, P = protected (anonymized, or desensitized in baseline mode). Retrieval is
scored for query->gallery in the four settings O->O, O->P, P->O, P->P with L2-normalized
features, Euclidean distance and torchreid's Market-1501 protocol
(:func:`evaluate_rank`). Image quality is PSNR / SSIM on [0, 1] images
(:func:`image_metrics`, :class:`ImageMetricAccumulator` for batch-by-batch loaders).

Example::

    feats = {"query": {"O": qf_o, "P": qf_p}, "gallery": {"O": gf_o, "P": gf_p}}
    scores = evaluate_settings(feats, q_pids=q_pids, g_pids=g_pids, q_camids=q_camids, g_camids=g_camids)
    scores["O->P"]["R1"], scores["P->P"]["mAP"]
"""
from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from torchreid_privacy.metrics.image import ImageMetricAccumulator, gaussian_taps, image_metrics, mse_per_image, psnr, ssim
from torchreid_privacy.metrics.rank import ArrayLike, evaluate_rank, evaluate_rank_blocks

__all__ = [
    "SETTINGS", "evaluate_rank", "evaluate_rank_blocks", "evaluate_settings", "feature_distance", "privacy_rank1",
    "psnr", "ssim", "mse_per_image", "gaussian_taps", "image_metrics", "ImageMetricAccumulator",
]

SETTINGS: Tuple[str, ...] = ("O->O", "O->P", "P->O", "P->P")
# bytes one block of queries may take while it is ranked (distances, sort order, gathered pids,
# match mask: about 20 bytes per query x gallery pair); evaluation holds two blocks at a time
BLOCK_BYTES = 256 * 2**20
BYTES_PER_PAIR = 20


def _as_features(x: ArrayLike, name: str) -> torch.Tensor:
    t = torch.as_tensor(x)
    if t.dim() != 2:
        raise ValueError(f"{name}: expected (num_samples, dim) features, got shape {tuple(t.shape)}")
    return t.float()


def feature_distance(qf: ArrayLike, gf: ArrayLike) -> np.ndarray:
    """Squared Euclidean distance of L2-normalized features, ``2 - 2 q.g`` clamped at 0.

    Squared (as torchreid's ``compute_distance_matrix('euclidean')``): ranking is the same as
    with the square root, one pass cheaper. Runs on the features' device.
    """
    q = F.normalize(_as_features(qf, "qf"), dim=1)
    g = F.normalize(_as_features(gf, "gf"), dim=1)
    if q.shape[1] != g.shape[1]:
        raise ValueError(f"gf: feature dim {g.shape[1]} differs from the query's {q.shape[1]}")
    return normalized_distance(q, g)


def normalized_distance(q: torch.Tensor, g: torch.Tensor) -> np.ndarray:
    """:func:`feature_distance` of features already L2-normalized (no copy of the gallery per block)."""
    return (2.0 - 2.0 * (q @ g.t())).clamp_(min=0.0).cpu().numpy()


def streamed_chunk(num_gallery: int, chunk_size: int = 256) -> int:
    """Queries per block so that one block stays within :data:`BLOCK_BYTES`."""
    return max(1, min(int(chunk_size), BLOCK_BYTES // max(1, BYTES_PER_PAIR * int(num_gallery))))


def _parse_setting(setting: str) -> Tuple[str, str]:
    parts = setting.split("->")
    if len(parts) != 2 or not all(parts):
        raise ValueError(f"settings: expected 'QUERY->GALLERY' such as 'O->P', got {setting!r}")
    return parts[0], parts[1]


def evaluate_settings(features: Mapping[str, Mapping[str, ArrayLike]], *, q_pids: ArrayLike, g_pids: ArrayLike,
                      q_camids: ArrayLike, g_camids: ArrayLike, settings: Sequence[str] = SETTINGS,
                      ranks: Sequence[int] = (1, 5, 10), chunk_size: int = 256,
                      shard_queries: bool = False,
                      hits: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, Dict[str, float]]:
    """Rank-k, mAP and mINP (fractions in [0, 1]) for each ``"QUERY->GALLERY"`` setting.

    Args:
        features: ``{"query": {"O": qf_o, "P": qf_p}, "gallery": {"O": gf_o, "P": gf_p}}``;
            only the image kinds named by ``settings`` are needed.
        q_pids, g_pids, q_camids, g_camids: identities and cameras (keyword-only, so the four
            same-typed arrays cannot be swapped silently).
        settings: e.g. ``("O->O", "O->P", "P->O", "P->P")``.
        ranks: CMC ranks reported as ``"R{k}"``; a rank beyond the gallery size reports the
            last CMC value (1.0 for every query that has a match).
        chunk_size: the most queries ranked at once. The distance matrix is never built whole:
            each block of queries gets its distances when it is ranked, and blocks are made
            smaller for large galleries (:func:`streamed_chunk`), so memory stays at about
            ``2 x BLOCK_BYTES`` above the features at any size.
        shard_queries: under torchrun, every rank calls this with the same features and ranks
            1/N of the query blocks (:func:`~torchreid_privacy.metrics.rank.evaluate_rank_blocks`);
            all ranks return the same scores.
        hits: a dict to fill with each setting's rank-1 hit per query (uint8, query order, queries
            without a true match left out): what a paired bootstrap over queries resamples.

    Returns:
        ``{"O->P": {"R1": .., "R5": .., "R10": .., "mAP": .., "mINP": ..}, ...}``
    """
    for side in ("query", "gallery"):
        if side not in features or not isinstance(features[side], Mapping):
            raise ValueError(f"features: missing the '{side}' mapping of image kind -> features")
    if not ranks or min(ranks) < 1:
        raise ValueError(f"ranks: expected positive ranks, got {tuple(ranks)}")
    normalized: Dict[Tuple[str, str], torch.Tensor] = {}

    def normalized_features(side: str, kind: str) -> torch.Tensor:
        if kind not in features[side]:
            raise ValueError(f"features: no '{kind}' features under '{side}' "
                             f"(have {sorted(features[side])})")
        if (side, kind) not in normalized:
            normalized[side, kind] = F.normalize(_as_features(features[side][kind], f"features[{side}][{kind}]"), dim=1)
        return normalized[side, kind]

    results: Dict[str, Dict[str, float]] = {}
    for setting in settings:
        q_kind, g_kind = _parse_setting(setting)
        q, g = normalized_features("query", q_kind), normalized_features("gallery", g_kind)
        if q.shape[1] != g.shape[1]:
            raise ValueError(f"features[gallery][{g_kind}]: feature dim {g.shape[1]} differs from the "
                             f"query's {q.shape[1]}")
        cmc, m_ap, m_inp, first = evaluate_rank_blocks(
            lambda start, stop: normalized_distance(q[start:stop], g), (len(q), len(g)), q_pids, g_pids, q_camids,
            g_camids, max_rank=max(ranks), chunk_size=streamed_chunk(len(g), chunk_size),
            shard_queries=shard_queries, return_first=True)
        if hits is not None:
            hits[setting] = (first == 0).astype(np.uint8)
        scores = {f"R{k}": float(cmc[min(k, len(cmc)) - 1]) for k in ranks}
        scores.update(mAP=m_ap, mINP=m_inp)
        results[setting] = scores
    return results


def privacy_rank1(features: Mapping[str, Mapping[str, ArrayLike]], *, q_pids: ArrayLike, g_pids: ArrayLike,
                  q_camids: ArrayLike, g_camids: ArrayLike) -> float:
    """Rank-1 of a third party's model (trained on raw images) querying raw images against a
    protected gallery: the O->P rank-1 of *its* features. Lower means better protection."""
    return evaluate_settings(features, q_pids=q_pids, g_pids=g_pids, q_camids=q_camids, g_camids=g_camids,
                             settings=("O->P",), ranks=(1,))["O->P"]["R1"]
