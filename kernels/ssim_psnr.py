"""Per-image SSIM and MSE of image pairs in one pass over both batches (inference only).

The torch reference below (what ``torchreid_privacy.metrics.image`` reports) materialises the
filtered planes: it writes s = a + b - 1, d = a - b, s^2, d^2 (SSIM needs only those four;
they carry the same information as a, b, a^2, b^2, ab, with less float32 cancellation),
filters them by two depthwise convolutions and combines the maps, about ten full-size passes,
a few images at a time so the working set stays in cache. The kernel
streams down the image instead: a program owns a strip of columns of a chunk of rows (of a
block of image planes) and, row by row,

* filters the new input row horizontally (11 shifted loads, which hit cache; the four
  statistics are formed from a and b in registers),
* keeps the last 11 filtered rows in registers (a ring of variables) and filters them
  vertically into one row of the SSIM map,
* adds that row's SSIM and the row's squared differences to running sums.

Each input pixel is read from memory once, nothing but one partial sum per program is
written, and everything stays exact float32 (no tensor-core rounding). Each input pixel's
squared error is counted by exactly one program. Windows match
``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)`` (the map cropped by 5 pixels = valid windows only).
No backward: passing tensors that require grad raises.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import check_number
from .dispatch import INTERPRET, backend_for, launch_options, pow2_at_least, register_op, tl, triton

OP = register_op("ssim_psnr")
SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's value for gaussian_weights=True -> 11 taps
SSIM_K1, SSIM_K2 = 0.01, 0.03

_TAPS = 11  # 2 * int(3.5 * 1.5 + 0.5) + 1: the ring below is written out for 11 rows
_TILE_W = 128  # output columns per program
_CHUNK_ROWS = None if INTERPRET else 64  # output rows per program (None: the whole image)
_PLANES = 16 if INTERPRET else 1  # image planes per program (the interpreter pays per program)
_IMAGES_PER_STEP = 4  # images the reference filters together: ~6 MB of planes at 256x128, cache-sized


@triton.jit
def _stack(s, d, ss, dd, stat):
    """The four [PB, BW] statistics as one [4, PB, BW] tensor (``stat`` = 0..3 along axis 0)."""
    return tl.where(stat == 0, s[None, :, :], tl.where(stat == 1, d[None, :, :],
                                                       tl.where(stat == 2, ss[None, :, :], dd[None, :, :])))


@triton.jit
def _pick(stacked, stat, k: tl.constexpr):
    return tl.sum(tl.where(stat == k, stacked, 0.0), axis=0)


@triton.jit
def _ssim_kernel(a_ptr, b_ptr, taps_ptr, ssim_part_ptr, mse_part_ptr, planes, C, H, W, HV, WV, chunk_rows,
                 san, sac, sah, saw, sbn, sbc, sbh, sbw, data_range, c1, c2,
                 PB: tl.constexpr, BW: tl.constexpr):
    tile_w = tl.program_id(0)
    chunk = tl.program_id(1)
    plane = tl.program_id(2) * PB + tl.arange(0, PB)
    plane_ok = plane < planes
    a_plane = a_ptr + ((plane // C).to(tl.int64) * san + (plane % C) * sac)[:, None]
    b_plane = b_ptr + ((plane // C).to(tl.int64) * sbn + (plane % C) * sbc)[:, None]
    tj = tl.arange(0, BW)
    c0 = tile_w * BW
    a_cols = ((c0 + tj) * saw)[None, :]
    b_cols = ((c0 + tj) * sbw)[None, :]
    col_out_ok = plane_ok[:, None] & (c0 + tj < WV)[None, :]
    # the last strip also owns the 10 columns right of its last window start (squared errors)
    right_edge = ((tj == BW - 1) & (c0 + BW >= WV))[None, :]
    r_start = chunk * chunk_rows
    r_stop = tl.minimum(r_start + chunk_rows + 10, H)
    # squared errors of rows [r_start, r_start + chunk_rows); the last chunk also takes the rest
    own_stop = tl.where(r_start + chunk_rows >= HV, H, r_start + chunk_rows)
    stat = tl.arange(0, 4)[:, None, None]
    g0 = tl.load(taps_ptr + 0)
    g1 = tl.load(taps_ptr + 1)
    g2 = tl.load(taps_ptr + 2)
    g3 = tl.load(taps_ptr + 3)
    g4 = tl.load(taps_ptr + 4)
    g5 = tl.load(taps_ptr + 5)
    g6 = tl.load(taps_ptr + 6)
    g7 = tl.load(taps_ptr + 7)
    g8 = tl.load(taps_ptr + 8)
    g9 = tl.load(taps_ptr + 9)
    g10 = tl.load(taps_ptr + 10)
    # horizontally filtered statistics of the 10 rows above the current one (oldest first)
    h0 = tl.zeros([4, PB, BW], dtype=tl.float32)
    h1 = tl.zeros([4, PB, BW], dtype=tl.float32)
    h2 = tl.zeros([4, PB, BW], dtype=tl.float32)
    h3 = tl.zeros([4, PB, BW], dtype=tl.float32)
    h4 = tl.zeros([4, PB, BW], dtype=tl.float32)
    h5 = tl.zeros([4, PB, BW], dtype=tl.float32)
    h6 = tl.zeros([4, PB, BW], dtype=tl.float32)
    h7 = tl.zeros([4, PB, BW], dtype=tl.float32)
    h8 = tl.zeros([4, PB, BW], dtype=tl.float32)
    h9 = tl.zeros([4, PB, BW], dtype=tl.float32)
    ssim_sum = tl.zeros([PB, BW], dtype=tl.float32)
    sq_err = tl.zeros([PB, BW], dtype=tl.float32)
    for r in range(r_start, r_stop):
        a_row = a_plane + r * sah
        b_row = b_plane + r * sbh
        owned = plane_ok[:, None] & (r < own_stop)
        hs = tl.zeros([PB, BW], dtype=tl.float32)
        hd = tl.zeros([PB, BW], dtype=tl.float32)
        hss = tl.zeros([PB, BW], dtype=tl.float32)
        hdd = tl.zeros([PB, BW], dtype=tl.float32)
        for j in tl.static_range(11):
            mask = plane_ok[:, None] & ((c0 + tj + j) < W)[None, :]
            a = tl.load(a_row + a_cols + j * saw, mask=mask, other=0.0).to(tl.float32)
            b = tl.load(b_row + b_cols + j * sbw, mask=mask, other=0.0).to(tl.float32)
            g = tl.load(taps_ptr + j)
            s = a + b - data_range
            d = a - b
            hs += g * s
            hd += g * d
            hss += g * (s * s)
            hdd += g * (d * d)
            if j == 0:  # the strip's own columns
                sq_err += tl.where(mask & owned, d * d, 0.0)
            else:
                sq_err += tl.where(mask & owned & right_edge, d * d, 0.0)
        h = _stack(hs, hd, hss, hdd, stat)
        v = g0 * h0 + g1 * h1 + g2 * h2 + g3 * h3 + g4 * h4 + g5 * h5
        v = v + g6 * h6 + g7 * h7 + g8 * h8 + g9 * h9 + g10 * h
        mu_s = _pick(v, stat, 0)
        mu_d = _pick(v, stat, 1)
        var_s = _pick(v, stat, 2) - mu_s * mu_s
        var_d = _pick(v, stat, 3) - mu_d * mu_d
        mu_s2 = (mu_s + data_range) * (mu_s + data_range)
        mu_d2 = mu_d * mu_d
        # the factors 1/2 of the four SSIM terms cancel in the ratio (c1, c2 are doubled)
        ssim = (mu_s2 - mu_d2 + c1) * (var_s - var_d + c2) / ((mu_s2 + mu_d2 + c1) * (var_s + var_d + c2))
        top = r - 10  # the output row whose window ends at this input row
        ssim_sum += tl.where(col_out_ok & (top >= r_start) & (top < HV), ssim, 0.0)
        h0, h1, h2, h3, h4, h5, h6, h7, h8, h9 = h1, h2, h3, h4, h5, h6, h7, h8, h9, h
    part = (plane * tl.num_programs(1) + chunk) * tl.num_programs(0) + tile_w
    tl.store(ssim_part_ptr + part, tl.sum(ssim_sum, axis=1), mask=plane_ok)
    tl.store(mse_part_ptr + part, tl.sum(sq_err, axis=1), mask=plane_ok)


def ssim_psnr_launch(a: Tensor, b: Tensor, data_range: float) -> Tuple[Tensor, Tensor]:
    n, c, h, w = a.shape
    hv, wv = h - _TAPS + 1, w - _TAPS + 1
    if n == 0:
        empty = torch.zeros(0, dtype=torch.float64, device=a.device)
        return empty, empty
    taps = gaussian_taps().to(device=a.device, dtype=torch.float32)
    if len(taps) != _TAPS:
        raise ValueError(f"the kernel is written for {_TAPS}-tap windows, got {len(taps)}")
    block_w = min(_TILE_W, pow2_at_least(wv))
    chunk_rows = hv if _CHUNK_ROWS is None else _CHUNK_ROWS
    planes_per_program = min(_PLANES, pow2_at_least(n * c))
    grid = (triton.cdiv(wv, block_w), triton.cdiv(hv, chunk_rows), triton.cdiv(n * c, planes_per_program))
    ssim_part = torch.empty(n * c * grid[0] * grid[1], dtype=torch.float32, device=a.device)
    mse_part = torch.empty_like(ssim_part)
    c1 = 2 * (SSIM_K1 * data_range) ** 2
    c2 = 2 * (SSIM_K2 * data_range) ** 2
    _ssim_kernel[grid](a, b, taps, ssim_part, mse_part, n * c, c, h, w, hv, wv, chunk_rows,
                       *a.stride(), *b.stride(), float(data_range), c1, c2,
                       PB=planes_per_program, BW=block_w, **launch_options(4))
    ssim = ssim_part.view(n, -1).sum(1, dtype=torch.float64) / (c * hv * wv)
    mse = mse_part.view(n, -1).sum(1, dtype=torch.float64) / (c * h * w)
    return ssim, mse


# ----------------------------------------------------------------------------- torch reference
def gaussian_taps(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> Tensor:
    """scipy.ndimage's normalized 1-D Gaussian kernel (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def check_pair(a: Tensor, b: Tensor, min_side: int = 1) -> None:
    """Two (N, C, H, W) tensors of one shape, each side >= ``min_side``, else ``ValueError``."""
    if not isinstance(a, Tensor) or a.dim() != 4:
        raise ValueError(f"a: expected an (N, C, H, W) tensor, got {getattr(a, 'shape', type(a).__name__)}")
    if not isinstance(b, Tensor) or b.shape != a.shape:
        raise ValueError(f"b: expected shape {tuple(a.shape)}, got {getattr(b, 'shape', type(b).__name__)}")
    if min(a.shape[-2:]) < min_side:
        raise ValueError(f"a: images must be at least {min_side}x{min_side} pixels, got {tuple(a.shape[-2:])}")


