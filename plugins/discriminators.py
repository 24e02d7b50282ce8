"""Conditional PatchGAN discriminators (pix2pix) for D1 on (O, P) and D2 on (P, R).

``forward(cond, img)`` concatenates the condition and the image on the channel axis
(3 + 3 = 6 channels by default) and returns raw logits, one per patch; the GAN loss applies
the sigmoid (``GANLoss('vanilla')`` is BCE-with-logits).
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Tuple

import torch
import torch.nn as nn

from torchreid_privacy.registry import DISCRIMINATORS

from .anonymizers import LEAKY_SLOPE, check_positive, init_pix2pix_weights
from .norm_act import act_module, conv_bias, create_norm_act


class ConditionalDiscriminator(nn.Module, ABC):
    """Base: checks and concatenates ``(cond, img)``, then runs ``self.model``."""

    input_nc: int
    model: nn.Module

    def forward(self, cond: torch.Tensor, img: torch.Tensor) -> torch.Tensor:
        if cond.dim() != 4 or img.dim() != 4:
            raise ValueError(f"cond and img must be 4-D (N, C, H, W), got {tuple(cond.shape)} and "
                             f"{tuple(img.shape)}")
        if cond.shape[0] != img.shape[0] or cond.shape[-2:] != img.shape[-2:]:
            raise ValueError(f"cond and img must share batch and spatial size, got {tuple(cond.shape)} and "
                             f"{tuple(img.shape)}")
        if cond.shape[1] + img.shape[1] != self.input_nc:
            raise ValueError(f"input_nc={self.input_nc} but cond + img have "
                             f"{cond.shape[1]} + {img.shape[1]} channels")
        self.check_size(img.shape[-2], img.shape[-1])
        return self.model(torch.cat([cond, img], dim=1))

    def check_size(self, height: int, width: int) -> None:
        out_h, out_w = self.output_shape(height, width)
        if out_h < 1 or out_w < 1:
            fits = [n for n in range(1, getattr(self, "n_layers", 0) + 1)
                    if min(NLayerDiscriminator.patch_side(height, n), NLayerDiscriminator.patch_side(width, n)) >= 1]
            hint = (f"use fewer layers (privacy.discriminator.name n_layers with privacy.discriminator.n_layers "
                    f"in 1..{fits[-1]})" if fits else "use a larger input or the 'pixel' discriminator")
            raise ValueError(f"input size {height}x{width} is too small for this discriminator "
                             f"(patch map would be {out_h}x{out_w}); {hint}")

    @abstractmethod
    def output_shape(self, height: int, width: int) -> Tuple[int, int]:
        """Spatial size of the patch logit map for an input of ``height`` x ``width``."""


class NLayerDiscriminator(ConditionalDiscriminator):
    """pix2pix PatchGAN: ``n_layers`` stride-2 4x4 convs, then two stride-1 4x4 convs.

    With ``n_layers=3`` each logit sees a 70x70 receptive field; a 256x128 input gives a
    30x14 patch map, 64x32 gives 6x2.
    """

    def __init__(self, input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> None:
        super().__init__()
        for name, value in (("input_nc", input_nc), ("ndf", ndf), ("n_layers", n_layers)):
            check_positive(name, value)
        self.input_nc, self.n_layers = input_nc, n_layers
        bias = conv_bias(norm)
        layers = [nn.Conv2d(input_nc, ndf, kernel_size=4, stride=2, padding=1),
                  act_module("leaky_relu", LEAKY_SLOPE)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(ndf * prev, ndf * mult, kernel_size=4, stride=stride, padding=1, bias=bias),
                       create_norm_act(norm, ndf * mult, "leaky_relu", LEAKY_SLOPE)]
        layers.append(nn.Conv2d(ndf * mult, 1, kernel_size=4, stride=1, padding=1))
        self.model = nn.Sequential(*layers)
        init_pix2pix_weights(self)

    @staticmethod
    def patch_side(side: int, n_layers: int) -> int:
        """Patch-map length along one axis of ``side`` pixels (any size, odd ones included)."""
        for _ in range(n_layers):
            side = (side - 2) // 2 + 1  # 4x4, stride 2, pad 1
        return max(side - 2, 0)  # two 4x4, stride 1, pad 1 convs each lose one pixel

    def output_shape(self, height: int, width: int) -> Tuple[int, int]:
        return self.patch_side(height, self.n_layers), self.patch_side(width, self.n_layers)


class PixelDiscriminator(ConditionalDiscriminator):
    """pix2pix PixelGAN: 1x1 convs only, one logit per pixel."""

    def __init__(self, input_nc: int = 6, ndf: int = 64, norm: str = "batch") -> None:
        super().__init__()
        for name, value in (("input_nc", input_nc), ("ndf", ndf)):
            check_positive(name, value)
        self.input_nc = input_nc
        bias = conv_bias(norm)
        self.model = nn.Sequential(
            nn.Conv2d(input_nc, ndf, kernel_size=1),
            act_module("leaky_relu", LEAKY_SLOPE),
            nn.Conv2d(ndf, 2 * ndf, kernel_size=1, bias=bias),
            create_norm_act(norm, 2 * ndf, "leaky_relu", LEAKY_SLOPE),
            nn.Conv2d(2 * ndf, 1, kernel_size=1, bias=bias),
        )
        init_pix2pix_weights(self)

    def output_shape(self, height: int, width: int) -> Tuple[int, int]:
        return height, width


def _fixed_depth(name: str, n_layers: int) -> None:
    # the config passes n_layers to every discriminator; only 'n_layers' may change it
    if n_layers != 3:
        raise ValueError(f"n_layers={n_layers} has no effect on discriminator '{name}' (fixed depth); "
                         "use the 'n_layers' discriminator to change the depth")


@DISCRIMINATORS.register("basic")
def basic(input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> NLayerDiscriminator:
    """pix2pix ``basic``: the 70x70 PatchGAN (3 layers)."""
    _fixed_depth("basic", n_layers)
    return NLayerDiscriminator(input_nc, ndf, 3, norm)


@DISCRIMINATORS.register("n_layers")
def n_layers(input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> NLayerDiscriminator:
    """PatchGAN with ``n_layers`` stride-2 stages (a larger receptive field per logit)."""
    return NLayerDiscriminator(input_nc, ndf, n_layers, norm)


@DISCRIMINATORS.register("pixel")
def pixel(input_nc: int = 6, ndf: int = 64, n_layers: int = 3, norm: str = "batch") -> PixelDiscriminator:
    """pix2pix ``pixel``: a 1x1 PixelGAN (no spatial context, colour statistics only)."""
    _fixed_depth("pixel", n_layers)
    return PixelDiscriminator(input_nc, ndf, norm)
