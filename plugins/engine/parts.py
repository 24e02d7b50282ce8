"""Everything a privacy engine trains besides C, built from the config where not given.

Why: ``builder.build_privacy_engine`` builds every part from a YAML (in a fixed RNG order, so a
seed gives the same run); a torchreid user who swaps ``ImageTripletEngine`` for
``ImagePrivacyEngine`` gives only a datamanager, C and C's optimizer, and the rest (G, G_R, D1,
D2, the ReID loss with its centers, their optimizers, the validation split) comes from here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional

import torch

from torchreid_privacy import bridge
from torchreid_privacy.config import Config, optimizer_kwargs, privacy_config
from torchreid_privacy.data.datasets import is_val_split
from torchreid_privacy.inference import PrivacyModel, model_from_config
from torchreid_privacy.models.nets import build_privacy_nets, feature_dim
from torchreid_privacy.models.optimizers import build_adam, build_center_optimizer, build_scheduler
from torchreid_privacy.registry import LOSSES

log = logging.getLogger(__name__)


@dataclass
class EngineParts:
    """The parts of a privacy engine besides C, as ``PrivacyEngine(..., parts=...)`` takes them.

    Any field left at its default is built from ``config`` (``complete_parts``): ``nets`` holds
    G, G_R, D1, D2 (and the inversion adversary A) by name, ``optims``/``scheds`` their optimizers
    and schedulers by the same names; ``reid_loss`` and ``center_optimizer`` are the ReID loss and
    its centers' optimizer; ``inference`` the ``PrivacyModel`` over the nets;
    ``val_target``/``test_targets`` the datamanager's validation and test target names.
    """

    config: Optional[Config] = None
    optimizer: Any = None
    scheduler: Any = None
    reid_loss: Optional[torch.nn.Module] = None
    center_optimizer: Any = None
    nets: Dict[str, torch.nn.Module] = field(default_factory=dict)
    optims: Dict[str, Any] = field(default_factory=dict)
    scheds: Dict[str, Any] = field(default_factory=dict)
    inference: Optional[PrivacyModel] = None
    val_target: Optional[str] = None
    test_targets: List[str] = field(default_factory=list)


def datamanager_config(dm: Any, model: torch.nn.Module, privacy: Optional[Mapping[str, Any]]) -> Config:
    """A full config for a torchreid datamanager and model: sizes, normalization, sets, ``model.name``
    (so ``torchreid_privacy.load`` can rebuild C), plus ``privacy``."""
    cfg = privacy_config(privacy)
    name = bridge.model_name_of(model)
    if name is None:
        log.warning("model.name: could not tell which torchreid model this is; torchreid_privacy.load of this "
                    "run will need --config-file naming it")
    cfg.model.update(name=name or cfg.model.name, pretrained=False)
    mean, std = bridge.datamanager_normalization(dm)
    cfg.data.update(height=int(dm.height), width=int(dm.width), norm_mean=mean, norm_std=std,
                    sources=list(dm.sources), targets=list(dm.targets))
    cfg.use_gpu = bool(dm.use_gpu)
    return cfg


def find_val_target(dm: Any, mode: str) -> Optional[str]:
    """The validation split: a ``<name>_val`` dataset that is both a source and a target."""
    for name in dm.sources:
        if is_val_split(name) and name in dm.test_loader:
            return name
    if mode == "progressive":
        raise ValueError("privacy.mode progressive needs a validation split of identities held out from training: "
                         "build the ImageDataManager with sources='market1501_val' and targets=['market1501_val', "
                         "'market1501'] (any '<dataset>_val', registered by 'import torchreid_privacy'), "
                         "or pass val_target=")
    return None


def complete_parts(dm: Any, model: torch.nn.Module, optimizer: Any, scheduler: Any,
                   privacy: Optional[Mapping[str, Any]], config: Optional[Config], parts: Optional[EngineParts],
                   val_target: Optional[str], test_targets: Optional[List[str]],
                   device: torch.device) -> EngineParts:
    """``parts`` with every missing piece built from the config (see the module docstring)."""
    parts = parts or EngineParts()
    cfg = parts.config = config or parts.config or datamanager_config(dm, model, privacy)
    mode = cfg.privacy.mode
    parts.optimizer = optimizer or parts.optimizer or bridge.build_optimizer(model, **optimizer_kwargs(cfg))
    parts.scheduler = scheduler or parts.scheduler or build_scheduler(parts.optimizer, cfg)
    if parts.reid_loss is None:
        p = cfg.privacy
        dim = feature_dim(model, cfg.data.height, cfg.data.width, device)
        parts.reid_loss = LOSSES.get("reid")(num_classes=dm.num_train_pids, feat_dim=dim, margin=p.triplet.margin,
                                             weight_center=p.weights.center, weighted_triplet=p.triplet.weighted,
                                             label_smooth=p.label_smooth).to(device)
        parts.center_optimizer = build_center_optimizer(parts.reid_loss, cfg)
    if mode != "baseline":
        if not parts.nets:
            parts.nets = {k: v.to(device) for k, v in build_privacy_nets(cfg).items()}
        for name, net in parts.nets.items():
            if name not in parts.optims:
                parts.optims[name] = build_adam(net.parameters(), cfg)
                parts.scheds[name] = build_scheduler(parts.optims[name], cfg)
    elif parts.nets:
        raise ValueError("privacy.mode baseline trains no generator; drop the privacy nets or pick joint/progressive")
    if parts.inference is None:
        parts.inference = model_from_config(cfg, model, parts.nets.get("generator"), parts.nets.get("decoder"))
    parts.val_target = val_target or parts.val_target or find_val_target(dm, mode)
    parts.test_targets = list(test_targets or parts.test_targets
                              or [t for t in dm.test_loader if t != parts.val_target])
    return parts