def as_float(x: Tensor) -> Tensor:
    """float32/float64 as is, any other tensor (half, integer images) as float32; non-tensors
    pass through for :func:`check_pair` to name."""
    if not isinstance(x, Tensor) or x.dtype in (torch.float32, torch.float64):
        return x
    return x.float()


def _ssim_and_mse(a: Tensor, b: Tensor, data_range: float) -> Tuple[Tensor, Tensor]:
    """SSIM (N,) and MSE (N,) of a few images, sharing the d = a - b plane.

    With s = a + b and d = a - b the SSIM terms are linear in four filtered maps:
    2 mu_a mu_b = (mu_s^2 - mu_d^2) / 2, mu_a^2 + mu_b^2 = (mu_s^2 + mu_d^2) / 2,
    2 cov_ab = (var_s - var_d) / 2, var_a + var_b = (var_s + var_d) / 2; s is shifted by
    -data_range (variances are shift-invariant) to keep float32 cancellation small. Written
    with in-place ops: the block is cache-sized, so the passes stay cheap only while no new
    buffers are allocated.
    """
    n, c, h, w = a.shape
    taps = gaussian_taps().to(device=a.device, dtype=a.dtype)
    k = len(taps)
    planes = 4 * n * c
    stats = torch.empty((4, n, c, h, w), dtype=a.dtype, device=a.device)
    s, d, ss, dd = stats
    torch.add(a, b, out=s).sub_(data_range)
    torch.sub(a, b, out=d)
    torch.mul(s, s, out=ss)
    torch.mul(d, d, out=dd)
    mse = dd.reshape(n, -1).sum(1, dtype=torch.float64) / (c * h * w)
    filtered = F.conv2d(stats.view(1, planes, h, w), taps.view(1, 1, 1, k).expand(planes, 1, 1, k),
                        groups=planes)
    filtered = F.conv2d(filtered, taps.view(1, 1, k, 1).expand(planes, 1, k, 1), groups=planes)
    mu_s, mu_d, var_s, var_d = filtered.view(4, n, c, h - k + 1, w - k + 1)
    var_s.addcmul_(mu_s, mu_s, value=-1.0)  # E[s^2] - mu_s^2
    var_d.addcmul_(mu_d, mu_d, value=-1.0)
    mu_s2 = mu_s.add_(data_range).square_()
    mu_d2 = mu_d.square_()
    # the factors 1/2 of the four SSIM terms cancel in the ratio, so use 2*C1, 2*C2
    c1, c2 = 2 * (SSIM_K1 * data_range) ** 2, 2 * (SSIM_K2 * data_range) ** 2
    luminance = torch.sub(mu_s2, mu_d2).add_(c1)
    contrast = torch.sub(var_s, var_d).add_(c2)
    den = mu_s2.add_(mu_d2).add_(c1).mul_(var_s.add_(var_d).add_(c2))
    ssim_map = luminance.mul_(contrast).div_(den)
    ssim_val = ssim_map.flatten(2).mean(2, dtype=torch.float64).mean(1)  # channel mean, as skimage
    return ssim_val, mse


