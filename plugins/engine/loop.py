"""The run loop of a privacy run: train, validate and upgrade, select, test once, write results.

Model selection and the supervision upgrade use the validation split only; the test split is
evaluated once, at the end, with the selected weights. Only rank 0 writes (logs, TensorBoard,
grids, checkpoints, ``results.json``); every rank runs the same loop.
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any, Dict, Optional

import torch
from tqdm import tqdm

from torchreid_privacy import kernels

from torchreid_privacy.utils import atomic

from torchreid_privacy.utils import checkpoint

from torchreid_privacy.utils import distributed
from torchreid_privacy.metrics.settings import SETTINGS
from torchreid_privacy.visualization.views import tensorboard_images

from .state import engine_state, resume_run, snapshot
from .upgrade import selection_score

log = logging.getLogger(__name__)


class NonFiniteLossError(FloatingPointError):
    """A loss term became NaN/Inf; the message names the term and the step."""


def check_finite(terms: Dict[str, Any], epoch: int, step: int) -> None:
    """Stop at the first NaN/Inf loss term, naming it (the run loop adds the last good checkpoint)."""
    for name, value in terms.items():
        if not torch.isfinite(value).all():
            raise NonFiniteLossError(f"loss term '{name}' is {value.item()} at epoch {epoch}, step {step}; stopping")


def run_privacy(engine: Any, save_dir: str, max_epoch: int, start_epoch: int = 0, print_freq: int = 10**9,
                resume: Optional[Any] = None, eval_test: bool = True) -> Dict[str, Any]:
    """Train ``engine`` to ``max_epoch``; see :meth:`PrivacyEngine.run_privacy`."""
    from torch.utils.tensorboard import SummaryWriter

    if engine.keyed and not engine.has_key:
        raise ValueError("--key-file: privacy.decoder.keyed is true, so training needs the secret key "
                         "(create one with 'torchreid-privacy keygen --output PATH')")
    main = distributed.is_main()
    if main:
        os.makedirs(save_dir, exist_ok=True)
    ckpt_dir = os.path.join(save_dir, checkpoint.CKPT_DIR)
    if resume:
        start_epoch = resume_run(engine, resume, save_dir)
    if engine.writer is None and main:
        engine.writer = SummaryWriter(log_dir=save_dir)
    engine.max_epoch = max_epoch
    log.info("kernels: %s", ", ".join(f"{op} {b}" for op, b in sorted(kernels.backend_report().items())))
    t0 = time.time()
    val = None
    bar = tqdm(range(start_epoch, max_epoch), desc=f"train [{engine.mode}]", disable=None if main else True,
               dynamic_ncols=True)
    for engine.epoch in bar:
        entry: Dict[str, Any] = {"epoch": engine.epoch + 1, "lr": engine.get_current_lr()}
        try:
            entry["losses"] = engine.train(print_freq=print_freq)
        except NonFiniteLossError as exc:
            raise NonFiniteLossError(f"{exc}; {_last_good(engine, ckpt_dir)}") from None
        last = engine.epoch + 1 == max_epoch
        if engine.val_target and ((engine.epoch + 1) % engine.p.val_period == 0 or last):
            val = engine.evaluate(engine.val_target,
                                  os.path.join(save_dir, "grids", f"val-epoch{engine.epoch + 1:03d}.png"), desc="val")
            log_eval(engine, "Val", val)
            upgraded = engine.maybe_upgrade(val)
            score = selection_score(val)
            entry.update({"score": score, "upgraded": upgraded,
                          "val_r1": {s: val["rank"][s]["R1"] for s in SETTINGS}})
            bar.set_postfix(val_r1_op=f"{val['rank']['O->P']['R1']:.2f}", upgrades=len(engine.upgrades))
        engine.history.append(entry)
        best = "score" in entry and entry["score"] >= engine.best_score  # ties: the later model
        if best:
            engine.best_score = entry["score"]
        state = engine_state(engine)  # once per epoch, on every rank: it gathers the ranks' RNG states
        if best:
            engine.best_state = snapshot(state)
            if main:
                checkpoint.save_atomic(state, os.path.join(ckpt_dir, checkpoint.BEST))
        if main:
            checkpoint.save_atomic(state, os.path.join(ckpt_dir, checkpoint.LAST))
        engine.saved_epoch = engine.epoch + 1
    if engine.best_state is not None:
        engine.load_state(engine.best_state, resume=False)
    results: Dict[str, Any] = {"mode": engine.mode, "val": val, "upgrades": engine.upgrades,
                               "history": engine.history, "train_seconds": round(time.time() - t0, 1),
                               "kernels": kernels.backend_report()}
    if eval_test:
        results["test"] = {}
        for target in engine.test_targets:
            res = engine.evaluate(target, os.path.join(save_dir, "grids", f"test-{target}.png"), desc="test")
            log_eval(engine, f"Test/{target}", res)
            results["test"][target] = res
            if main and engine.p.tensorboard_views:  # rank lists, t-SNE, O | M | P | R in TensorBoard
                tensorboard_images(engine.writer, engine.inference, engine.test_loader[target], step=max_epoch,
                                   tag=f"Test/{target}", eval_seed=engine.p.eval_seed,
                                   grid_images=engine.p.grid_images)
    if main:
        atomic.write_json(os.path.join(save_dir, "results.json"), results)
        engine.writer.flush()
    distributed.barrier()  # nobody leaves before rank 0 has written everything
    return results


def _last_good(engine: Any, ckpt_dir: str) -> str:
    if engine.saved_epoch is None:
        return "no checkpoint was written yet"
    return f"last good checkpoint: {os.path.join(ckpt_dir, checkpoint.LAST)} (epoch {engine.saved_epoch})"


def log_eval(engine: Any, prefix: str, res: Dict[str, Any]) -> None:
    """Ranks and PSNR/SSIM of one evaluation as TensorBoard scalars at the current epoch."""
    if engine.writer is None:
        return
    step = engine.epoch + 1
    for setting, r in res["rank"].items():
        engine.writer.add_scalar(f"{prefix}/rank1/{setting}", r["R1"], step)
        engine.writer.add_scalar(f"{prefix}/mAP/{setting}", r["mAP"], step)
    for setting, r in res.get("rank_unpublished", {}).items():  # float P, never published
        engine.writer.add_scalar(f"{prefix}/rank1_unpublished/{setting}", r["R1"], step)
    for pair, m in res["image"].items():
        engine.writer.add_scalar(f"{prefix}/psnr/{pair}", m["psnr"], step)
        engine.writer.add_scalar(f"{prefix}/ssim/{pair}", m["ssim"], step)
