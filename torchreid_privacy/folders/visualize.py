"""``visualize``: the pictures of :mod:`torchreid_privacy.visualization.views` for a saved run's test split.

Why a thin module: opening a run (checkpoint, config, test data) is the application's job; the
pictures themselves live in ``views`` so the training engine can draw them too.

Example::

    from torchreid_privacy.folders.visualize import write_views
    paths = write_views("log/quickstart", "views")      # {"ranklists": [...], "tsne": ..., "grid": ...}
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Union

from torchreid_privacy.visualization.views import check_counts, compute_views, save_views


def write_views(run: Union[str, Any], output_dir: str, target: Optional[str] = None, *, queries: int = 4,
                topk: int = 10, identities: int = 20) -> Dict[str, Any]:
    """Rank lists (four settings), t-SNE and O | M | P | R grid of a run's test split, as PNGs.

    ``run``: a run directory / checkpoint file, or an open ``TrainedRun`` (e.g. with a key set, so
    the grid shows R). ``target``: a test target (default: the run's first). Returns
    ``{"target", "rank", "ranklists": [png, ...], "tsne": png, "grid": png}``.
    """
    from torchreid_privacy.trained_run import TrainedRun

    check_counts(queries, topk, identities)
    if not isinstance(run, TrainedRun):
        run = TrainedRun.open(run)
    target = target or run.test_targets[0]
    if target not in run.test_targets:
        raise ValueError(f"--target: {target!r} is not a test target of this run "
                         f"(have: {', '.join(run.test_targets)})")
    p = run.config.privacy
    views = compute_views(run.model, run.datamanager.test_loader[target], target, queries=queries, topk=topk,
                          identities=identities, eval_seed=p.eval_seed, grid_images=p.grid_images)
    return save_views(views, output_dir)


def view_lines(paths: Dict[str, Any]) -> List[str]:
    """What ``visualize`` (and the demo) print: the four rank-1s and every PNG's path."""
    lines = ["  ".join(f"{s} {100 * r['R1']:.1f}" for s, r in paths["rank"].items())
             + f"  (rank-1 %, {paths['target']})"]
    lines += [f"rank lists: {p}" for p in paths["ranklists"]]
    lines.append(f"t-SNE: {paths['tsne']}")
    if "grid" in paths:
        lines.append(f"grid: {paths['grid']}")
    return lines
