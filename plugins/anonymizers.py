"""pix2pix generators for the anonymization encoder G and the recovery decoder G_R.

Images in and out are in GAN space, [-1, 1]. Every BatchNorm that is followed by an
activation is a ``BatchNormAct2d``, so a fused kernel can take over the pair.

U-Net faithfulness note: pix2pix's down path is ``LeakyReLU(inplace) -> conv -> BN`` and each
level returns ``cat([x, inner(x)])``. Because that LeakyReLU runs *in place* on ``x`` before
the concatenation reads it, the skip connection of pix2pix actually carries ``LeakyReLU(x)``
(a known quirk, kept here because it is the network the paper trained). That makes
``BN -> LeakyReLU`` a real adjacent pair, and ``BN -> ReLU`` on the up path is one too (the
parent's ReLU distributes over the concatenation). ``tests/test_anonymizers.py`` checks
the restructured network against a literal pix2pix-order forward.
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchreid_privacy.registry import ANONYMIZERS

from .norm_act import conv_bias, create_norm_act

LEAKY_SLOPE = 0.2


def init_pix2pix_weights(net: nn.Module, gain: float = 0.02) -> nn.Module:
    """pix2pix ``init_weights(net, 'normal', gain)``: conv/linear N(0, gain), BN weight N(1, gain)."""
    for m in net.modules():
        if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)):
            nn.init.normal_(m.weight, 0.0, gain)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.modules.batchnorm._BatchNorm) and m.affine:
            nn.init.normal_(m.weight, 1.0, gain)
            nn.init.zeros_(m.bias)
    return net


def check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_divisible(x: torch.Tensor, depth_name: str, depth: int) -> None:
    """Raise when ``x``'s spatial size cannot be halved ``depth`` times and doubled back."""
    if x.dim() != 4:
        raise ValueError(f"input must be a 4-D (N, C, H, W) batch, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    step = 2 ** depth
    if h % step or w % step:
        raise ValueError(f"{depth_name}={depth} needs input height and width divisible by {step}; "
                         f"got input size {h}x{w}")


class UnetLevel(nn.Module):
    """One U-Net level below the outermost; its input is already LeakyReLU-activated.

    down: conv (4x4, stride 2) -> BN+LeakyReLU (no norm at the innermost level);
    up: ReLU -> transposed conv -> BN+ReLU; output ``cat([ReLU(input), up])``, i.e. what the
    parent's ReLU would see in pix2pix.
    """

    def __init__(self, outer_nc: int, inner_nc: int, submodule: Optional["UnetLevel"] = None,
                 norm: str = "batch", use_dropout: bool = False) -> None:
        super().__init__()
        bias = conv_bias(norm)
        innermost = submodule is None
        self.down = nn.Conv2d(outer_nc, inner_nc, kernel_size=4, stride=2, padding=1, bias=bias)
        self.down_norm = None if innermost else create_norm_act(norm, inner_nc, "leaky_relu", LEAKY_SLOPE)
        self.submodule = submodule
        self.up = nn.ConvTranspose2d(inner_nc if innermost else 2 * inner_nc, outer_nc,
                                     kernel_size=4, stride=2, padding=1, bias=bias)
        self.up_norm = create_norm_act(norm, outer_nc, "relu")
        # dropout commutes with the ReLU before it (it only scales by >= 0)
        self.dropout = nn.Dropout(0.5) if use_dropout else None

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        d = self.down(h)
        if self.submodule is None:
            inner = F.relu(d, inplace=True)
        else:
            inner = self.submodule(self.down_norm(d))
        u = self.up_norm(self.up(inner))
        if self.dropout is not None:
            u = self.dropout(u)
        return torch.cat([F.relu(h), u], dim=1)


class UnetGenerator(nn.Module):
    """pix2pix ``UnetGenerator``: ``num_downs`` stride-2 levels, skip connections, Tanh output.

    Level ``i`` (0 = outermost) has ``ngf * min(2**i, 8)`` channels; pix2pix's dropout levels
    (the 8*ngf ones between level 4 and the innermost) get ``Dropout(0.5)`` when
    ``use_dropout``. Unlike pix2pix (which never goes below 5 levels), ``num_downs`` may be as
    small as 2 so tiny inputs work.
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 3, num_downs: int = 7, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = False) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("ngf", ngf),
                            ("num_downs", num_downs)):
            check_positive(name, value)
        if num_downs < 2:
            raise ValueError(f"num_downs must be >= 2 (outermost + innermost level), got {num_downs}")
        self.num_downs = num_downs
        widths = [ngf * min(2 ** i, 8) for i in range(num_downs)]
        level: Optional[UnetLevel] = None
        for i in range(num_downs - 1, 0, -1):
            dropout = use_dropout and 4 <= i <= num_downs - 2
            level = UnetLevel(widths[i - 1], widths[i], level, norm, dropout)
        self.down_in = nn.Conv2d(in_channels, ngf, kernel_size=4, stride=2, padding=1, bias=conv_bias(norm))
        self.inner = level
        self.up_out = nn.ConvTranspose2d(2 * ngf, out_channels, kernel_size=4, stride=2, padding=1)
        init_pix2pix_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, "num_downs", self.num_downs)
        h = F.leaky_relu(self.down_in(x), LEAKY_SLOPE, inplace=True)
        return torch.tanh(self.up_out(self.inner(h)))


class ResnetBlock(nn.Module):
    """``x + (pad, conv3, BN+ReLU, [dropout], pad, conv3, BN)(x)`` with reflection padding."""

    def __init__(self, dim: int, norm: str = "batch", use_dropout: bool = False) -> None:
        super().__init__()
        bias = conv_bias(norm)
        layers = [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=bias),
                  create_norm_act(norm, dim, "relu")]
        if use_dropout:
            layers.append(nn.Dropout(0.5))
        layers += [nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, kernel_size=3, bias=bias),
                   create_norm_act(norm, dim, "identity")]
        self.block = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


class ResnetGenerator(nn.Module):
    """pix2pix ``ResnetGenerator`` (Johnson et al.): 7x7 stem, ``num_downs`` stride-2 convs,
    ``n_blocks`` residual blocks, as many transposed convs back up, 7x7 conv + Tanh."""

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 num_downs: int = 2, norm: str = "batch", use_dropout: bool = False) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("ngf", ngf),
                            ("num_downs", num_downs)):
            check_positive(name, value)
        if not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"n_blocks must be an int >= 0, got {n_blocks!r}")
        self.num_downs = num_downs
        bias = conv_bias(norm)
        layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_channels, ngf, kernel_size=7, bias=bias),
                  create_norm_act(norm, ngf, "relu")]
        for i in range(num_downs):
            c = ngf * 2 ** i
            layers += [nn.Conv2d(c, 2 * c, kernel_size=3, stride=2, padding=1, bias=bias),
                       create_norm_act(norm, 2 * c, "relu")]
        width = ngf * 2 ** num_downs
        layers += [ResnetBlock(width, norm, use_dropout) for _ in range(n_blocks)]
        for i in range(num_downs, 0, -1):
            c = ngf * 2 ** i
            layers += [nn.ConvTranspose2d(c, c // 2, kernel_size=3, stride=2, padding=1, output_padding=1,
                                          bias=bias),
                       create_norm_act(norm, c // 2, "relu")]
        layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_channels, kernel_size=7), nn.Tanh()]
        self.model = nn.Sequential(*layers)
        init_pix2pix_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_divisible(x, "num_downs", self.num_downs)
        return self.model(x)


# ----------------------------------------------------------------------------- registered names
@ANONYMIZERS.register("unet_128")
def unet_128(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: Optional[int] = None,
             norm: str = "batch", use_dropout: bool = False) -> UnetGenerator:
    """pix2pix ``unet_128``: 7 downsamplings unless ``num_downs`` says otherwise (256x128 -> 2x1)."""
    return UnetGenerator(in_channels, out_channels, 7 if num_downs is None else num_downs, ngf, norm,
                         use_dropout)


@ANONYMIZERS.register("unet_256")
def unet_256(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: Optional[int] = None,
             norm: str = "batch", use_dropout: bool = False) -> UnetGenerator:
    """pix2pix ``unet_256``: 8 downsamplings (needs sides divisible by 256) unless ``num_downs``."""
    return UnetGenerator(in_channels, out_channels, 8 if num_downs is None else num_downs, ngf, norm,
                         use_dropout)


@ANONYMIZERS.register("resnet_6blocks")
def resnet_6blocks(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: Optional[int] = None,
                   norm: str = "batch", use_dropout: bool = False) -> ResnetGenerator:
    """pix2pix ``resnet_6blocks``; ``num_downs`` (default 2) sets the stride-2 stages."""
    return ResnetGenerator(in_channels, out_channels, ngf, 6, 2 if num_downs is None else num_downs, norm,
                           use_dropout)


@ANONYMIZERS.register("resnet_9blocks")
def resnet_9blocks(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: Optional[int] = None,
                   norm: str = "batch", use_dropout: bool = False) -> ResnetGenerator:
    """pix2pix ``resnet_9blocks``; ``num_downs`` (default 2) sets the stride-2 stages."""
    return ResnetGenerator(in_channels, out_channels, ngf, 9, 2 if num_downs is None else num_downs, norm,
                           use_dropout)
