"""Built-in desensitizers: the conventional privacy supervision M made from a raw batch O.

Each takes an (N, C, H, W) floating tensor in [0, 1] on any device and returns a new tensor
of the same shape, dtype and device. All work on the whole batch at once (the training
engine calls them on every batch, on the GPU); they reproduce the PIL operations the paper
applied image by image, so M matches the paper's supervision. Input checking lives in
:func:`torchreid_privacy.desensitize`, which is the public entry point.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from torchreid_privacy.registry import DESENSITIZERS

# PIL's GaussianBlur approximates the Gaussian with this many box blurs per axis.
_BOX_PASSES = 3
# Blur working-set size on CPU, in elements: slabs of image planes this large stay in cache
# through all six passes, which measured 2.5x faster than streaming a 64x3x256x128 batch
# through memory six times (a blocked loop, not a per-image one: 16 planes per slab at
# 256x128). GPUs take the whole batch in one go.
_CPU_SLAB_ELEMENTS = 1 << 19
# Above this many taps a cumulative sum beats summing each window directly.
_MAX_WINDOW_TAPS = 45

Taps = Tuple[int, float, float]  # (integer box radius l, inner tap weight, outer tap weight)


@DESENSITIZERS.register("mosaic")
def mosaic(images: Tensor, block: int = 24) -> Tensor:
    """Fill every ``block`` x ``block`` cell with its top-left pixel.

    Cells are anchored at the top-left corner; the partial cells at the right and bottom
    edges are filled the same way. Built from broadcast views, no index tensors: the cell
    corners are widened into one row per cell row (1/block of the output), then each row
    is copied ``block`` times, so the big copy moves whole contiguous rows.
    """
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


@DESENSITIZERS.register("blur")
def blur(images: Tensor, radius: float = 12.0) -> Tensor:
    """PIL ``ImageFilter.GaussianBlur(radius)`` on a batch (``radius`` = Gaussian sigma, px).

    PIL does not apply a true Gaussian: it runs three "extended" box blurs (integer box plus
    fractional weight on the two outer taps, edge pixels repeated) along x, then three along
    y, working on uint8 with rounding after every pass. We emulate exactly that, in grey
    levels, so the result stays within one grey level of PIL (a true Gaussian differs by up
    to ~25 levels near edges; in float64 the result is PIL's to the pixel). Box sums come
    from cumulative sums (along x) and direct window sums (along y) over edge-replicated
    buffers; on integer grey levels both are exact in float32. Not differentiable: the
    result is a training target.
    """
    if radius == 0 or images.numel() == 0:
        return images.clone(memory_format=torch.contiguous_format)
    with torch.no_grad():
        return _blur(images, float(radius))


def _blur(images: Tensor, radius: float) -> Tensor:
    """Run the passes slab by slab (CPU) or all at once, reusing four padded buffers."""
    work_dtype = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    taps = _box_taps(radius)
    n, c, h, w = images.shape
    planes = images.reshape(n * c, h, w)
    out = torch.empty((n * c, h, w), dtype=work_dtype, device=images.device)
    slab = n * c
    if images.device.type == "cpu":
        slab = max(1, min(n * c, _CPU_SLAB_ELEMENTS // (h * w)))
    pad = taps[0] * 2 + 3
    like = {"dtype": work_dtype, "device": images.device}
    row_bufs = [torch.empty((slab, h, w + pad), **like) for _ in range(2)]
    col_bufs = [torch.empty((slab, h + pad, w), **like) for _ in range(2)]
    for start in range(0, n * c, slab):
        stop = min(start + slab, n * c)
        _blur_slab(planes[start:stop], out[start:stop], taps, row_bufs, col_bufs)
    return out.view(n, c, h, w).to(images.dtype)


@DESENSITIZERS.register("noise")
def noise(
    images: Tensor, sigma: float = 0.5, generator: Optional[torch.Generator] = None
) -> Tensor:
    """Add N(0, ``sigma``) noise on the [0, 1] scale, then clip to [0, 1].

    ``generator`` (on the images' device) makes the draw reproducible.
    """
    out = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=images.device)
    return out.mul_(sigma).add_(images).clamp_(0.0, 1.0)


@lru_cache(maxsize=64)
def _box_taps(sigma: float) -> Taps:
    """Pillow's extended box for each of the three passes: (integer radius l, inner, outer weight).

    Mirrors ``_gaussian_blur_radius`` and ``ImagingHorizontalBoxBlur`` in Pillow's
    ``BoxBlur.c`` (float32 arithmetic, 24-bit fixed-point weights), so the taps are PIL's.
    """
    f32 = np.float32
    sigma2 = f32(sigma) * f32(sigma) / f32(_BOX_PASSES)
    box_len = math.sqrt(12.0 * float(sigma2) + 1.0)
    lo = f32(math.floor((box_len - 1.0) / 2.0))
    frac = (f32(2) * lo + f32(1)) * (lo * (lo + f32(1)) - f32(3) * sigma2)
    frac = frac / (f32(6) * (sigma2 - (lo + f32(1)) * (lo + f32(1))))
    box_radius = f32(lo + frac)
    whole = int(box_radius)
    inner = int(f32(1 << 24) / (box_radius * f32(2) + f32(1)))
    outer = ((1 << 24) - (2 * whole + 1) * inner) // 2
    return whole, inner / (1 << 24), outer / (1 << 24)


def _blur_slab(
    planes: Tensor, out: Tensor, taps: Taps, row_bufs: List[Tensor], col_bufs: List[Tensor]
) -> None:
    """Three box passes along x, then three along y, on a slab of (k, H, W) image planes.

    Every buffer holds a line at offset l+2 with l+2 / l+1 free cells either side for the
    repeated edge pixels. Passes write straight into the next buffer's interior.
    """
    k, h, w = planes.shape
    rows = [buf[:k] for buf in row_bufs]
    cols = [buf[:k] for buf in col_bufs]
    whole = taps[0]
    # PIL sees uint8: start from the nearest grey level, as PIL's input would be.
    torch.mul(planes, 255.0, out=rows[0].narrow(-1, whole + 2, w)).round_()
    for i in range(_BOX_PASSES):
        last = i == _BOX_PASSES - 1
        dst = cols[0].narrow(-2, whole + 2, h) if last else rows[1 - i % 2].narrow(-1, whole + 2, w)
        _box_pass_cumsum(rows[i % 2], -1, w, taps, dst)
    # Along y, a direct window sum vectorises across the row and beats the (scalar) scan
    # of cumsum up to ~45 taps.
    col_pass = _box_pass_window if 2 * whole + 1 <= _MAX_WINDOW_TAPS else _box_pass_cumsum
    for i in range(_BOX_PASSES):
        last = i == _BOX_PASSES - 1
        dst = out if last else cols[1 - i % 2].narrow(-2, whole + 2, h)
        col_pass(cols[i % 2], -2, h, taps, dst)
    out.div_(255.0)


def _fill_edges(buf: Tensor, dim: int, size: int, whole: int) -> None:
    """Repeat the first / last pixel into the l+2 / l+1 free cells (PIL clamps indices)."""
    left, right = whole + 2, whole + 1
    head = buf.narrow(dim, 0, left)
    head.copy_(buf.narrow(dim, left, 1).expand_as(head))
    tail = buf.narrow(dim, left + size, right)
    tail.copy_(buf.narrow(dim, left + size - 1, 1).expand_as(tail))


def _box_pass_cumsum(buf: Tensor, dim: int, size: int, taps: Taps, dst: Tensor) -> None:
    """One extended box blur along ``dim``, rounded to grey levels, into ``dst``.

    ``buf`` becomes its own cumulative sum C, and with S_m the m-pixel window sums
    out = outer * S_{2l+3} + (inner - outer) * S_{2l+1}, four shifted slices of C.
    (PIL rounds halves up, ``round_`` to even; exact halves do not survive float32 anyway.)
    """
    whole, inner, outer = taps
    _fill_edges(buf, dim, size, whole)
    csum = buf.cumsum_(dim)
    ratio = outer / (inner - outer)
    torch.sub(csum.narrow(dim, 2 * whole + 2, size), csum.narrow(dim, 1, size), out=dst)
    dst.add_(csum.narrow(dim, 2 * whole + 3, size), alpha=ratio)
    dst.sub_(csum.narrow(dim, 0, size), alpha=ratio)
    dst.mul_(inner - outer).round_()


def _box_pass_window(buf: Tensor, dim: int, size: int, taps: Taps, dst: Tensor) -> None:
    """Same as :func:`_box_pass_cumsum`, summing each (2l+1)-pixel window directly."""
    whole, inner, outer = taps
    _fill_edges(buf, dim, size, whole)
    axis = dim % buf.dim()  # unfold appends a dimension, so count from the front
    windows = buf.unfold(axis, 2 * whole + 1, 1).narrow(axis, 2, size)
    torch.sum(windows, dim=-1, out=dst)
    ratio = outer / inner
    dst.add_(buf.narrow(dim, 1, size), alpha=ratio)
    dst.add_(buf.narrow(dim, 2 * whole + 3, size), alpha=ratio)
    dst.mul_(inner).round_()
