"""``PrivacyModel``: the trained nets for inference, and :func:`load` to get one from a checkpoint.

Why one object: ``test``, ``anonymize``, ``recover``, ``search``, the attacks, ONNX export and the
training engine itself all need "apply G", "apply G_R (with the key)" and "embed with C" on the
same terms (normalization, GAN range, the keyed decoder's planes). Defining them once here keeps
every number the project reports comparable. Loading needs no optimizer, discriminator or
datamanager.

Example::

    import torchreid_privacy
    model = torchreid_privacy.load("log/quickstart")          # run dir or .pth file
    p01 = model.anonymize(o01)                                # (N,3,H,W) in [0,1] -> P in [0,1]
    published = model.publish(p01)                            # P as its published file decodes
    r01 = model.recover(p01)                                  # G_R(P); keyed: load(..., key=KEY)
    f = model.features(o01)                                   # C's embedding of [0,1] images
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import torch
from torch import nn

from torchreid_privacy.utils import checkpoint

from torchreid_privacy.sealing import keys
from torchreid_privacy.config import Config, load_config
from torchreid_privacy.desensitize import resolve_desensitizer
from torchreid_privacy.utils.images import denormalize, from_gan, normalize, to_gan
from torchreid_privacy.models.nets import build_decoder, build_generator, build_reid_model
from torchreid_privacy.publish import PublishChannel


class PrivacyModel(nn.Module):
    """C, and G / G_R unless trained in baseline mode, with the data normalization of the run.

    Args:
        reid: the ReID backbone C (eval mode returns features).
        generator: G (None in baseline mode, where P is the conventional M).
        decoder: G_R (None in baseline mode and for sealed recovery).
        norm_mean: torchreid's input normalization mean (``data.norm_mean``).
        norm_std: torchreid's input normalization std (``data.norm_std``).
        height: the model's input height.
        width: the model's input width.
        desensitizer: the conventional desensitizer's registered name (M).
        desensitizer_params: its parameters.
        key_channels: the number of key planes the decoder takes: positive when ``decoder`` is keyed
            (``privacy.decoder.keyed``), else 0.
        channel: how P is published (``privacy.publish``: format, quality); every number about P
            is measured on ``publish(P)``.
        config: the run's config, kept for reference (``load`` fills it).
    """

    def __init__(self, reid: nn.Module, generator: Optional[nn.Module] = None, decoder: Optional[nn.Module] = None,
                 *, norm_mean: Sequence[float], norm_std: Sequence[float], height: int, width: int,
                 desensitizer: str = "mosaic", desensitizer_params: Optional[Dict[str, Any]] = None,
                 key_channels: int = 0, channel: Optional[PublishChannel] = None,
                 config: Optional[Config] = None) -> None:
        super().__init__()
        self.reid, self.generator, self.decoder = reid, generator, decoder
        self.register_buffer("mean", torch.tensor(list(norm_mean), dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.register_buffer("std", torch.tensor(list(norm_std), dtype=torch.float32).view(1, 3, 1, 1),
                             persistent=False)
        self.height, self.width = int(height), int(width)
        self.desensitizer = desensitizer
        self.desensitizer_params = dict(desensitizer_params or {})
        self._desensitize = resolve_desensitizer(desensitizer, self.desensitizer_params)
        self.key_channels = int(key_channels)
        self.channel = channel if channel is not None else PublishChannel()
        self.config = config
        self.__key: Optional[bytes] = None  # in memory only: never in state_dict, configs or logs
        self._planes: Dict[Any, torch.Tensor] = {}

    # ------------------------------------------------------------------ what it is
    @property
    def mode(self) -> str:
        """``"baseline"`` (no G: P is the conventional M) or ``"learned"`` (P = G(O))."""
        return "baseline" if self.generator is None else "learned"

    @property
    def keyed(self) -> bool:
        """Whether G_R takes a key (``privacy.recovery: keyed``)."""
        return self.key_channels > 0

    @property
    def device(self) -> torch.device:
        return self.mean.device

    def set_key(self, key: bytes) -> None:
        """The secret key of a keyed decoder (read with ``keys.read_key_file``)."""
        if not self.keyed:
            raise ValueError("--key-file: this decoder is not keyed (privacy.decoder.keyed is false)")
        self.__key = bytes(key)
        self._planes = {}

    @property
    def has_key(self) -> bool:
        """Whether a key was given (``set_key``, or ``load(..., key=...)``)."""
        return self.__key is not None

    def key_planes(self, like: torch.Tensor) -> torch.Tensor:
        """The key's planes at ``like``'s image size, on its device."""
        if self.__key is None:
            raise ValueError("--key-file: the keyed decoder needs the secret key "
                             "(create one with 'torchreid-privacy keygen --output PATH')")
        size = (tuple(like.shape[-2:]), like.device)
        if size not in self._planes:
            self._planes[size] = keys.key_planes(self.__key, self.key_channels, *size[0]).to(like.device)
        return self._planes[size]

    # ------------------------------------------------------------------ image spaces
    def to01(self, x: torch.Tensor) -> torch.Tensor:
        """torchreid-normalized batch -> [0,1]."""
        return denormalize(x, self.mean, self.std)

    def normalize(self, x01: torch.Tensor) -> torch.Tensor:
        """[0,1] -> torchreid-normalized batch (C's input)."""
        return normalize(x01, self.mean, self.std)

    # ------------------------------------------------------------------ the three jobs
    def conventional(self, x01: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """M from the conventional desensitizer (mosaic/blur/noise) on [0,1] images."""
        params = dict(self.desensitizer_params)
        if generator is not None and "generator" in _accepted(self._desensitize):
            params["generator"] = generator
        return self._desensitize(x01, **params)

    @torch.no_grad()
    def anonymize(self, x01: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """P in [0,1]: G(O), or the conventional M for a baseline run."""
        if self.generator is None:
            return self.conventional(x01, generator)
        return from_gan(self.generator(to_gan(x01)))

    @torch.no_grad()
    def publish(self, x01: torch.Tensor) -> torch.Tensor:
        """[0,1] images as their published files decode (8-bit, ``channel``'s format and quality)."""
        return self.channel.publish(x01)

    @torch.no_grad()
    def protect(self, x01: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """P as published: ``publish(anonymize(x01))``, what a user's files hold and what is scored."""
        return self.publish(self.anonymize(x01, generator))

    @torch.no_grad()
    def recover(self, p01: torch.Tensor, wrong_key_generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """R in [0,1] from P in [0,1]: G_R(P), or G_R(P, key) when keyed. With
        ``wrong_key_generator`` a keyed decoder gets random wrong keys instead (what a thief sees)."""
        if self.decoder is None:
            raise ValueError("--checkpoint: this run has no recovery decoder (baseline mode, or sealed recovery: "
                             "recover sealed images with --key-file)")
        p = to_gan(p01)
        if not self.keyed:
            return from_gan(self.decoder(p))
        if wrong_key_generator is not None:
            key = keys.random_key_planes(p.shape[0], self.key_channels, *p.shape[-2:],
                                         generator=wrong_key_generator, device=p.device)
        else:
            key = self.key_planes(p)
        return from_gan(self.decoder(p, key))

    @torch.no_grad()
    def features(self, x01: torch.Tensor) -> torch.Tensor:
        """C's embedding (float32, on the model's device) of [0,1] images."""
        return self.embed(self.normalize(x01))

    @torch.no_grad()
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """C's embedding of an already normalized batch (what torchreid's loaders yield)."""
        out = self.reid(x)
        if isinstance(out, (tuple, list)):
            out = out[-1]
        return out.float()


def _accepted(fn: Any) -> Sequence[str]:
    import inspect

    return tuple(inspect.signature(fn).parameters)


def model_from_config(cfg: Config, reid: nn.Module, generator: Optional[nn.Module] = None,
                      decoder: Optional[nn.Module] = None) -> PrivacyModel:
    """A ``PrivacyModel`` over already built nets, with the config's normalization and M."""
    d = cfg.privacy.decoder
    keyed = decoder is not None and bool(d.keyed)
    return PrivacyModel(reid, generator, decoder, norm_mean=cfg.data.norm_mean, norm_std=cfg.data.norm_std,
                        height=cfg.data.height, width=cfg.data.width, desensitizer=cfg.privacy.desensitizer.name,
                        desensitizer_params=dict(cfg.privacy.desensitizer.params),
                        key_channels=d.key_channels if keyed else 0,
                        channel=PublishChannel.from_config(cfg.privacy.publish), config=cfg)


def load(path: str, key: Optional[bytes] = None, device: str | torch.device = "cpu",
         overrides: Sequence[str] = (), config_file: Optional[str] = None) -> PrivacyModel:
    """The ``PrivacyModel`` of a ``train`` checkpoint (a file, or a run directory: best, else last).

    ``key`` is the keyed decoder's secret (bytes, e.g. from ``keys.read_key_file``); without it a
    keyed model still anonymizes and embeds, but ``recover`` refuses. The checkpoint's own config
    (or ``config_file``) plus ``overrides`` decides the architecture. Returns the model in eval mode.
    """
    path = checkpoint.resolve(path)
    ckpt = checkpoint.load(path)
    cfg = checkpoint_config(ckpt, path, overrides, config_file)
    model = model_from_checkpoint(ckpt, cfg, path)
    if key is not None:
        model.set_key(key)
    return model.to(device).eval()


def checkpoint_config(ckpt: Dict[str, Any], path: str, overrides: Sequence[str] = (),
                      config_file: Optional[str] = None) -> Config:
    """The config a checkpoint was trained with (or ``config_file``), plus ``overrides``."""
    from torchreid_privacy.bridge import CheckpointError

    if not config_file and not ckpt.get("config"):
        raise CheckpointError(f"{path}: checkpoint carries no config; give --config-file")
    cfg = load_config(config_file, overrides, base=None if config_file else ckpt["config"])
    cfg.model.load_weights = ""  # the checkpoint holds the trained backbone
    return cfg


def model_from_checkpoint(ckpt: Dict[str, Any], cfg: Config, path: str) -> PrivacyModel:
    """Build C (and G, G_R) from ``cfg`` and load the checkpoint's weights into them."""
    from torchreid_privacy.bridge import CheckpointError

    nets = ckpt["models"]
    if "num_classes" not in ckpt:
        raise CheckpointError(f"{path}: checkpoint lacks num_classes; was it written by torchreid-privacy train?")
    reid = build_reid_model(cfg, int(ckpt["num_classes"]), loss="triplet", load_weights=False)
    checkpoint.load_state(reid, nets["model"], f"{path} [model]")
    generator = decoder = None
    if ckpt.get("mode", cfg.privacy.mode) != "baseline":
        sealed = cfg.privacy.recovery == "sealed"  # recovery is cryptographic: no G_R
        for name in ("generator",) if sealed else ("generator", "decoder"):
            if name not in nets:
                raise CheckpointError(f"{path}: checkpoint lacks network '{name}'")
        generator = build_generator(cfg)
        checkpoint.load_state(generator, nets["generator"], f"{path} [generator]")
        if not sealed:
            decoder = build_decoder(cfg)
            checkpoint.load_state(decoder, nets["decoder"], f"{path} [decoder]")
    return model_from_config(cfg, reid, generator, decoder)
