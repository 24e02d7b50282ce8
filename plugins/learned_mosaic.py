"""``learned_mosaic``: a mosaic whose block colours G chooses.

Why: the conventional mosaic M keeps one colour per block (the block's top-left pixel), which
fixes how much of O it can leak; a U-Net G has pixel paths and leaks more. Here P stays in M's
family, constant on exactly M's grid with as many free values as M (3 per block), but each
block's colour is M's plus a bounded shift that a CNN computes from the whole of O:

    P = cells(M(O) + bound * tanh(shift(O)))     (constant on every block x block cell)

so the colours can be chosen for identity (a shirt's pattern summarised, a bag's colour kept
where the top-left pixel missed it) while P cannot hold anything finer than the grid.

Built by ``models.nets.build_generator`` with the run's conventional desensitizer; its block
comes from that desensitizer (``privacy.desensitizer.params.block``) unless ``block`` is given.
"""
from __future__ import annotations

import functools
import inspect
from typing import Callable, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchreid_privacy.registry import ANONYMIZERS, DESENSITIZERS

from .anonymizers import LEAKY_SLOPE, check_input, check_positive, init_pix2pix_weights
from .norm_act import conv_bias, create_norm_act


def cell_grid(size: tuple, block: int) -> tuple:
    """(rows, cols) of ``block`` x ``block`` cells covering ``size`` (partial cells included)."""
    return -(-size[0] // block), -(-size[1] // block)


def to_cells(x: torch.Tensor, block: int) -> torch.Tensor:
    """Each cell's top-left pixel (N, C, rows, cols): the mosaic's own sample of the cell."""
    return x[..., ::block, ::block]


def from_cells(cells: torch.Tensor, block: int, size: tuple) -> torch.Tensor:
    """Cells painted back to a ``size`` image, constant on each cell."""
    return cells.repeat_interleave(block, 2).repeat_interleave(block, 3)[..., :size[0], :size[1]]


class LearnedMosaicAnonymizer(nn.Module):
    """P constant on M's cells; each cell's colour is M's plus a bounded learned shift (GAN space).

    Args:
        desensitizer: the conventional mosaic on [0,1] batches (M).
        block: the cell size (M's block).
        ngf: width of the shift network's first stage (doubling per stage).
        norm: ``batch`` | ``instance`` | ``none``.
        bound: the largest shift of a cell's colour on the [0,1] scale (1: any colour).
    """

    def __init__(self, desensitizer: Callable[[torch.Tensor], torch.Tensor], block: int, ngf: int = 64,
                 norm: str = "batch", bound: float = 0.25) -> None:
        super().__init__()
        for name, value in (("block", block), ("ngf", ngf)):
            check_positive(name, value)
        if not 0.0 < float(bound) <= 1.0:
            raise ValueError(f"privacy.generator.params.bound: expected a value in (0, 1], got {bound!r}")
        self.desensitizer, self.block, self.bound = desensitizer, int(block), float(bound)
        bias = conv_bias(norm)
        widths = [ngf, 2 * ngf, 4 * ngf]
        layers: list = [nn.Conv2d(3, widths[0], 3, 1, 1), nn.LeakyReLU(LEAKY_SLOPE, inplace=True)]
        for cin, cout in zip(widths, widths[1:]):
            layers += [nn.Conv2d(cin, cout, 3, 1, 1, bias=bias), create_norm_act(norm, cout, "leaky_relu", LEAKY_SLOPE)]
        self.features = nn.Sequential(*layers)
        # per cell: its pooled features and the image's (global context: the identity as a whole)
        self.head = nn.Sequential(nn.Conv2d(2 * widths[-1], widths[1], 1, bias=bias),
                                  create_norm_act(norm, widths[1], "leaky_relu", LEAKY_SLOPE),
                                  nn.Conv2d(widths[1], 3, 1))
        init_pix2pix_weights(self)  # N(0, 0.02): the shift starts near zero (P = M)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """P in GAN space, constant on each of M's cells."""
        check_input(x)
        size = tuple(x.shape[-2:])
        m01 = self.desensitizer(((x + 1.0) * 0.5).clamp(0.0, 1.0))
        f = self.features(x)
        local = F.adaptive_avg_pool2d(f, cell_grid(size, self.block))
        context = f.mean((2, 3), keepdim=True).expand_as(local)
        shift = self.bound * torch.tanh(self.head(torch.cat([local, context], 1)))
        cells = (to_cells(m01, self.block) + shift).clamp(0.0, 1.0)
        return from_cells(cells, self.block, size) * 2.0 - 1.0


@ANONYMIZERS.register("learned_mosaic")
def learned_mosaic(desensitizer: Optional[Callable[[torch.Tensor], torch.Tensor]] = None, ngf: int = 64,
                   num_downs: Optional[int] = None, norm: str = "batch", block: Optional[int] = None,
                   bound: float = 0.25) -> LearnedMosaicAnonymizer:
    """A mosaic on the desensitizer's grid whose colours G chooses (within ``bound`` of M's).
    ``block`` defaults to the desensitizer's own (``privacy.desensitizer.params.block``, else the
    mosaic's default); ``num_downs`` is not used."""
    if desensitizer is None:  # the registered mosaic at its own default block
        desensitizer = DESENSITIZERS.get("mosaic")
        block = block or inspect.signature(desensitizer).parameters["block"].default
        desensitizer = functools.partial(desensitizer, block=block)
    if block is None:
        block = getattr(desensitizer, "keywords", {}).get("block")
    if block is None:
        raise ValueError("privacy.generator.params.block: the desensitizer has no block size "
                         "(learned_mosaic needs privacy.desensitizer mosaic or an explicit block)")
    return LearnedMosaicAnonymizer(desensitizer, int(block), ngf, norm, bound)
