"""Mosaic: every ``block`` x ``block`` cell filled with its top-left pixel.

The torch reference builds the output from broadcast views in two copies; the kernel reads
each output pixel's cell corner straight from the input (the corners of a row of cells sit
in cache) and writes the output once. Both are exact (a copy of input values).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._common import check_images, check_number, flat_offsets, launch_elementwise
from .dispatch import backend_for, register_op, tl, triton

OP = register_op("mosaic")


@triton.jit
def _mosaic_kernel(x_ptr, out_ptr, numel, C, H, W, sxn, sxc, sxh, sxw,
                   CELL: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask = flat_offsets(numel, BLOCK, INT64)
    w = offs % W
    rest = offs // W
    h = rest % H
    rest = rest // H
    c = rest % C
    n = rest // C
    src = n * sxn + c * sxc + (h // CELL * CELL) * sxh + (w // CELL * CELL) * sxw
    tl.store(out_ptr + offs, tl.load(x_ptr + src, mask=mask, other=0.0), mask=mask)


def mosaic_launch(x: Tensor, block: int) -> Tensor:
    """Launch the kernel (any strides in, contiguous out)."""
    return launch_elementwise(_mosaic_kernel, x, CELL=int(block))


def mosaic_torch(images: Tensor, block: int = 24) -> Tensor:
    """The reference: cells anchored at the top-left corner, partial right/bottom cells filled
    the same way. Built from broadcast views, no index tensors: the cell corners are widened
    into one row per cell row (1/block of the output), then each row is copied ``block``
    times, so the big copy moves whole contiguous rows."""
    height, width = images.shape[-2:]
    corners = images[..., ::block, ::block]
    cell_rows, cell_cols = corners.shape[-2:]
    wide = images.new_empty((*corners.shape[:-1], cell_cols, block))
    wide.copy_(corners[..., None].expand(wide.shape))
    wide = wide.flatten(-2)[..., :width]
    out = torch.empty_like(images, memory_format=torch.contiguous_format)
    full = height // block
    if full:
        whole_cells = out[..., : full * block, :].unflatten(-2, (full, block))
        whole_cells.copy_(wide[..., :full, None, :].expand(whole_cells.shape))
    if full * block < height:  # the partial bottom row of cells
        bottom = out[..., full * block :, :]
        bottom.copy_(wide[..., cell_rows - 1 : cell_rows, :].expand(bottom.shape))
    return out


def mosaic(x: Tensor, block: int = 24, *, backend: Optional[str] = None) -> Tensor:
    """Mosaic an (N, C, H, W) batch of [0, 1] images with ``block`` x ``block`` cells.

    Not differentiable (the result is a training target); any strides accepted, the result
    is contiguous.
    """
    check_images(x)
    check_number(block, "block", 1, integral=True)
    if backend_for(OP, backend) == "triton":
        return mosaic_launch(x, block)
    return mosaic_torch(x, block)


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """Inputs for the generic kernel tests: ``(args, kwargs)``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen).to(device=device, dtype=dtype)
    return (x,), {"block": 8}
