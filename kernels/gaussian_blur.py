"""PIL ``GaussianBlur(radius)`` as two kernels: three box passes along x, then three along y.

PIL approximates the Gaussian by three "extended" box blurs per axis (integer box plus a
fractional weight on the two outer taps, edge pixels repeated), on uint8 with rounding after
every pass (a true Gaussian differs from PIL by up to ~25 grey levels near edges). The torch
reference below emulates exactly that with about twenty full-batch tensor passes. The kernels
hold a tile of whole padded lines in registers and run their three passes there: edge repeat
and the shifted reads are ``tl.gather``, the box sums come from ``tl.cumsum`` (integer grey
levels: exact in float32). The row kernel reads the batch once and writes uint8 grey levels
(1 byte/pixel, exact: every pass ends on an integer in [0, 255]); the column kernel reads
those and writes the result once.
"""
from __future__ import annotations

import math
from functools import lru_cache
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor

from ._common import check_images, check_number
from .dispatch import INTERPRET, backend_for, launch_options, pow2_at_least, register_op, tl, triton

OP = register_op("gaussian_blur")

# PIL's GaussianBlur approximates the Gaussian with this many box blurs per axis.
_BOX_PASSES = 3
# Above this many taps a cumulative sum beats summing each window directly (reference's
# column pass; the column kernel mirrors its choice so both round alike).
MAX_WINDOW_TAPS = 45
# The reference's working set, in elements: slabs of image planes this large stay in cache
# through all six passes, which measured 2.5x faster on the CPU than streaming a 64x3x256x128
# batch through memory six times (16 planes per slab at 256x128). On a GPU the Triton kernels
# run instead; the reference keeps the same slabs there (numerics do not depend on them).
_SLAB_ELEMENTS = 1 << 19
Taps = Tuple[int, float, float]  # (integer box radius l, inner tap weight, outer tap weight)
# Elements of one program's tile (padded lines x lines per program).
_TILE = 1 << 17 if INTERPRET else 4096
_ROUND_MAGIC = 12582912.0  # 1.5 * 2**23: (v + M) - M rounds half to even, like torch.round


@triton.jit
def _round_half_even(v):
    # float32 add then subtract of 1.5*2**23 rounds to the nearest integer (ties to even)
    # for |v| < 2**22; no libdevice needed (the interpreter has none)
    return (v + 12582912.0) - 12582912.0


@triton.jit
def _box_pass(v, pos, size, ratio, scale, L: tl.constexpr, AXIS: tl.constexpr, LAST: tl.constexpr,
              WINDOW: tl.constexpr):
    """One extended box blur along AXIS of padded lines; interior pixel i sits at pos = i + L + 2.

    Mirrors the reference: WINDOW (its column pass for <= 45 taps) computes
    (S_{2L+1} + r e_left + r e_right) * inner with r = outer / inner; otherwise (its
    cumulative-sum pass) (S_{2L+1} + r S_{2L+3} - r S_-) * (inner - outer) with
    r = outer / (inner - outer). ``ratio``/``scale`` are those r and factor.
    """
    # repeat the edge pixels into the pads (PIL clamps indices)
    v = tl.gather(v, tl.minimum(tl.maximum(pos, L + 2), L + 1 + size), AXIS)
    csum = tl.cumsum(v, AXIS)
    top = tl.minimum(pos + L, LAST)
    window = tl.gather(csum, top, AXIS) - tl.gather(csum, tl.maximum(pos - L - 1, 0), AXIS)
    after = tl.minimum(pos + L + 1, LAST)
    if WINDOW:
        out = window + ratio * tl.gather(v, tl.maximum(pos - L - 1, 0), AXIS)
        out = out + ratio * tl.gather(v, after, AXIS)
    else:
        out = window + ratio * tl.gather(csum, after, AXIS)
        out = out - ratio * tl.gather(csum, tl.maximum(pos - L - 2, 0), AXIS)
    return _round_half_even(out * scale)


