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

Any input size: a depth of ``num_downs`` stride-2 stages needs sides divisible by
``2**num_downs``. Rather than choosing the depth from the image size (which would make the
weights, the parameter count and every checkpoint depend on ``data.height``/``data.width``),
the generators keep their depth and pad the input inside ``forward`` to the next multiple
(reflect padding, replicate where a side is too short to reflect), then crop the output
back, so output size = input size. Sizes that already divide run exactly as before (no
padding, same weights, same outputs). With ``num_downs`` left ``None`` (config ``null``) the
name's default depth (``unet_128`` = 7) pads any size; an explicit ``num_downs`` must keep
``2**num_downs`` within both sides (more would be mostly padding), else :func:`check_fits`
names the config key, the size and the depths that fit.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Callable, List, Optional, Tuple

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


def check_input(x: torch.Tensor) -> None:
    if x.dim() != 4:
        raise ValueError(f"input must be a 4-D (N, C, H, W) batch, got shape {tuple(x.shape)}")


def fitting_depths(height: int, width: int, minimum: int = 1) -> List[int]:
    """Depths ``d >= minimum`` with ``2**d`` within both sides (an input at least one innermost cell)."""
    return list(range(minimum, min(height, width).bit_length()))  # bit_length - 1 = floor(log2)


def check_fits(net: nn.Module, height: int, width: int, key: str = "num_downs") -> None:
    """Raise when ``net``'s explicit ``num_downs`` cannot run at ``height`` x ``width``.

    ``key`` is the config key to name (``privacy.generator.num_downs`` or
    ``privacy.decoder.num_downs``); nets without a depth, or built with ``num_downs=None``
    (default depth, padded to any size), always fit.
    """
    depth = getattr(net, "num_downs", None)
    if depth is None or not getattr(net, "explicit_depth", False):
        return
    if 2 ** depth <= min(height, width):
        return
    fits = fitting_depths(height, width, getattr(net, "min_downs", 1))
    allowed = (f"{fits[0]}..{fits[-1]}" if len(fits) > 1 else str(fits[0])) if fits else "none"
    raise ValueError(f"{key}={depth} does not fit input size {height}x{width} (2**{depth}={2 ** depth} exceeds "
                     f"the shorter side {min(height, width)}); values that fit: {allowed}, or null for the "
                     f"default depth padded to fit")


def pad_to_multiple(x: torch.Tensor, multiple: int) -> Tuple[torch.Tensor, Callable[[torch.Tensor], torch.Tensor]]:
    """``(x padded to sides divisible by multiple, crop)``; ``crop`` cuts an output back to x's size.

    The padding is centred, reflect where every pad is shorter than its side, else replicate;
    a size that already divides is returned as it is (``crop`` is then the identity).
    """
    h, w = x.shape[-2:]
    ph, pw = -h % multiple, -w % multiple
    if not ph and not pw:
        return x, lambda y: y
    top, left = ph // 2, pw // 2
    pads = (left, pw - left, top, ph - top)
    mode = "reflect" if max(pads[:2]) < w and max(pads[2:]) < h else "replicate"
    return F.pad(x, pads, mode=mode), lambda y: y[..., top:top + h, left:left + w]


