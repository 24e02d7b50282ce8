"""Build the networks of a run from its config: the ReID backbone C and the privacy nets.

Why a module of its own: training (``builder``) and inference (``inference.load``) must build
the very same architectures from one config, and inference must not pull in datamanagers or
optimizers to do so.
"""
from __future__ import annotations

import functools
import inspect
from typing import Dict

import torch

from torchreid_privacy import bridge

from torchreid_privacy.utils import weights
from torchreid_privacy.config import Config, ConfigError, use_gpu
from torchreid_privacy.desensitize import resolve_desensitizer
from torchreid_privacy.plugins.anonymizers import check_fits
from torchreid_privacy.plugins.keyed import KeyedDecoder
from torchreid_privacy.registry import ANONYMIZERS, DISCRIMINATORS, load_plugins

PRIVACY_NETS = ("generator", "decoder", "disc_op", "disc_pr")
_BUILT_IN_ARGS = ("in_channels", "out_channels", "ngf", "num_downs", "norm", "use_dropout", "desensitizer")


def build_reid_model(cfg: Config, num_classes: int, loss: str, load_weights: bool = True) -> torch.nn.Module:
    """torchreid backbone; ``model.load_weights`` (file or URL) is loaded with ``weights_only=True``."""
    load_plugins()  # our backbones (e.g. tiny_reid) join torchreid's model factory on import
    # given weights replace the ImageNet download (offline machines have no network)
    pretrained = cfg.model.pretrained and load_weights and not cfg.model.load_weights
    model = bridge.build_model(cfg.model.name, num_classes=num_classes, loss=loss, pretrained=pretrained,
                               use_gpu=use_gpu(cfg))
    if load_weights and cfg.model.load_weights:
        path = weights.fetch(cfg.model.load_weights, what="model.load_weights")
        weights.load_backbone_weights(model, path, what="model.load_weights")
    return model


def build_generator(cfg: Config) -> torch.nn.Module:
    """G with ``privacy.generator.params``; an anonymizer that takes a ``desensitizer`` (e.g.
    ``residual_code``, built on M) gets the run's conventional one. An explicit ``num_downs`` that
    cannot run at ``data.height x data.width`` is named."""
    g = cfg.privacy.generator
    factory = ANONYMIZERS.get(g.name)
    params = dict(g.params)
    accepted = inspect.signature(factory).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ConfigError(f"privacy.generator.params: '{g.name}' takes no parameter {unknown[0]!r} "
                          f"(it takes {', '.join(k for k in accepted if k not in _BUILT_IN_ARGS) or 'none'})")
    if "desensitizer" in accepted:
        d = cfg.privacy.desensitizer
        params["desensitizer"] = functools.partial(resolve_desensitizer(d.name, dict(d.params)), **dict(d.params))
    try:
        net = factory(ngf=g.ngf, num_downs=g.num_downs, norm=g.norm, **params)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"privacy.generator: {exc}") from None
    check_fits(net, cfg.data.height, cfg.data.width, "privacy.generator.num_downs")
    return net


def build_decoder(cfg: Config) -> torch.nn.Module:
    """G_R; with ``privacy.decoder.keyed`` it also takes the key's planes."""
    d = cfg.privacy.decoder
    net = ANONYMIZERS.get(d.name)(in_channels=3 + (d.key_channels if d.keyed else 0), ngf=d.ngf,
                                  num_downs=d.num_downs, norm=d.norm)
    check_fits(net, cfg.data.height, cfg.data.width, "privacy.decoder.num_downs")
    return KeyedDecoder(net, d.key_channels) if d.keyed else net


def build_discriminator(cfg: Config) -> torch.nn.Module:
    d = cfg.privacy.discriminator
    return DISCRIMINATORS.get(d.name)(ndf=d.ndf, n_layers=d.n_layers)


def build_inverter(cfg: Config) -> torch.nn.Module:
    """The inversion adversary A of a sealed run: the decoder's architecture on P alone."""
    d = cfg.privacy.decoder
    net = ANONYMIZERS.get(d.name)(ngf=d.ngf, num_downs=d.num_downs, norm=d.norm)
    check_fits(net, cfg.data.height, cfg.data.width, "privacy.decoder.num_downs")
    return net


def build_privacy_nets(cfg: Config) -> Dict[str, torch.nn.Module]:
    """G, G_R (pix2pix generators) and the two conditional PatchGANs D1, D2; a sealed run has no
    G_R and no D2 (recovery is cryptographic) and, with ``privacy.inversion``, the adversary A."""
    # construction order = RNG order: G first, so a seed gives the same weights as always
    sealed = cfg.privacy.recovery == "sealed"
    nets = {"generator": build_generator(cfg)}
    if not sealed:
        nets["decoder"] = build_decoder(cfg)
    nets["disc_op"] = build_discriminator(cfg)
    if not sealed:
        nets["disc_pr"] = build_discriminator(cfg)
    elif cfg.privacy.inversion.enabled:
        nets["inverter"] = build_inverter(cfg)
    return nets


@torch.no_grad()
def feature_dim(model: torch.nn.Module, height: int, width: int, device: torch.device | str = "cpu") -> int:
    """Embedding size of a torchreid backbone (eval mode returns features)."""
    was_training = model.training
    model.eval()
    out = model(torch.zeros(2, 3, height, width, device=device))
    model.train(was_training)
    if isinstance(out, (tuple, list)):
        out = out[-1]
    return int(out.shape[1])
