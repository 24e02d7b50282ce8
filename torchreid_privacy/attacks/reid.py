"""Third-party ReID attack: can a ReID model that never saw P re-identify people in P?

A third party trains its own model (same ``model.name``) on raw images only, with torchreid's
own triplet engine, and is then scored in the four settings against the checkpoint's G. Low
O->P / P->P numbers mean P hides identity from models other than the jointly trained C.
"""
from __future__ import annotations

import os
import time
from typing import Any

import torch

from torchreid_privacy import bridge
from torchreid_privacy.config import Config, load_config, to_dict
from torchreid_privacy.metrics.settings import SETTINGS
from torchreid_privacy.trained_run import TrainedRun

# O->M: the yardstick, a gallery protected by the conventional desensitizer only
ATTACK_SETTINGS = SETTINGS + ("O->M",)


def third_party_config(cfg: Config, save_dir: str, max_epoch: int | None = None) -> Config:
    """``cfg`` as a plain torchreid triplet run on raw images (no privacy), saving under ``save_dir``."""
    tp = load_config(base=to_dict(cfg), overrides=["privacy.enabled", "false", "loss.name", "triplet"])
    tp.data.save_dir = save_dir
    tp.model.resume = ""
    tp.train.start_epoch = 0
    if max_epoch is not None:
        if max_epoch < 1:
            raise ValueError(f"--max-epoch: expected >= 1, got {max_epoch}")
        tp.train.max_epoch = max_epoch
    return tp


def train_third_party(tp: Config) -> str:
    """Train with torchreid's engine (no test: the attack scores the model itself); returns the
    saved backbone's path."""
    from torchreid_privacy.builder import build_torchreid_engine

    engine = build_torchreid_engine(tp)
    bridge.train_epochs(engine, max_epoch=tp.train.max_epoch, fixbase_epoch=tp.train.fixbase_epoch,
                        open_layers=tp.train.open_layers)
    path = os.path.join(tp.data.save_dir, "backbone.pth")
    torch.save(engine.model.state_dict(), path)  # usable as `torchreid-privacy test --weights`
    return path


def reid_attack(cfg: Config | None, checkpoint_path: str, save_dir: str, key: Any | None = None,
                max_epoch: int | None = None) -> dict[str, Any]:
    """Rank-1/mAP of a raw-image third-party model in O->O, O->P, P->O, P->P and O->M (fractions).

    ``cfg``: the third party's config (None: the checkpoint's own); its ``data.sources`` are
    trained on in full (all train identities), ``max_epoch`` overrides ``train.max_epoch``.
    The privacy engine is loaded first so a bad checkpoint or key fails before any training.
    """
    run = TrainedRun.open(checkpoint_path, key=key)
    tp = third_party_config(cfg if cfg is not None else run.config, os.path.join(save_dir, "third_party"),
                            max_epoch)
    os.makedirs(tp.data.save_dir, exist_ok=True)
    t0 = time.time()
    weights_path = train_third_party(tp)
    seconds = time.time() - t0

    from torchreid_privacy.utils.weights import load_backbone_weights

    # the classifier is sized for another number of identities and is skipped; features are what count
    load_backbone_weights(run.model.reid, weights_path, what="third-party model", features_only=True)
    target = run.test_targets[0]
    res = run.evaluate(target, grid_path=None, desc="reid attack", settings=ATTACK_SETTINGS)
    out: dict[str, Any] = {s: {"R1": float(res["rank"][s]["R1"]), "mAP": float(res["rank"][s]["mAP"])}
                           for s in ATTACK_SETTINGS}
    out.update({"model": tp.model.name, "epochs": tp.train.max_epoch, "train_seconds": round(seconds, 1),
                "target": target, "checkpoint": run.path, "weights": weights_path})
    return out
