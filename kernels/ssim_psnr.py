"""Per-image SSIM and MSE of image pairs in one pass over both batches (inference only).

The reference (``torchreid_privacy.metrics_image``) materialises the filtered planes: it
writes s = a + b - 1, d = a - b, s^2, d^2 (SSIM needs only those four; they carry the
same information as a, b, a^2, b^2, ab, with less float32 cancellation), filters them by
two depthwise convolutions and combines the maps, about ten full-size passes. The kernel
takes a tile of the valid SSIM map per program:

* horizontal 11-tap Gaussian: 11 shifted loads of the input rows (they hit cache), the four
  statistics formed from a and b in registers;
* vertical 11-tap Gaussian: one ``tl.dot`` per statistic with a banded [TH, TH] matrix of the
  taps (float32 "ieee" precision: tf32 would cost SSIM its 1e-4 accuracy);
* the SSIM map, and the squared differences for MSE, summed into one partial per program.

Tiles overlap by the 10-pixel window; each input pixel's squared error is counted by
exactly one tile. Windows match ``skimage.metrics.structural_similarity(gaussian_weights=True,
sigma=1.5, use_sample_covariance=False)`` (the map cropped by 5 pixels = valid windows only).
No backward: passing tensors that require grad raises.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from torchreid_privacy import metrics_image

from ._common import check_number
from .dispatch import INTERPRET, launch_options, pow2_at_least, tl, triton, use_triton

_TAPS = 11  # 2 * int(3.5 * 1.5 + 0.5) + 1
_TILE_H = 128 if INTERPRET else 64  # input rows per program (TILE_H - 10 output rows)
_TILE_W = 128 if INTERPRET else 32  # output columns per program


@triton.jit
def _ssim_kernel(a_ptr, b_ptr, taps_ptr, ssim_part_ptr, mse_part_ptr, C, H, W, HV, WV,
                 san, sac, sah, saw, sbn, sbc, sbh, sbw, data_range, c1, c2,
                 TAPS: tl.constexpr, TH: tl.constexpr, BW: tl.constexpr):
    tile_w = tl.program_id(0)
    tile_h = tl.program_id(1)
    plane = tl.program_id(2)
    n = plane // C
    ch = plane % C
    out_rows = TH - (TAPS - 1)  # valid output rows per tile
    r0 = tile_h * out_rows
    c0 = tile_w * BW
    last_h = r0 + out_rows >= HV
    last_w = c0 + BW >= WV
    ti = tl.arange(0, TH)
    tj = tl.arange(0, BW)
    rows = r0 + ti
    row_ok = rows < H
    a_row = n.to(tl.int64) * san + ch * sac + rows * sah
    b_row = n.to(tl.int64) * sbn + ch * sbc + rows * sbh
    # each input pixel's squared error belongs to one tile: its first BW columns / out_rows
    # rows, and the trailing 10 of the last tile in each direction
    mse_rows = row_ok & ((ti < out_rows) | last_h)
    hs = tl.zeros([TH, BW], dtype=tl.float32)
    hd = tl.zeros([TH, BW], dtype=tl.float32)
    hss = tl.zeros([TH, BW], dtype=tl.float32)
    hdd = tl.zeros([TH, BW], dtype=tl.float32)
    sq_err = tl.zeros([TH, BW], dtype=tl.float32)
    for j in tl.static_range(TAPS):
        cols = c0 + tj + j
        mask = row_ok[:, None] & (cols < W)[None, :]
        a = tl.load(a_ptr + a_row[:, None] + (cols * saw)[None, :], mask=mask, other=0.0).to(tl.float32)
        b = tl.load(b_ptr + b_row[:, None] + (cols * sbw)[None, :], mask=mask, other=0.0).to(tl.float32)
        g = tl.load(taps_ptr + j)
        s = a + b - data_range
        d = a - b
        hs += g * s
        hd += g * d
        hss += g * (s * s)
        hdd += g * (d * d)
        if j == 0:
            owned = mask & mse_rows[:, None]
        else:
            owned = mask & mse_rows[:, None] & (tj == BW - 1)[None, :] & last_w
        sq_err += tl.where(owned, d * d, 0.0)
    # vertical pass: out[i, :] = sum_k g[k - i] h[k, :] as a banded matmul
    band = ti[None, :] - ti[:, None]
    in_band = (band >= 0) & (band < TAPS)
    gv = tl.load(taps_ptr + tl.where(in_band, band, 0), mask=in_band, other=0.0)
    mu_s = tl.dot(gv, hs, input_precision="ieee")
    mu_d = tl.dot(gv, hd, input_precision="ieee")
    var_s = tl.dot(gv, hss, input_precision="ieee") - mu_s * mu_s
    var_d = tl.dot(gv, hdd, input_precision="ieee") - mu_d * mu_d
    mu_s2 = (mu_s + data_range) * (mu_s + data_range)
    mu_d2 = mu_d * mu_d
    # the factors 1/2 of the four SSIM terms cancel in the ratio (c1, c2 are doubled)
    ssim = (mu_s2 - mu_d2 + c1) * (var_s - var_d + c2) / ((mu_s2 + mu_d2 + c1) * (var_s + var_d + c2))
    valid = ((ti < out_rows) & (r0 + ti < HV))[:, None] & ((c0 + tj) < WV)[None, :]
    part = (plane * tl.num_programs(1) + tile_h) * tl.num_programs(0) + tile_w
    tl.store(ssim_part_ptr + part, tl.sum(tl.sum(tl.where(valid, ssim, 0.0), axis=1), axis=0))
    tl.store(mse_part_ptr + part, tl.sum(tl.sum(sq_err, axis=1), axis=0))


def ssim_psnr_launch(a: Tensor, b: Tensor, data_range: float) -> Tuple[Tensor, Tensor]:
    n, c, h, w = a.shape
    hv, wv = h - _TAPS + 1, w - _TAPS + 1
    if n == 0:
        empty = torch.zeros(0, dtype=torch.float64, device=a.device)
        return empty, empty
    taps = metrics_image.gaussian_taps().to(device=a.device, dtype=torch.float32)
    block_w = max(16, min(_TILE_W, pow2_at_least(wv)))  # tl.dot needs >= 16
    grid = (triton.cdiv(wv, block_w), triton.cdiv(hv, _TILE_H - _TAPS + 1), n * c)
    ssim_part = torch.empty(grid[0] * grid[1] * grid[2], dtype=torch.float32, device=a.device)
    mse_part = torch.empty_like(ssim_part)
    c1 = 2 * (metrics_image.SSIM_K1 * data_range) ** 2
    c2 = 2 * (metrics_image.SSIM_K2 * data_range) ** 2
    _ssim_kernel[grid](a, b, taps, ssim_part, mse_part, c, h, w, hv, wv, *a.stride(), *b.stride(),
                       float(data_range), c1, c2, TAPS=_TAPS, TH=_TILE_H, BW=block_w, **launch_options(8))
    ssim = ssim_part.view(n, -1).sum(1, dtype=torch.float64) / (c * hv * wv)
    mse = mse_part.view(n, -1).sum(1, dtype=torch.float64) / (c * h * w)
    return ssim, mse


def ssim_psnr_torch(a: Tensor, b: Tensor, data_range: float = 1.0) -> Tuple[Tensor, Tensor]:
    """The reference: ``metrics_image.ssim`` and ``metrics_image.mse_per_image``."""
    return metrics_image.ssim(a, b, data_range), metrics_image.mse_per_image(a, b)


def ssim_psnr(a: Tensor, b: Tensor, data_range: float = 1.0, *,
              backend: Optional[str] = None) -> Tuple[Tensor, Tensor]:
    """Per-image ``(ssim, mse)``, each (N,) float64, of (N, C, H, W) pairs (H, W >= 11).

    PSNR is ``10 * log10(data_range**2 / mse)``. Inference only: raises ``ValueError`` if an
    input requires grad (use ``metrics_image`` for a differentiable SSIM).
    """
    metrics_image._check_pair(a, b, min_side=_TAPS)
    check_number(data_range, "data_range", 0.0)
    if not data_range > 0:
        raise ValueError(f"data_range must be > 0, got {data_range!r}")
    if torch.is_grad_enabled() and (a.requires_grad or b.requires_grad):
        raise ValueError("a: ssim_psnr is inference-only (no backward); detach the inputs or use torch.no_grad()")
    if not a.is_floating_point() or not b.is_floating_point():
        raise ValueError(f"a: expected floating images, got {a.dtype} and {b.dtype}")
    if use_triton(backend, a, b):
        return ssim_psnr_launch(a, b, float(data_range))
    return ssim_psnr_torch(a, b, float(data_range))


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """A pair of related images (a blurred, noisy copy) for the generic tests: ``(args, kwargs)``."""
    gen = torch.Generator().manual_seed(6)
    a = torch.rand(shape, generator=gen)
    b = (0.7 * a + 0.3 * a.roll(1, -1) + 0.05 * torch.randn(shape, generator=gen)).clamp(0, 1)
    return (a.to(device=device, dtype=dtype), b.to(device=device, dtype=dtype)), {}
