"""Config -> torchreid datamanager, backbone, optimizers, schedulers, engine.

``privacy.enabled: false`` builds exactly what torchreid's ``scripts/main.py`` builds
(softmax or triplet engine by ``loss.name``); ``true`` builds the privacy engine with the
validation split as the first test target.
"""
from __future__ import annotations

import logging
import random
from typing import Any, List, Tuple

import numpy as np
import torch

from torchreid_privacy import bridge, kernels

from torchreid_privacy.utils import distributed
from torchreid_privacy.config import (Config, ConfigError, imagedata_kwargs, optimizer_kwargs, test_targets,
                                      use_gpu)
from torchreid_privacy.data import datasets as _datasets  # noqa: F401  (registers synthetic_market, *_val)
from torchreid_privacy.data.folder import register_folder_names
from torchreid_privacy.data.validate import checked_datamanager
from torchreid_privacy.models.nets import build_privacy_nets, build_reid_model, feature_dim
from torchreid_privacy.models.optimizers import build_center_optimizer, build_scheduler
from torchreid_privacy.registry import ENGINES, LOSSES

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def build_datamanager(cfg: Config) -> Tuple[Any, str | None, List[str]]:
    """The datamanager, the validation target name (or None) and the test target names."""
    register_datasets(cfg)
    kwargs = imagedata_kwargs(cfg)
    val_target = None
    targets = test_targets(cfg)
    if cfg.privacy.enabled and cfg.privacy.val_ratio > 0:
        # train on the train identities of the split; validate on the held-out identities
        val_sources = [val_split_name(s, cfg.privacy.val_ratio, cfg.privacy.split_seed) for s in cfg.data.sources]
        val_target = val_sources[0]
        kwargs["sources"] = val_sources
        kwargs["targets"] = [val_target] + [t for t in targets if t != val_target]
    dm = checked_datamanager(cfg, lambda: bridge.ImageDataManager(**kwargs))
    return dm, val_target, targets


def register_datasets(cfg: Config) -> None:
    """Register the config's ``folder:PATH`` datasets (torchreid's registry needs them by name)."""
    register_folder_names(cfg.data.sources, key="data.sources")
    register_folder_names(cfg.data.targets, key="data.targets")


def val_split_name(source: str, val_ratio: float, split_seed: int) -> str:
    """``<source>_val`` for the default split, a parameter-named registration otherwise."""
    from torchreid_privacy.data.datasets import DEFAULT_SPLIT, is_val_split, register_val_split

    if is_val_split(source):  # market1501_val would become market1501_val_val, a split of the split
        base = bridge.dataset_class(source).base_name
        raise ConfigError(f"data.sources: '{source}' is already a validation split of '{base}'; the privacy run makes "
                          f"its split itself (privacy.val_ratio, privacy.split_seed): give data.sources [{base}]")

    if (val_ratio, split_seed) == DEFAULT_SPLIT:
        name = f"{source}_val"
    else:
        name = f"{source}_val_r{val_ratio:g}_s{split_seed}"
    register_val_split(source, name=name, val_ratio=val_ratio, split_seed=split_seed)
    return name


def build_privacy_engine(cfg: Config):
    """Everything the privacy engine needs, from one config (in a fixed RNG order: same seed, same run)."""
    from torchreid_privacy.plugins.engine import EngineParts

    seed_everything(cfg.privacy.seed)
    gpu = use_gpu(cfg)
    device = torch.device("cuda" if gpu else "cpu")
    kernels.select_backends(cfg.privacy.kernels, device)  # once per run: which op runs Triton
    dm, val_target, targets = build_datamanager(cfg)
    model = build_reid_model(cfg, dm.num_train_pids, loss="triplet").to(device)
    optimizer = bridge.build_optimizer(model, **optimizer_kwargs(cfg))
    parts = EngineParts(config=cfg, optimizer=optimizer, scheduler=build_scheduler(optimizer, cfg),
                        val_target=val_target, test_targets=targets)
    p = cfg.privacy
    parts.reid_loss = LOSSES.get("reid")(num_classes=dm.num_train_pids,
                                         feat_dim=feature_dim(model, cfg.data.height, cfg.data.width, device),
                                         margin=p.triplet.margin, weight_center=p.weights.center,
                                         weighted_triplet=p.triplet.weighted, label_smooth=p.label_smooth).to(device)
    parts.center_optimizer = build_center_optimizer(parts.reid_loss, cfg)
    if p.mode != "baseline":
        parts.nets = {k: v.to(device) for k, v in build_privacy_nets(cfg).items()}
    engine = ENGINES.get("privacy")(dm, model, config=cfg, parts=parts, use_gpu=gpu)
    if distributed.is_initialized():
        # identical weights everywhere (DDP checks), then rank-specific augmentation/noise streams
        engine.distribute(sync_bn=cfg.train.sync_bn, seed=p.seed)
        seed_everything(p.seed + distributed.rank())
    elif cfg.train.sync_bn:
        log.warning("train.sync_bn: ignored in a single process (launch with torchrun to synchronize BatchNorm)")
    return engine


def build_torchreid_engine(cfg: Config):
    """torchreid's own engine, exactly as its ``scripts/main.py`` builds it."""
    seed_everything(cfg.train.seed)
    register_datasets(cfg)
    dm = checked_datamanager(cfg, lambda: bridge.ImageDataManager(**imagedata_kwargs(cfg)))
    model = build_reid_model(cfg, dm.num_train_pids, loss=cfg.loss.name)
    gpu = use_gpu(cfg)
    if gpu:
        model = model.cuda()
    optimizer = bridge.build_optimizer(model, **optimizer_kwargs(cfg))
    scheduler = build_scheduler(optimizer, cfg)
    if cfg.model.resume:
        cfg.train.start_epoch = bridge.torchtools.resume_from_checkpoint(cfg.model.resume, model, optimizer=optimizer,
                                                                         scheduler=scheduler)
    if cfg.loss.name == "softmax":
        return bridge.ImageSoftmaxEngine(dm, model, optimizer=optimizer, scheduler=scheduler, use_gpu=gpu,
                                         label_smooth=cfg.loss.softmax.label_smooth)
    return bridge.ImageTripletEngine(dm, model, optimizer=optimizer, margin=cfg.loss.triplet.margin,
                                     weight_t=cfg.loss.triplet.weight_t, weight_x=cfg.loss.triplet.weight_x,
                                     scheduler=scheduler, use_gpu=gpu, label_smooth=cfg.loss.softmax.label_smooth)
