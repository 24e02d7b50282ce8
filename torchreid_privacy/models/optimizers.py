"""Optimizers and schedulers of a privacy run (the paper's settings, DESIGN.md §1).

Why not in the builder: the engine builds them too, for nets it creates from defaults (the
torchreid-style ``ImagePrivacyEngine(datamanager, model, ...)``), so they live below both.
"""
from __future__ import annotations

from typing import Iterable

import torch

from torchreid_privacy import bridge
from torchreid_privacy.config import Config, lr_scheduler_kwargs


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config):
    """torchreid's scheduler (``train.lr_scheduler``), after a linear warm-up when privacy is on."""
    base = bridge.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
    p = cfg.privacy
    if not p.enabled or p.warmup_epochs <= 0:
        return base
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=p.warmup_factor, end_factor=1.0,
                                             total_iters=p.warmup_epochs)
    return torch.optim.lr_scheduler.ChainedScheduler([warm, base])


def build_adam(params: Iterable[torch.nn.Parameter], cfg: Config) -> torch.optim.Optimizer:
    """Adam with pix2pix's betas for G, G_R, D1, D2 (``privacy.lr``, ``privacy.gen_betas``)."""
    p = cfg.privacy
    return torch.optim.Adam(params, lr=p.lr, betas=tuple(p.gen_betas), weight_decay=cfg.train.weight_decay)


def build_center_optimizer(reid_loss: torch.nn.Module, cfg: Config):
    """SGD for the center-loss centers (``privacy.center_lr``), or None without centers."""
    centers = reid_loss.center_parameters()
    return torch.optim.SGD(centers, lr=cfg.privacy.center_lr) if centers else None