def ssim_psnr_torch(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tuple[Tensor, Tensor]:
    """The reference: per-image ``(ssim, mse)``, each (N,) float64, ``_IMAGES_PER_STEP`` images
    at a time (equal to scikit-image's SSIM and MSE)."""
    check_pair(a, b, min_side=_TAPS)
    a, b = as_float(a).contiguous(), as_float(b).contiguous()
    parts = [_ssim_and_mse(a[i:i + _IMAGES_PER_STEP], b[i:i + _IMAGES_PER_STEP], float(data_range))
             for i in range(0, a.shape[0], _IMAGES_PER_STEP)]
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64, device=a.device)
        return empty, empty
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


# ----------------------------------------------------------------------------- public op
def ssim_psnr(a: Tensor, b: Tensor, data_range: float = 1.0, *,
              backend: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """Per-image ``(ssim, mse)``, each (N,) float64, of (N, C, H, W) pairs (H, W >= 11).

    PSNR is ``10 * log10(data_range**2 / mse)``. Inference only: raises ``ValueError`` if an
    input requires grad (neither backend has a backward).
    """
    check_pair(a, b, min_side=_TAPS)
    check_number(data_range, "data_range", 0.0)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range!r}")
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        raise ValueError("a: ssim_psnr is inference-only (no backward); detach the inputs or use torch.no_grad()")
    if not a.is_floating_point() or not b.is_floating_point():
        raise ValueError(f"a: expected floating images, got {a.dtype} and {b.dtype}")
    if backend_for(OP, backend) == "triton":
        return ssim_psnr_launch(a, b, float(data_range))
    return ssim_psnr_torch(a, b, float(data_range))


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """A pair of related images (a blurred, noisy copy) for the generic tests: ``(args, kwargs)``."""
    gen = torch.Generator().manual_seed(6)
    a = torch.rand(shape, generator=gen)
    b = (0.7 * a + 0.3 * a.roll(1, -1) + 0.05 * torch.randn(shape, generator=gen)).clamp(0, 1)
    return (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)), {}
