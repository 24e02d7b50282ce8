"""Mosaic: every ``block`` x ``block`` cell filled with its top-left pixel, in one gather pass.

The torch reference (``plugins/desensitizers.mosaic``) builds the output from broadcast
views in two copies; the kernel reads each output pixel's cell corner straight from the
input (the corners of a row of cells sit in cache) and writes the output once. The same
kernel, with ``NORMALIZED``, is the mosaic branch of ``desensitize_normalized``: it
de-normalizes and clamps the corner, then re-normalizes, so a normalized training batch is
read once and M written once.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from torchreid_privacy.registry import DESENSITIZERS

from ._common import check_images, check_number, flat_offsets, launch_desensitizer
from .dispatch import tl, triton, use_triton


@triton.jit
def _mosaic_kernel(x_ptr, out_ptr, mean_ptr, std_ptr, inv_std_ptr, shift_ptr,
                   numel, C, H, W, sxn, sxc, sxh, sxw,
                   CELL: tl.constexpr, NORMALIZED: tl.constexpr, INT64: tl.constexpr,
                   BLOCK: tl.constexpr):
    offs, mask = flat_offsets(numel, BLOCK, INT64)
    w = offs % W
    rest = offs // W
    h = rest % H
    rest = rest // H
    c = rest % C
    n = rest // C
    src = n * sxn + c * sxc + (h // CELL * CELL) * sxh + (w // CELL * CELL) * sxw
    v = tl.load(x_ptr + src, mask=mask, other=0.0)
    if NORMALIZED:
        mean = tl.load(mean_ptr + c, mask=mask, other=0.0)
        std = tl.load(std_ptr + c, mask=mask, other=1.0)
        raw = tl.minimum(tl.maximum(v.to(tl.float32) * std + mean, 0.0), 1.0)
        v = raw * tl.load(inv_std_ptr + c, mask=mask, other=1.0) + tl.load(shift_ptr + c, mask=mask, other=0.0)
    tl.store(out_ptr + offs, v, mask=mask)


def mosaic_launch(x: Tensor, block: int, consts: Optional[Tuple[Tensor, Tensor, Tensor, Tensor]] = None) -> Tensor:
    """Launch the kernel; ``consts`` = ``(mean, std, 1/std, -mean/std)`` selects the normalized form."""
    return launch_desensitizer(_mosaic_kernel, x, consts, CELL=int(block))


def mosaic_torch(x: Tensor, block: int = 24) -> Tensor:
    """The reference: the registered ``mosaic`` desensitizer."""
    return DESENSITIZERS.get("mosaic")(x, block=block)


def mosaic(x: Tensor, block: int = 24, *, backend: Optional[str] = None) -> Tensor:
    """Mosaic an (N, C, H, W) batch of [0, 1] images with ``block`` x ``block`` cells.

    Not differentiable (the result is a training target); any strides accepted.
    """
    check_images(x)
    check_number(block, "block", 1, integral=True)
    if use_triton(backend, x):
        return mosaic_launch(x, block)
    return mosaic_torch(x, block)


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """Inputs for the generic kernel tests: ``(args, kwargs)``."""
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(shape, generator=gen).to(device=device, dtype=dtype)
    return (x,), {"block": 8}