@triton.jit
def _blur_rows_kernel(x_ptr, grey_ptr, rows, C, H, W, sxn, sxc, sxh, sxw, ratio, scale,
                      L: tl.constexpr, BLOCK_R: tl.constexpr, WP: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    j = tl.arange(0, WP)
    row_ok = r < rows
    h = r % H
    c = (r // H) % C
    n = r // (H * C)
    col = tl.minimum(tl.maximum(j - (L + 2), 0), W - 1)
    offs = (n.to(tl.int64) * sxn + c * sxc + h * sxh)[:, None] + (col * sxw)[None, :]
    v = tl.load(x_ptr + offs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    v = _round_half_even(v * 255.0)  # PIL sees uint8
    pos = tl.broadcast_to(j[None, :], (BLOCK_R, WP))
    for _ in tl.static_range(3):
        v = _box_pass(v, pos, W, ratio, scale, L, 1, WP - 1, False)
    v = tl.minimum(tl.maximum(v, 0.0), 255.0)
    inside = (j >= L + 2) & (j < L + 2 + W)
    dst = r.to(tl.int64)[:, None] * W + (j - (L + 2))[None, :]
    tl.store(grey_ptr + dst, v.to(tl.uint8), mask=row_ok[:, None] & inside[None, :])


@triton.jit
def _blur_cols_kernel(grey_ptr, out_ptr, H, W, ratio, scale,
                      L: tl.constexpr, WINDOW: tl.constexpr, HP: tl.constexpr, BLOCK_W: tl.constexpr):
    plane = tl.program_id(1)
    i = tl.arange(0, HP)
    w = tl.program_id(0) * BLOCK_W + tl.arange(0, BLOCK_W)
    col_ok = w < W
    row = tl.minimum(tl.maximum(i - (L + 2), 0), H - 1)
    base = plane.to(tl.int64) * H * W
    v = tl.load(grey_ptr + base + row[:, None] * W + w[None, :], mask=col_ok[None, :], other=0).to(tl.float32)
    pos = tl.broadcast_to(i[:, None], (HP, BLOCK_W))
    for _ in tl.static_range(3):
        v = _box_pass(v, pos, H, ratio, scale, L, 0, HP - 1, WINDOW)
    v = v / 255.0
    inside = (i >= L + 2) & (i < L + 2 + H)
    dst = base + (i - (L + 2))[:, None] * W + w[None, :]
    tl.store(out_ptr + dst, v, mask=inside[:, None] & col_ok[None, :])


def _pass_constants(taps: Tuple[int, float, float], window: bool) -> Tuple[float, float]:
    """(ratio, scale) of ``_box_pass`` for the reference's window or cumulative-sum form."""
    _, inner, outer = taps
    if window:
        return outer / inner, inner
    return outer / (inner - outer), inner - outer


def blur_launch(x: Tensor, radius: float) -> Tensor:
    """Run both kernels (any strides in, contiguous out)."""
    if radius == 0 or x.numel() == 0:  # identity, as in the reference
        return x.clone(memory_format=torch.contiguous_format)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    n, c, h, w = x.shape
    taps = box_taps(float(radius))
    whole = taps[0]
    grey = torch.empty((n * c, h, w), dtype=torch.uint8, device=x.device)
    # rows: the reference's cumulative-sum pass
    wp = pow2_at_least(w + 2 * whole + 3)
    block_r = max(1, _TILE // wp)
    ratio, scale = _pass_constants(taps, window=False)
    _blur_rows_kernel[(triton.cdiv(n * c * h, block_r),)](
        x, grey, n * c * h, c, h, w, *x.stride(), ratio, scale,
        L=whole, BLOCK_R=block_r, WP=wp, **launch_options(4))
    # columns: the reference sums windows directly up to MAX_WINDOW_TAPS taps
    window = 2 * whole + 1 <= MAX_WINDOW_TAPS
    hp = pow2_at_least(h + 2 * whole + 3)
    block_w = max(1, min(pow2_at_least(w), _TILE // hp))
    ratio, scale = _pass_constants(taps, window)
    _blur_cols_kernel[(triton.cdiv(w, block_w), n * c)](
        grey, out, h, w, ratio, scale, L=whole, WINDOW=window, HP=hp, BLOCK_W=block_w, **launch_options(8))
    return out


# ----------------------------------------------------------------------------- torch reference
def gaussian_blur_torch(images: Tensor, radius: float = 12.0) -> Tensor:
    """The reference: PIL's three box passes per axis, in grey levels, on the whole batch.

    Within one grey level of PIL (in float64: PIL's result to the pixel). Box sums come from
    cumulative sums (along x) and direct window sums (along y) over edge-replicated buffers;
    on integer grey levels both are exact in float32. Not differentiable.
    """
    if radius == 0 or images.numel() == 0:
        return images.clone(memory_format=torch.contiguous_format)
    with torch.no_grad():
        return _blur(images, float(radius))


def _blur(images: Tensor, radius: float) -> Tensor:
    """Run the passes slab by slab, reusing four padded buffers."""
    work_dtype = torch.float32 if images.dtype in (torch.float16, torch.bfloat16) else images.dtype
    taps = box_taps(radius)
    n, c, h, w = images.shape
    planes = images.reshape(n * c, h, w)
    out = torch.empty((n * c, h, w), dtype=work_dtype, device=images.device)
    slab = max(1, min(n * c, _SLAB_ELEMENTS // (h * w)))
    pad = taps[0] * 2 + 3
    like = {"dtype": work_dtype, "device": images.device}
    row_bufs = [torch.empty((slab, h, w + pad), **like) for _ in range(2)]
    col_bufs = [torch.empty((slab, h + pad, w), **like) for _ in range(2)]
    for start in range(0, n * c, slab):
        stop = min(start + slab, n * c)
        _blur_slab(planes[start:stop], out[start:stop], taps, row_bufs, col_bufs)
    return out.view(n, c, h, w).to(images.dtype)


@lru_cache(maxsize=64)
def box_taps(sigma: float) -> Taps:
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


def _blur_slab(planes: Tensor, out: Tensor, taps: Taps, row_bufs: List[Tensor], col_bufs: List[Tensor]) -> None:
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
    col_pass = _box_pass_window if 2 * whole + 1 <= MAX_WINDOW_TAPS else _box_pass_cumsum
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


# ----------------------------------------------------------------------------- public op
def gaussian_blur(x: Tensor, radius: float = 12.0, *, backend: Optional[str] = None) -> Tensor:
    """PIL ``GaussianBlur(radius)`` of an (N, C, H, W) batch of [0, 1] images.

    Within one grey level (1/255) of PIL, like the reference. Not differentiable.
    """
    check_images(x)
    check_number(radius, "radius", 0.0)
    if backend_for(OP, backend) == "triton":
        return blur_launch(x, float(radius))
    return gaussian_blur_torch(x, float(radius))


def compare(reference: Tensor, result: Tensor, *_: object, **__: object) -> None:
    """Both emulate PIL's uint8 passes and round after each; where a pass lands on a .5 tie,
    float rounding (fused multiply-add or not) may put a pixel one grey level apart. Each is
    within one grey level of PIL, with a few % of pixels off for small radii (both alike)."""
    diff = (reference.double() - result.double()).abs()
    if float(diff.max()) > 1.0 / 255 + 1e-6:
        raise AssertionError(f"blur differs by {float(diff.max()) * 255:.3f} grey levels (> 1)")
    off = float((diff > 1e-6).double().mean())
    if off > 0.1:
        raise AssertionError(f"{off:.1%} of the pixels differ by a grey level (> 10%)")


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """Inputs for the generic kernel tests: ``(args, kwargs)``."""
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(shape, generator=gen).to(device=device, dtype=dtype)
    return (x,), {"radius": 3.0}
