"""PIL ``GaussianBlur(radius)`` as two kernels: three box passes along x, then three along y.

PIL approximates the Gaussian by three "extended" box blurs per axis (integer box plus a
fractional weight on the two outer taps, edge pixels repeated), on uint8 with rounding after
every pass; ``plugins/desensitizers.blur`` (the reference) emulates exactly that with about
twenty full-batch tensor passes. Here each kernel holds a tile of whole padded lines in
registers and runs its three passes there: edge repeat and the shifted reads are
``tl.gather``, the box sums come from ``tl.cumsum`` (integer grey levels: exact in float32).
The row kernel reads the batch once and writes uint8 grey levels (1 byte/pixel, exact: every
pass ends on an integer in [0, 255]); the column kernel reads those and writes the result once.
With ``NORMALIZED`` the row kernel de-normalizes and clamps on load and the column kernel
re-normalizes on store (the blur branch of ``desensitize_normalized``).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from torchreid_privacy.registry import DESENSITIZERS

from ._common import check_images, check_number
from .dispatch import INTERPRET, launch_options, pow2_at_least, tl, triton, use_triton

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
def _blur_rows_kernel(x_ptr, grey_ptr, mean_ptr, std_ptr, rows, C, H, W, sxn, sxc, sxh, sxw,
                      ratio, scale, L: tl.constexpr, NORMALIZED: tl.constexpr,
                      BLOCK_R: tl.constexpr, WP: tl.constexpr):
    r = tl.program_id(0) * BLOCK_R + tl.arange(0, BLOCK_R)
    j = tl.arange(0, WP)
    row_ok = r < rows
    h = r % H
    c = (r // H) % C
    n = r // (H * C)
    col = tl.minimum(tl.maximum(j - (L + 2), 0), W - 1)
    offs = (n.to(tl.int64) * sxn + c * sxc + h * sxh)[:, None] + (col * sxw)[None, :]
    v = tl.load(x_ptr + offs, mask=row_ok[:, None], other=0.0).to(tl.float32)
    if NORMALIZED:
        std = tl.load(std_ptr + c, mask=row_ok, other=1.0)
        mean = tl.load(mean_ptr + c, mask=row_ok, other=0.0)
        v = tl.minimum(tl.maximum(v * std[:, None] + mean[:, None], 0.0), 1.0)
    v = _round_half_even(v * 255.0)  # PIL sees uint8
    pos = tl.broadcast_to(j[None, :], (BLOCK_R, WP))
    for _ in tl.static_range(3):
        v = _box_pass(v, pos, W, ratio, scale, L, 1, WP - 1, False)
    v = tl.minimum(tl.maximum(v, 0.0), 255.0)
    inside = (j >= L + 2) & (j < L + 2 + W)
    dst = r.to(tl.int64)[:, None] * W + (j - (L + 2))[None, :]
    tl.store(grey_ptr + dst, v.to(tl.uint8), mask=row_ok[:, None] & inside[None, :])


@triton.jit
def _blur_cols_kernel(grey_ptr, out_ptr, inv_std_ptr, shift_ptr, C, H, W, ratio, scale,
                      L: tl.constexpr, NORMALIZED: tl.constexpr, WINDOW: tl.constexpr,
                      HP: tl.constexpr, BLOCK_W: tl.constexpr):
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
    if NORMALIZED:
        c = plane % C
        v = v * tl.load(inv_std_ptr + c) + tl.load(shift_ptr + c)
    inside = (i >= L + 2) & (i < L + 2 + H)
    dst = base + (i - (L + 2))[:, None] * W + w[None, :]
    tl.store(out_ptr + dst, v, mask=inside[:, None] & col_ok[None, :])


def _pass_constants(taps: Tuple[int, float, float], window: bool) -> Tuple[float, float]:
    """(ratio, scale) of ``_box_pass`` for the reference's window or cumulative-sum form."""
    _, inner, outer = taps
    if window:
        return outer / inner, inner
    return outer / (inner - outer), inner - outer


def blur_launch(x: Tensor, radius: float,
                consts: Optional[Tuple[Tensor, Tensor, Tensor, Tensor]] = None) -> Tensor:
    """Run both kernels; ``consts`` = ``(mean, std, 1/std, -mean/std)`` selects the normalized form."""
    from torchreid_privacy.plugins.desensitizers import _MAX_WINDOW_TAPS, _box_taps

    from .mosaic import mosaic_launch

    if radius == 0:  # identity, as in the reference (block 1 mosaic = a copy)
        return mosaic_launch(x, 1, consts) if consts is not None else x.clone(memory_format=torch.contiguous_format)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return out
    n, c, h, w = x.shape
    taps = _box_taps(float(radius))
    whole = taps[0]
    normalized = consts is not None
    mean, std, inv_std, shift = consts if normalized else (x, x, x, x)  # unused pointers
    grey = torch.empty((n * c, h, w), dtype=torch.uint8, device=x.device)
    # rows: the reference's cumulative-sum pass
    wp = pow2_at_least(w + 2 * whole + 3)
    block_r = max(1, _TILE // wp)
    ratio, scale = _pass_constants(taps, window=False)
    _blur_rows_kernel[(triton.cdiv(n * c * h, block_r),)](
        x, grey, mean, std, n * c * h, c, h, w, *x.stride(), ratio, scale,
        L=whole, NORMALIZED=normalized, BLOCK_R=block_r, WP=wp, **launch_options(4))
    # columns: the reference sums windows directly up to _MAX_WINDOW_TAPS taps
    window = 2 * whole + 1 <= _MAX_WINDOW_TAPS
    hp = pow2_at_least(h + 2 * whole + 3)
    block_w = max(1, min(pow2_at_least(w), _TILE // hp))
    ratio, scale = _pass_constants(taps, window)
    _blur_cols_kernel[(triton.cdiv(w, block_w), n * c)](
        grey, out, inv_std, shift, c, h, w, ratio, scale,
        L=whole, NORMALIZED=normalized, WINDOW=window, HP=hp, BLOCK_W=block_w, **launch_options(8))
    return out


def gaussian_blur_torch(x: Tensor, radius: float = 12.0) -> Tensor:
    """The reference: the registered ``blur`` desensitizer (PIL's three box passes)."""
    return DESENSITIZERS.get("blur")(x, radius=radius)


def gaussian_blur(x: Tensor, radius: float = 12.0, *, backend: Optional[str] = None) -> Tensor:
    """PIL ``GaussianBlur(radius)`` of an (N, C, H, W) batch of [0, 1] images.

    Within one grey level (1/255) of PIL, like the reference. Not differentiable.
    """
    check_images(x)
    check_number(radius, "radius", 0.0)
    if use_triton(backend, x):
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
