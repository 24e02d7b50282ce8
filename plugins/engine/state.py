"""What a privacy run's checkpoint holds, and how a run resumes from one.

One dict per checkpoint: every net, optimizer and scheduler the engine registered, the
supervision snapshot, best metrics, upgrade events, per-epoch history, RNG states (every
rank's under torchrun), the AMP scaler and the config. Loading it back makes training continue
exactly as if it had never stopped. The secret key of a keyed decoder is never part of it.
"""
from __future__ import annotations

import copy
import logging
import math
import os
from typing import Any, Dict

from torchreid_privacy import bridge

from torchreid_privacy.utils import checkpoint

from torchreid_privacy.utils import distributed
from torchreid_privacy.config import to_dict

log = logging.getLogger(__name__)

FORMAT = "torchreid-privacy/1"


def engine_state(engine: Any) -> Dict[str, Any]:
    models = bridge.engine_models(engine)
    return {
        "format": FORMAT,
        "mode": engine.mode,
        "epoch": engine.epoch + 1,
        "models": {n: m.state_dict() for n, m in models.items()},
        "optims": {n: o.state_dict() for n, o in bridge.engine_optimizers(engine).items()},
        "scheds": {n: s.state_dict() for n, s in bridge.engine_schedulers(engine).items() if s is not None},
        "supervisor": None if engine.supervisor is None else engine.supervisor.state_dict(),
        "best_score": engine.best_score,
        **engine.policy.state_dict(),
        "history": engine.history,
        "num_classes": engine.datamanager.num_train_pids,
        "config": to_dict(engine.config) if engine.config is not None else None,
        "rng": checkpoint.rng_state(),
        # every rank's RNG (augmentation, noise) so a multi-process resume is exact too
        "rng_ranks": distributed.gather_objects(checkpoint.rng_state()) if distributed.world_size() > 1 else None,
        "amp_scaler": engine.precision.state_dict(),
        "global_step": engine.global_step,
    }


def load_engine_state(engine: Any, ckpt: Dict[str, Any], resume: bool = True, source: str = "checkpoint") -> None:
    """Load every net (and the supervisor snapshot); with ``resume`` also optimizers,
    schedulers, best metrics, history, step counter and RNG states. ``source`` names the file
    in error messages."""
    if resume and ckpt.get("mode") != engine.mode:
        raise bridge.CheckpointError(f"{source}: checkpoint was trained with privacy.mode {ckpt.get('mode')}, "
                                     f"the config says {engine.mode}")
    for name, net in bridge.engine_models(engine).items():
        if name not in ckpt["models"]:
            raise bridge.CheckpointError(f"{source}: checkpoint lacks network '{name}'")
        checkpoint.load_state(net, ckpt["models"][name], f"{source} [{name}]")
    if ckpt.get("supervisor") is not None:
        engine.snapshot_generator(ckpt["supervisor"], source)
    if not resume:
        return
    optims = bridge.engine_optimizers(engine)
    missing = [n for n in optims if n not in ckpt.get("optims", {})]
    if missing:
        raise bridge.CheckpointError(f"{source}: checkpoint lacks optimizer state for {', '.join(missing)}")
    for name, opt in optims.items():
        opt.load_state_dict(ckpt["optims"][name])
    for name, sched in bridge.engine_schedulers(engine).items():
        if sched is not None and name in ckpt["scheds"]:
            sched.load_state_dict(ckpt["scheds"][name])
    engine.best_score = ckpt["best_score"]
    engine.policy.load_state_dict(ckpt)
    engine.history = list(ckpt["history"])
    engine.global_step = ckpt.get("global_step", 0)
    engine.precision.load_state_dict(ckpt.get("amp_scaler"))
    per_rank = ckpt.get("rng_ranks")
    if per_rank and len(per_rank) == distributed.world_size():
        checkpoint.set_rng_state(per_rank[distributed.rank()])
    else:
        checkpoint.set_rng_state(ckpt.get("rng"))


def resume_run(engine: Any, resume: Any, save_dir: str) -> int:
    """Restore a run from a checkpoint (file, run directory or loaded dict); returns its epoch.

    The in-memory best state (used for the final test) is taken back from ``best.pth`` of the
    run, checked to be the one ``best_score`` refers to.
    """
    if isinstance(resume, dict):
        ck, source = resume, "resume checkpoint"
    else:
        source = checkpoint.resolve(resume, prefer=(checkpoint.LAST, checkpoint.BEST), flag="--resume")
        ck = checkpoint.load(source)
    load_engine_state(engine, ck, resume=True, source=source)
    places = [os.path.join(save_dir, checkpoint.CKPT_DIR, checkpoint.BEST)]
    if not isinstance(resume, dict):
        places.append(os.path.join(os.path.dirname(os.path.abspath(source)), checkpoint.BEST))
    engine.best_state = None
    for path in places:
        if os.path.isfile(path):
            best = checkpoint.load(path)
            if best.get("best_score") == engine.best_score and best.get("epoch", 0) <= ck["epoch"]:
                engine.best_state = best
                break
    if engine.best_state is None and engine.best_score > -math.inf:
        log.warning("resume: no best.pth with best_score %.4f found; the final test uses the best "
                    "epoch from now on, or the last weights", engine.best_score)
    engine.saved_epoch = ck["epoch"]
    log.info("resumed from %s at epoch %d (step %d)", source, ck["epoch"], engine.global_step)
    return ck["epoch"]


def snapshot(state: Dict[str, Any]) -> Dict[str, Any]:
    """A deep copy of a state, kept in memory as the best epoch's."""
    return copy.deepcopy(state)
