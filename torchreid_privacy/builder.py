"""Config -> torchreid datamanager, backbone, optimizers, schedulers, engine.

``privacy.enabled: false`` builds exactly what torchreid's ``scripts/main.py`` builds
(softmax or triplet engine by ``loss.name``); ``true`` builds the privacy engine with the
validation split as the first test target.
"""
from __future__ import annotations

import logging
import random
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from torchreid_privacy import bridge, distributed, kernels, weights
from torchreid_privacy.config import (Config, imagedata_kwargs, lr_scheduler_kwargs, optimizer_kwargs,
                                      use_gpu)
from torchreid_privacy.data import datasets as _datasets  # noqa: F401  (registers synthetic_market, *_val)
from torchreid_privacy.data.validate import checked_datamanager
from torchreid_privacy.plugins.keyed import KeyedDecoder
from torchreid_privacy.registry import ANONYMIZERS, DISCRIMINATORS, ENGINES, LOSSES, load_plugins

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: Config):
    """torchreid's scheduler (``train.lr_scheduler``), after a linear warm-up when privacy is on."""
    base = bridge.build_lr_scheduler(optimizer, **lr_scheduler_kwargs(cfg))
    p = cfg.privacy
    if not p.enabled or p.warmup_epochs <= 0:
        return base
    warm = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=p.warmup_factor, end_factor=1.0,
                                             total_iters=p.warmup_epochs)
    return torch.optim.lr_scheduler.ChainedScheduler([warm, base])


def build_datamanager(cfg: Config) -> Tuple[Any, str | None, List[str]]:
    """The datamanager, the validation target name (or None) and the test target names."""
    kwargs = imagedata_kwargs(cfg)
    val_target = None
    targets = list(cfg.data.targets)
    if cfg.privacy.enabled and cfg.privacy.val_ratio > 0:
        # train on the train identities of the split; validate on the held-out identities
        val_sources = [val_split_name(s, cfg.privacy.val_ratio, cfg.privacy.split_seed) for s in cfg.data.sources]
        val_target = val_sources[0]
        kwargs["sources"] = val_sources
        kwargs["targets"] = [val_target] + [t for t in targets if t != val_target]
    dm = checked_datamanager(cfg, lambda: bridge.ImageDataManager(**kwargs))
    return dm, val_target, targets


def val_split_name(source: str, val_ratio: float, split_seed: int) -> str:
    """``<source>_val`` for the default split, a parameter-named registration otherwise."""
    from torchreid_privacy.data.datasets import DEFAULT_SPLIT, register_val_split

    if (val_ratio, split_seed) == DEFAULT_SPLIT:
        name = f"{source}_val"
    else:
        name = f"{source}_val_r{val_ratio:g}_s{split_seed}"
    register_val_split(source, name=name, val_ratio=val_ratio, split_seed=split_seed)
    return name


def build_reid_model(cfg: Config, num_classes: int, loss: str) -> torch.nn.Module:
    """torchreid backbone; ``model.load_weights`` (file or URL) is loaded with ``weights_only=True``."""
    load_plugins()  # our backbones (e.g. tiny_reid) join torchreid's model factory on import
    model = bridge.build_model(cfg.model.name, num_classes=num_classes, loss=loss, weights=None,
                               pretrained=cfg.model.pretrained, use_gpu=use_gpu(cfg))
    if cfg.model.load_weights:
        path = weights.fetch(cfg.model.load_weights, what="model.load_weights")
        weights.load_backbone_weights(model, path, what="model.load_weights")
    return model


def _adam(params, cfg: Config) -> torch.optim.Optimizer:
    p = cfg.privacy
    return torch.optim.Adam(params, lr=p.lr, betas=tuple(p.gen_betas), weight_decay=cfg.train.weight_decay)


def build_privacy_nets(cfg: Config) -> Dict[str, torch.nn.Module]:
    """G, G_R (pix2pix generators) and the two conditional PatchGANs D1, D2."""
    p = cfg.privacy
    d = p.decoder
    # construction order = RNG order: G first, so a seed gives the same weights as always
    generator = ANONYMIZERS.get(p.generator.name)(ngf=p.generator.ngf, num_downs=p.generator.num_downs,
                                                  norm=p.generator.norm)
    decoder = ANONYMIZERS.get(d.name)(in_channels=3 + (d.key_channels if d.keyed else 0), ngf=d.ngf,
                                      num_downs=d.num_downs, norm=d.norm)
    nets = {"generator": generator, "decoder": KeyedDecoder(decoder, d.key_channels) if d.keyed else decoder}
    for name in ("disc_op", "disc_pr"):
        nets[name] = DISCRIMINATORS.get(p.discriminator.name)(ndf=p.discriminator.ndf,
                                                              n_layers=p.discriminator.n_layers)
    return nets


