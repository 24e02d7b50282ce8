"""torchreid's ``Engine.run`` / ``Engine.test`` for the privacy engine, and the privacy run they do.

Why: torchreid users call ``engine.run(save_dir=..., max_epoch=..., eval_freq=...)``; inherited
as is, it would train through torchreid's loop and skip validation and the supervision upgrade.
Here it runs the full privacy run instead, and ``test`` scores the four O/P settings.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch

from torchreid_privacy import bridge

from torchreid_privacy.utils import distributed

from .cpu_fast import use_fused_adam
from .loop import run_privacy
from .state import engine_state, load_engine_state


class TorchreidRunAPI:
    """Mixin for :class:`PrivacyEngine` (uses its ``evaluator``, ``test_loader`` and ``test_targets``)."""

    # ------------------------------------------------------------------ evaluation, state, runs
    @torch.no_grad()
    def evaluate(self, target: str, grid_path: Optional[str] = None, desc: str = "eval") -> Dict[str, Any]:
        """Four-setting ranks and O-M/O-P/O-R image metrics on one target's query/gallery."""
        self.set_model_mode("eval")
        for net in bridge.engine_models(self).values():  # all ranks evaluate rank 0's running statistics
            distributed.broadcast_buffers(net)
        try:
            return self.evaluator(self.test_loader[target], grid_path, desc=f"{desc} {target}")
        finally:
            self.set_model_mode("train")
            if self.supervisor is not None:
                self.supervisor.eval()

    def state(self) -> Dict[str, Any]:
        return engine_state(self)

    def load_state(self, ckpt: Dict[str, Any], resume: bool = True, source: str = "checkpoint") -> None:
        load_engine_state(self, ckpt, resume, source)
        if self.cpu_fast:  # a checkpoint's optimizer groups bring their own foreach/fused flags
            use_fused_adam(list(bridge.engine_optimizers(self).values()))

    def run_privacy(self, save_dir: str, max_epoch: int, start_epoch: int = 0, print_freq: int = 10**9,
                    resume: Optional[Any] = None, eval_test: bool = True) -> Dict[str, Any]:
        """Train, validate/upgrade every ``privacy.val_period`` epochs, select on val, test once.

        Returns (and writes to ``save_dir/results.json``) ``{"mode", "test": {target: ...}, "val",
        "upgrades", "history"}``. ``resume`` (a checkpoint file, run directory or loaded checkpoint)
        continues a run exactly. A NaN/Inf loss raises :class:`NonFiniteLossError` naming the last
        good checkpoint.
        """
        return run_privacy(self, save_dir, max_epoch, start_epoch, print_freq, resume, eval_test)

    def run(self, save_dir: str = "log", max_epoch: int = 0, start_epoch: int = 0, print_freq: int = 10,
            fixbase_epoch: int = 0, open_layers=None, start_eval: int = 0, eval_freq: int = -1,
            test_only: bool = False, dist_metric: str = "euclidean", normalize_feature: bool = False,
            visrank: bool = False, visrank_topk: int = 10, use_metric_cuhk03: bool = False,
            ranks=(1, 5, 10, 20), rerank: bool = False) -> Dict[str, Any]:
        """torchreid's ``Engine.run`` signature, doing the full privacy run (:meth:`run_privacy`).

        ``eval_freq > 0`` sets the validation period (``privacy.val_period``); ``test_only``
        evaluates the test targets without training. Options that would change what the privacy
        evaluation measures (re-ranking, cosine distance, fixbase, CUHK03 metric) are refused.
        """
        refused = {"fixbase_epoch": fixbase_epoch > 0, "rerank": rerank, "use_metric_cuhk03": use_metric_cuhk03,
                   "dist_metric": dist_metric != "euclidean", "visrank": visrank}
        bad = [k for k, v in refused.items() if v]
        if bad:
            raise ValueError(f"{bad[0]}: not supported by the privacy engine (it evaluates the four O/P settings "
                             "with Euclidean distance on L2-normalized features)")
        if eval_freq > 0:
            self.p.val_period = int(eval_freq)
        if test_only:
            return {"test": {t: self.evaluate(t, desc="test") for t in self.test_targets}}
        return self.run_privacy(save_dir, max_epoch, start_epoch=start_epoch, print_freq=print_freq)

    def test(self, *args: Any, **kwargs: Any) -> float:
        """torchreid's ``test``: evaluates the four settings on every test target and returns
        the first target's O->O rank-1 (torchreid returns rank-1); the rest is logged."""
        first = None
        for target in self.test_targets:
            res = self.evaluate(target, desc="test")
            first = res["rank"]["O->O"]["R1"] if first is None else first
            print(f"{target}: " + ", ".join(f"{s} rank-1 {100 * r['R1']:.1f}%" for s, r in res["rank"].items()))
        return float(first if first is not None else 0.0)
