"""``residual_code``: an anonymizer whose output is the conventional M plus a bounded residual that
carries only a quantized global identity code.

Why: a U-Net G has skip paths from O's pixels into P, so P can keep what the mosaic erases (a
shirt's checks, a logo) and an attacker with leaked pairs inverts P better than M. Here

    P = clamp(M(O) + bound * tanh(render(quantize(encode(O)))), 0, 1)

``encode`` pools O into ``code_size`` numbers, ``quantize`` rounds each to ``code_levels`` levels
(straight-through), and ``render`` paints the code as a smooth low-resolution pattern upsampled
to the image size. No path carries O's pixels into P except M itself, so P holds at most what M
holds plus ``code_size * log2(code_levels)`` bits (64 by default), and the pattern is coarse and
smooth enough to survive JPEG. The code is trained as an identity embedding (``forward(x,
with_code=True)`` gives it to the engine's batch-hard triplet term, ``privacy.weights.code``), the
ReID terms teach C to read it from P, and the L1(P, M) and GAN terms keep the residual small.

``render="blocks"`` writes the code where JPEG keeps it: the residual is constant on the
``block`` x ``block`` cells of JPEG's own 8x8 grid, so in each published 8x8 block it moves only
the DC term (kept to within a quantizer step of 1-2 grey levels at quality 95). A ``reader``
(a small CNN on P) learns to read the code back from P *as published* (``privacy.weights.decode``,
whose gradient also reaches G, so G writes a code that survives the channel);
:func:`code_readback` measures how much does (symbols read back / written, in bits).

Built by ``models.nets.build_generator``, which passes the run's conventional desensitizer
(``privacy.desensitizer``) as ``desensitizer``; knobs go in ``privacy.generator.params``.
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchreid_privacy.registry import ANONYMIZERS, DESENSITIZERS

from .anonymizers import LEAKY_SLOPE, check_input, check_positive, init_pix2pix_weights
from .learned_mosaic import cell_grid, from_cells
from .norm_act import conv_bias, create_norm_act


RENDERS = ("smooth", "blocks")


def quantize(code: torch.Tensor, levels: int) -> torch.Tensor:
    """Values in [-1, 1] rounded to ``levels`` evenly spaced levels; straight-through gradient."""
    step = 2.0 / (levels - 1)
    q = torch.round((code + 1.0) / step) * step - 1.0
    return code + (q - code).detach()


class ResidualCodeAnonymizer(nn.Module):
    """P = M(O) + a bounded residual rendered from a quantized global code of O (GAN space in/out).

    ``carries_code``: the engine calls ``forward(o, with_code=True)`` in training and trains the code.

    Args:
        desensitizer: the conventional desensitizer on [0,1] batches (M).
        ngf: width of the encoder's first stage (doubling per stage) and of the renderer.
        norm: ``batch`` | ``instance`` | ``none``.
        code_size, code_levels: the code (``code_size * log2(code_levels)`` bits at most).
        bound: the residual's largest magnitude, on the [0,1] scale.
        grid: the pattern's resolution ``(rows, cols)`` before it is upsampled to the image.
        render: ``smooth`` (a conv renderer, bilinear upsampling) or ``blocks`` (one value per
            channel and ``block`` x ``block`` cell, ``grid`` cells resampled to the image's cells:
            JPEG's DC terms).
        block: the cell size of ``render="blocks"`` (8: JPEG's DCT block).
        reader: build the code reader that ``privacy.weights.decode`` trains (its weights learn
            from that loss only, not from P).
    """

    carries_code = True

    def __init__(self, desensitizer: Callable[[torch.Tensor], torch.Tensor], ngf: int = 64, norm: str = "batch",
                 code_size: int = 32, code_levels: int = 4, bound: float = 0.15,
                 grid: tuple = (8, 4), render: str = "smooth", block: int = 8, reader: bool = False) -> None:
        super().__init__()
        if render not in RENDERS:
            raise ValueError(f"privacy.generator.params.render: expected one of {', '.join(RENDERS)}, got {render!r}")
        check_positive("block", block)
        for name, value in (("ngf", ngf), ("code_size", code_size)):
            check_positive(name, value)
        if not isinstance(code_levels, int) or code_levels < 2:
            raise ValueError(f"privacy.generator.params.code_levels: expected an integer >= 2, got {code_levels!r}")
        if not 0.0 < float(bound) <= 1.0:
            raise ValueError(f"privacy.generator.params.bound: expected a value in (0, 1], got {bound!r}")
        if len(grid) != 2 or min(grid) < 1:
            raise ValueError(f"privacy.generator.params.grid: expected [rows, cols] >= 1, got {grid!r}")
        self.desensitizer = desensitizer
        self.code_size, self.code_levels, self.bound = int(code_size), int(code_levels), float(bound)
        self.grid = (int(grid[0]), int(grid[1]))
        bias = conv_bias(norm)
        widths = [ngf, 2 * ngf, 4 * ngf, 8 * ngf]
        layers: list = [nn.Conv2d(3, widths[0], 4, 2, 1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=bias), create_norm_act(norm, cout, "leaky_relu", LEAKY_SLOPE)]
        self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[-1], code_size))
        self.render_kind, self.block = render, int(block)
        self.cell_map = self.seed_map = self.render = self.reader = None
        if render == "blocks":
            self.cell_map = nn.Linear(code_size, 3 * self.grid[0] * self.grid[1])
        else:
            self.seed_map = nn.Linear(code_size, widths[2] * self.grid[0] * self.grid[1])
            self.render = nn.Sequential(
                nn.ReLU(inplace=True), nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(widths[2], widths[1], 3, 1, 1, bias=bias), create_norm_act(norm, widths[1], "relu"),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(widths[1], widths[0], 3, 1, 1, bias=bias), create_norm_act(norm, widths[0], "relu"),
                nn.Conv2d(widths[0], 3, 3, 1, 1))
        if reader:  # reads the code back from P (GAN space) as published: the decoding loss's other half
            layers = [nn.Conv2d(3, widths[0], 4, 2, 1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
            for cin, cout in zip(widths[:3], widths[1:3]):
                layers += [nn.Conv2d(cin, cout, 4, 2, 1, bias=bias),
                           create_norm_act(norm, cout, "leaky_relu", LEAKY_SLOPE)]
            self.reader = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                        nn.Linear(widths[2], code_size))
        init_pix2pix_weights(self)  # N(0, 0.02) as every generator: the residual starts near zero (P = M)
        if self.cell_map is not None:
            # blocks: the code is painted at full amplitude from the first step (unit-variance
            # cells before tanh), so C can learn to read it at once instead of waiting for G to grow it
            nn.init.normal_(self.cell_map.weight, 0.0, 1.0 / math.sqrt(code_size))
            nn.init.zeros_(self.cell_map.bias)

    @property
    def code_bits(self) -> float:
        """The most P can carry about O beyond M, in bits."""
        return self.code_size * math.log2(self.code_levels)

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The quantized code of GAN-space images ``x`` (N, code_size)."""
        return quantize(torch.tanh(self.encoder(x)), self.code_levels)

    def residual(self, code: torch.Tensor, size: tuple) -> torch.Tensor:
        """The bounded residual (N, 3, H, W) on the [0,1] scale that ``code`` paints."""
        if self.cell_map is not None:  # one value per channel and block x block cell
            cells = self.cell_map(code).view(code.shape[0], 3, *self.grid)
            if cell_grid(size, self.block) != self.grid:
                cells = F.interpolate(cells, size=cell_grid(size, self.block), mode="nearest")
            return self.bound * torch.tanh(from_cells(cells, self.block, size))
        seed = self.seed_map(code).view(code.shape[0], -1, *self.grid)
        pattern = F.interpolate(self.render(seed), size=size, mode="bilinear", align_corners=False)
        return self.bound * torch.tanh(pattern)

    def read_code(self, p: torch.Tensor) -> torch.Tensor:
        """The code as the reader reads it from GAN-space P (N, code_size), in [-1, 1]."""
        if self.reader is None:
            raise ValueError("privacy.weights.decode: this residual_code has no reader; set "
                             "privacy.generator.params.reader: true")
        return torch.tanh(self.reader(p))

    def decode_loss(self, p_published: torch.Tensor, raw_code: torch.Tensor) -> torch.Tensor:
        """MSE between the code read back from P as published and the quantized code G wrote."""
        return F.mse_loss(self.read_code(p_published), quantize(raw_code, self.code_levels).detach())

    def forward(self, x: torch.Tensor, with_code: bool = False):
        """P in GAN space; with ``with_code``, ``(P, code before quantization)``."""
        check_input(x)
        m01 = self.desensitizer(((x + 1.0) * 0.5).clamp(0.0, 1.0))
        raw = torch.tanh(self.encoder(x))
        p01 = (m01 + self.residual(quantize(raw, self.code_levels), tuple(x.shape[-2:]))).clamp(0.0, 1.0)
        p = p01 * 2.0 - 1.0
        return (p, raw) if with_code else p


@ANONYMIZERS.register("residual_code")
def residual_code(desensitizer: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, ngf: int = 64,
                  num_downs: Optional[int] = None, norm: str = "batch", code_size: int = 32, code_levels: int = 4,
                  bound: float = 0.15, grid: tuple = (8, 4), render: str = "smooth",
                  block: int = 8, reader: bool = False) -> ResidualCodeAnonymizer:
    """M plus a bounded residual carrying a ``code_size`` x ``code_levels``-level code. ``desensitizer``
    defaults to the registered mosaic with its own defaults; ``num_downs`` is not used (the encoder
    pools globally at any size)."""
    if desensitizer is None:
        desensitizer = DESENSITIZERS.get("mosaic")
    return ResidualCodeAnonymizer(desensitizer, ngf, norm, code_size, code_levels, bound, tuple(grid), render, block,
                                  reader)


def symbols(code: torch.Tensor, levels: int) -> torch.Tensor:
    """The level index (0..levels-1) of each value of a code in [-1, 1]."""
    return torch.round((code.clamp(-1.0, 1.0) + 1.0) * (levels - 1) / 2.0).long()


@torch.no_grad()
def code_readback(gen: ResidualCodeAnonymizer, o: torch.Tensor, p_published: torch.Tensor) -> Dict[str, float]:
    """How much of the code written into P survives publication: the share of symbols the reader
    reads back from P as published (GAN space), and the bits that makes (read back / written)."""
    written = symbols(gen.code(o), gen.code_levels)
    read = symbols(gen.read_code(p_published), gen.code_levels)
    share = float((written == read).float().mean())
    return {"symbols_read": share, "bits_written": gen.code_bits, "bits_read": share * gen.code_bits}