def build_privacy_engine(cfg: Config):
    """Everything the privacy engine needs, from one config."""
    seed_everything(cfg.privacy.seed)
    kernels.set_kernel_mode(cfg.privacy.kernels)
    gpu = use_gpu(cfg)
    device = torch.device("cuda" if gpu else "cpu")
    dm, val_target, targets = build_datamanager(cfg)
    model = build_reid_model(cfg, dm.num_train_pids, loss="triplet").to(device)
    optimizer = bridge.build_optimizer(model, **optimizer_kwargs(cfg))
    scheduler = build_scheduler(optimizer, cfg)
    feat_dim = _feature_dim(model, cfg, device)
    p = cfg.privacy
    reid_loss = LOSSES.get("reid")(num_classes=dm.num_train_pids, feat_dim=feat_dim, margin=p.triplet.margin,
                                   weight_center=p.weights.center, weighted_triplet=p.triplet.weighted,
                                   label_smooth=p.label_smooth).to(device)
    centers = reid_loss.center_parameters()
    center_opt = torch.optim.SGD(centers, lr=p.center_lr) if centers else None
    nets, optims, scheds = {}, {}, {}
    if p.mode != "baseline":
        nets = {k: v.to(device) for k, v in build_privacy_nets(cfg).items()}
        for name, net in nets.items():
            optims[name] = _adam(net.parameters(), cfg)
            scheds[name] = build_scheduler(optims[name], cfg)
    engine_cls = ENGINES.get("privacy")
    engine = engine_cls(dm, model, optimizer, scheduler, p, reid_loss, center_opt,
                        norm_mean=cfg.data.norm_mean, norm_std=cfg.data.norm_std, nets=nets, optims=optims,
                        scheds=scheds, val_target=val_target, test_targets=targets, use_gpu=gpu, config=cfg,
                        amp=cfg.train.amp)
    if distributed.is_initialized():
        # identical weights everywhere (DDP checks), then rank-specific augmentation/noise streams
        engine.distribute(sync_bn=cfg.train.sync_bn, seed=p.seed)
        seed_everything(p.seed + distributed.rank())
    elif cfg.train.sync_bn:
        log.warning("train.sync_bn: ignored in a single process (launch with torchrun to synchronize BatchNorm)")
    return engine


@torch.no_grad()
def _feature_dim(model: torch.nn.Module, cfg: Config, device: torch.device) -> int:
    """Embedding size of a torchreid backbone (eval mode returns features)."""
    was_training = model.training
    model.eval()
    out = model(torch.zeros(2, 3, cfg.data.height, cfg.data.width, device=device))
    model.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[-1]
    return int(out.shape[1])


def build_torchreid_engine(cfg: Config):
    """torchreid's own engine, exactly as its ``scripts/main.py`` builds it."""
    seed_everything(cfg.train.seed)
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


def nets_from_checkpoint(path: str, names: Tuple[str, ...], device: str = "cpu") -> Tuple[Config, Dict[str, torch.nn.Module]]:
    """Rebuild the named privacy nets (``generator``, ``decoder``, ...) from a ``train`` checkpoint."""
    from torchreid_privacy import checkpoint
    from torchreid_privacy.config import load_config

    ckpt = checkpoint.load(path, need=names)
    if not ckpt.get("config"):
        raise bridge.CheckpointError(f"{path}: checkpoint carries no config; cannot rebuild its networks")
    cfg = load_config(base=ckpt["config"])
    built = build_privacy_nets(cfg)
    nets = {}
    for name in names:
        net = built[name]
        checkpoint.load_state(net, ckpt["models"][name], f"{path} [{name}]")
        nets[name] = net.to(device).eval()
    return cfg, nets


def engine_from_checkpoint(path: str, overrides: Sequence[str] = (), key: Optional[bytes] = None,
                           need: Tuple[str, ...] = (), config_file: Optional[str] = None) -> Tuple[Any, str]:
    """(privacy engine with the checkpoint's nets loaded, resolved checkpoint path).

    The checkpoint's own config (or ``config_file``), plus ``overrides``, builds the engine, as
    ``test`` does; ``need`` names nets that must be in the checkpoint (e.g.
    ``("generator", "decoder")``); ``key`` is handed to ``engine.set_key`` when given.
    """
    from torchreid_privacy import checkpoint
    from torchreid_privacy.config import load_config

    path = checkpoint.resolve(path)
    ckpt = checkpoint.load(path, need=need)
    if not config_file and not ckpt.get("config"):
        raise bridge.CheckpointError(f"{path}: checkpoint carries no config; give --config-file")
    cfg = load_config(config_file, overrides, base=None if config_file else ckpt["config"])
    cfg.model.load_weights = ""  # the checkpoint holds the trained backbone
    engine = build_privacy_engine(cfg)
    engine.load_state(ckpt, resume=False, source=path)
    if key is not None:
        engine.set_key(key)
    return engine, path