class PadToFit(nn.Module, ABC):
    """Base of the generators: run :meth:`body` on ``x`` padded to a multiple of
    ``2**num_downs`` and crop the output back to ``x``'s size."""

    num_downs: int
    explicit_depth: bool
    min_downs: int = 1

    @abstractmethod
    def body(self, x: torch.Tensor) -> torch.Tensor:
        """The network proper, on sides divisible by ``2**num_downs``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x)
        check_fits(self, *x.shape[-2:])
        padded, crop = pad_to_multiple(x, 2 ** self.num_downs)
        return crop(self.body(padded))


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


class UnetGenerator(PadToFit):
    """pix2pix ``UnetGenerator``: ``num_downs`` stride-2 levels, skip connections, Tanh output.

    Level ``i`` (0 = outermost) has ``ngf * min(2**i, 8)`` channels; pix2pix's dropout levels
    (the 8*ngf ones between level 4 and the innermost) get ``Dropout(0.5)`` when
    ``use_dropout``. Unlike pix2pix (which never goes below 5 levels), ``num_downs`` may be as
    small as 2 so tiny inputs work. Any input size runs (padded inside, see the module
    docstring); ``explicit_depth=False`` (a registered name's default depth) pads even inputs
    shorter than ``2**num_downs``.
    """

    min_downs = 2

    def __init__(self, in_channels: int = 3, out_channels: int = 3, num_downs: int = 7, ngf: int = 64,
                 norm: str = "batch", use_dropout: bool = False, explicit_depth: bool = True) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("ngf", ngf),
                            ("num_downs", num_downs)):
            check_positive(name, value)
        if num_downs < 2:
            raise ValueError(f"num_downs must be >= 2 (outermost + innermost level), got {num_downs}")
        self.num_downs, self.explicit_depth = num_downs, bool(explicit_depth)
        widths = [ngf * min(2 ** i, 8) for i in range(num_downs)]
        level: Optional[UnetLevel] = None
        for i in range(num_downs - 1, 0, -1):
            dropout = use_dropout and 4 <= i <= num_downs - 2
            level = UnetLevel(widths[i - 1], widths[i], level, norm, dropout)
        self.down_in = nn.Conv2d(in_channels, ngf, kernel_size=4, stride=2, padding=1, bias=conv_bias(norm))
        self.inner = level
        self.up_out = nn.ConvTranspose2d(2 * ngf, out_channels, kernel_size=4, stride=2, padding=1)
        init_pix2pix_weights(self)

    def body(self, x: torch.Tensor) -> torch.Tensor:
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


class ResnetGenerator(PadToFit):
    """pix2pix ``ResnetGenerator`` (Johnson et al.): 7x7 stem, ``num_downs`` stride-2 convs,
    ``n_blocks`` residual blocks, as many transposed convs back up, 7x7 conv + Tanh.
    Any input size runs (padded to a multiple of ``2**num_downs`` inside, then cropped)."""

    min_downs = 1

    def __init__(self, in_channels: int = 3, out_channels: int = 3, ngf: int = 64, n_blocks: int = 9,
                 num_downs: int = 2, norm: str = "batch", use_dropout: bool = False,
                 explicit_depth: bool = True) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("ngf", ngf),
                            ("num_downs", num_downs)):
            check_positive(name, value)
        if not isinstance(n_blocks, int) or n_blocks < 0:
            raise ValueError(f"n_blocks must be an int >= 0, got {n_blocks!r}")
        self.num_downs, self.explicit_depth = num_downs, bool(explicit_depth)
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

    def body(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


# ----------------------------------------------------------------------------- registered names
@ANONYMIZERS.register("unet_128")
def unet_128(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: Optional[int] = None,
             norm: str = "batch", use_dropout: bool = False) -> UnetGenerator:
    """pix2pix ``unet_128``: 7 downsamplings unless ``num_downs`` says otherwise (256x128 -> 2x1;
    other sizes are padded to a multiple of 128 inside and cropped back)."""
    return UnetGenerator(in_channels, out_channels, 7 if num_downs is None else num_downs, ngf, norm,
                         use_dropout, explicit_depth=num_downs is not None)


@ANONYMIZERS.register("unet_256")
def unet_256(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: Optional[int] = None,
             norm: str = "batch", use_dropout: bool = False) -> UnetGenerator:
    """pix2pix ``unet_256``: 8 downsamplings unless ``num_downs`` (sides padded to a multiple of 256)."""
    return UnetGenerator(in_channels, out_channels, 8 if num_downs is None else num_downs, ngf, norm,
                         use_dropout, explicit_depth=num_downs is not None)


@ANONYMIZERS.register("resnet_6blocks")
def resnet_6blocks(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: Optional[int] = None,
                   norm: str = "batch", use_dropout: bool = False) -> ResnetGenerator:
    """pix2pix ``resnet_6blocks``; ``num_downs`` (default 2) sets the stride-2 stages."""
    return ResnetGenerator(in_channels, out_channels, ngf, 6, 2 if num_downs is None else num_downs, norm,
                           use_dropout, explicit_depth=num_downs is not None)


@ANONYMIZERS.register("resnet_9blocks")
def resnet_9blocks(in_channels: int = 3, out_channels: int = 3, ngf: int = 64, num_downs: Optional[int] = None,
                   norm: str = "batch", use_dropout: bool = False) -> ResnetGenerator:
    """pix2pix ``resnet_9blocks``; ``num_downs`` (default 2) sets the stride-2 stages."""
    return ResnetGenerator(in_channels, out_channels, ngf, 9, 2 if num_downs is None else num_downs, norm,
                           use_dropout, explicit_depth=num_downs is not None)
