"""Paired bootstrap intervals for rank-1 and its ratios, over queries and seeds.

Why: on a few hundred queries one query is a fraction of a rank-1 point and seeds move a run by
several points, so "A is better than the mosaic" needs an interval, and a *paired* one: two
points scored on the same queries with the same seeds share most of their noise (easy queries
are easy for both). Each bootstrap replicate draws seeds with replacement and, independently,
queries with replacement, and scores both points on that same draw; the interval of the
difference is the 2.5th to 97.5th percentile over replicates.

Input: per seed, each setting's rank-1 hits per query (``{"O->O": [0/1...], "O->P": ...}``,
``Evaluator(per_query=True)``), in the same query order for every point and seed.
"""
from __future__ import annotations

from typing import Dict, List, Mapping, Sequence, Tuple

import numpy as np

# a metric -> (numerator setting, denominator setting or None): rank-1 or its ratio to O->O
METRIC_SETTINGS: Dict[str, Tuple[str, object]] = {
    "o_o": ("O->O", None), "o_p": ("O->P", None), "p_p": ("P->P", None),
    "o_p_rel": ("O->P", "O->O"), "p_p_rel": ("P->P", "O->O"),
}
PAIRED_METRICS = ("o_p", "p_p", "o_p_rel", "p_p_rel")
REPLICATES = 4000


def hits_matrix(runs: Sequence[Mapping[str, Sequence[int]]], setting: str) -> np.ndarray:
    """(seeds, queries) 0/1 matrix of ``setting``'s hits; every seed must have the same queries."""
    rows = [np.asarray(r[setting], dtype=np.float64) for r in runs]
    if not rows or len({len(r) for r in rows}) != 1:
        raise ValueError(f"hits[{setting}]: expected the same number of queries in every seed, got "
                         f"{[len(r) for r in rows]}")
    return np.stack(rows)


def _settings(metrics: Sequence[str]) -> List[str]:
    """The settings ``metrics`` are computed from, in a fixed order (errors name the same one)."""
    unknown = [m for m in metrics if m not in METRIC_SETTINGS]
    if unknown:
        raise ValueError(f"metrics: unknown '{unknown[0]}' ({', '.join(METRIC_SETTINGS)})")
    return list(dict.fromkeys(s for k in metrics for s in METRIC_SETTINGS[k] if s))


def _draws(seeds: int, queries: int, replicates: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """How often each seed and each query is drawn in each replicate: (B, S) and (B, Q) counts."""
    rng = np.random.default_rng(seed)
    return (rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=replicates).astype(np.float64),
            rng.multinomial(queries, np.full(queries, 1.0 / queries), size=replicates).astype(np.float64))


def _replicated(hits: Mapping[str, np.ndarray], metric: str, seed_w: np.ndarray,
                query_w: np.ndarray) -> Tuple[float, np.ndarray]:
    """(value on the data, value on every replicate) of ``metric``: pooled rank-1 or pooled ratio."""
    num, den = METRIC_SETTINGS[metric]

    def pooled(setting: str) -> Tuple[float, np.ndarray]:
        x = hits[setting]  # (S, Q)
        per_seed = query_w @ x.T  # (B, S): hits in each replicate's queries, per seed
        total = (seed_w * per_seed).sum(1) / (seed_w.sum(1) * query_w.sum(1))
        return float(x.mean()), total

    n_value, n_rep = pooled(num)
    if den is None:
        return n_value, n_rep
    d_value, d_rep = pooled(den)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (n_value / d_value if d_value else 0.0), np.where(d_rep > 0, n_rep / np.maximum(d_rep, 1e-12), 0.0)


def _ci(values: np.ndarray) -> List[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def intervals(runs: Sequence[Mapping[str, Sequence[int]]], metrics: Sequence[str] = PAIRED_METRICS,
              replicates: int = REPLICATES, seed: int = 0) -> Dict[str, Dict[str, object]]:
    """Each metric's pooled value and 95% bootstrap interval over the runs' queries and seeds."""
    hits = {s: hits_matrix(runs, s) for s in _settings(metrics)}
    shape = next(iter(hits.values())).shape
    seed_w, query_w = _draws(shape[0], shape[1], replicates, seed)
    out = {}
    for metric in metrics:
        value, reps = _replicated(hits, metric, seed_w, query_w)
        out[metric] = {"value": value, "ci95": _ci(reps)}
    return out


def paired_differences(runs: Sequence[Mapping[str, Sequence[int]]], yardstick: Sequence[Mapping[str, Sequence[int]]],
                       metrics: Sequence[str] = PAIRED_METRICS, replicates: int = REPLICATES,
                       seed: int = 0) -> Dict[str, Dict[str, object]]:
    """Each metric of ``runs`` minus the yardstick's (same seeds in the same order, same queries):
    the difference on the data and its 95% paired bootstrap interval."""
    if len(runs) != len(yardstick):
        raise ValueError(f"paired runs: {len(runs)} seeds against the yardstick's {len(yardstick)}")
    settings = _settings(metrics)
    a = {s: hits_matrix(runs, s) for s in settings}
    b = {s: hits_matrix(yardstick, s) for s in settings}
    for s in settings:
        if a[s].shape != b[s].shape:
            raise ValueError(f"hits[{s}]: {a[s].shape[1]} queries against the yardstick's {b[s].shape[1]}")
    shape = next(iter(a.values())).shape
    seed_w, query_w = _draws(shape[0], shape[1], replicates, seed)
    out = {}
    for metric in metrics:
        va, ra = _replicated(a, metric, seed_w, query_w)
        vb, rb = _replicated(b, metric, seed_w, query_w)
        out[metric] = {"diff": va - vb, "ci95": _ci(ra - rb)}
    return out
