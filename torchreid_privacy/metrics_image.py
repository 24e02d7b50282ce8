"""Per-image PSNR and SSIM that match scikit-image, fast enough to run over a whole test set.

SSIM follows ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``: 11-tap Gaussian (scipy's ``truncate=3.5``), population
covariance, and the mean taken over the map cropped by the 5-pixel border. Because the border
is cropped, only fully-inside windows count, so a *valid* (unpadded) convolution gives the same
numbers as scipy's reflect-padded filter -- no padding mode to emulate.

Speed: SSIM needs a, b, a^2, b^2, ab filtered. With s = a + b and d = a - b, the terms in
SSIM are linear in four filtered maps (s, d, s^2, d^2):
    2 mu_a mu_b = (mu_s^2 - mu_d^2) / 2,  mu_a^2 + mu_b^2 = (mu_s^2 + mu_d^2) / 2,
    2 cov_ab    = (var_s - var_d) / 2,    var_a + var_b   = (var_s + var_d) / 2,
so four planes per channel are filtered instead of five. s is shifted by -data_range
(variances are shift-invariant) to keep the E[x^2] - E[x]^2 cancellation small in float32.
The separable filter runs as two depthwise convolutions over a few images at a time, so the
working set stays in cache.
"""
from __future__ import annotations

import math
from typing import Dict

import torch
import torch.nn.functional as F

SSIM_SIGMA = 1.5
SSIM_TRUNCATE = 3.5  # scikit-image's value for gaussian_weights=True -> 11 taps
SSIM_K1, SSIM_K2 = 0.01, 0.03
_IMAGES_PER_STEP = 4  # images filtered together: ~6 MB of planes at 256x128, cache-sized


def gaussian_taps(sigma: float = SSIM_SIGMA, truncate: float = SSIM_TRUNCATE) -> torch.Tensor:
    """scipy.ndimage's normalized 1-D Gaussian kernel (radius ``int(truncate * sigma + 0.5)``)."""
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    taps = torch.exp(-0.5 * (x / sigma) ** 2)
    return taps / taps.sum()


def _check_pair(a: torch.Tensor, b: torch.Tensor, min_side: int = 1) -> None:
    if not isinstance(a, torch.Tensor) or a.dim() != 4:
        raise ValueError(f"a: expected an (N, C, H, W) tensor, got {getattr(a, 'shape', type(a).__name__)}")
    if not isinstance(b, torch.Tensor) or b.shape != a.shape:
        raise ValueError(f"b: expected shape {tuple(a.shape)}, got {getattr(b, 'shape', type(b).__name__)}")
    if min(a.shape[-2:]) < min_side:
        raise ValueError(f"a: images must be at least {min_side}x{min_side} pixels, got {tuple(a.shape[-2:])}")


def _float(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image, accumulated in float64."""
    _check_pair(a, b)
    diff = _float(a) - _float(b)
    return (diff * diff).flatten(1).sum(1, dtype=torch.float64) / diff[0].numel()


def _psnr_from_mse(mse: torch.Tensor, data_range: float) -> torch.Tensor:
    # 0 MSE (identical images) -> +inf, as in scikit-image
    return 10.0 * torch.log10(data_range ** 2 / mse)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, (N,) float64; equals ``skimage.metrics.peak_signal_noise_ratio``."""
    return _psnr_from_mse(mse_per_image(a, b), float(data_range))


def _ssim_and_mse(a: torch.Tensor, b: torch.Tensor, data_range: float):
    """SSIM (N,) and MSE (N,) of a few images, sharing the d = a - b plane.

    Written with in-place ops: the block is cache-sized, so the passes stay cheap only while
    no new buffers are allocated.
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


def _ssim_and_mse_batched(a: torch.Tensor, b: torch.Tensor, data_range: float):
    k = len(gaussian_taps())
    _check_pair(a, b, min_side=k)
    a, b = _float(a).contiguous(), _float(b).contiguous()
    parts = [_ssim_and_mse(a[i:i + _IMAGES_PER_STEP], b[i:i + _IMAGES_PER_STEP], data_range)
             for i in range(0, a.shape[0], _IMAGES_PER_STEP)]
    if not parts:
        empty = torch.zeros(0, dtype=torch.float64, device=a.device)
        return empty, empty
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM, (N,) float64, of (N, C, H, W) images (H, W >= 11).

    Equals ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=...)`` per image.
    """
    return _ssim_and_mse_batched(a, b, float(data_range))[0]


class ImageMetricAccumulator:
    """Streams PSNR / SSIM over batches so a whole loader never sits in memory.

    >>> acc = ImageMetricAccumulator()
    >>> for o, p in pairs:  # doctest: +SKIP
    ...     acc.update(o, p)
    >>> acc.result()  # doctest: +SKIP
    {'psnr': ..., 'psnr_dataset': ..., 'ssim': ..., 'count': ...}
    """

    def __init__(self, data_range: float = 1.0) -> None:
        if not data_range > 0:
            raise ValueError(f"data_range: must be > 0, got {data_range}")
        self.data_range = float(data_range)
        self.count = 0
        self._finite_psnr_sum = 0.0
        self._finite_psnr_count = 0
        self._mse_sum = 0.0
        self._ssim_sum = 0.0

    @torch.no_grad()
    def update(self, o: torch.Tensor, x: torch.Tensor) -> None:
        """Add a batch of (N, C, H, W) image pairs with values in [0, data_range]."""
        from torchreid_privacy import kernels

        if kernels.use_triton(None, o, x):  # CUDA: five statistics in one fused pass
            ssim_val, mse = kernels.ssim_psnr(o.detach(), x.detach(), self.data_range, backend="triton")
        else:
            ssim_val, mse = _ssim_and_mse_batched(o.detach(), x.detach(), self.data_range)
        per_image = _psnr_from_mse(mse, self.data_range)
        finite = torch.isfinite(per_image)
        self._finite_psnr_sum += float(per_image[finite].sum())
        self._finite_psnr_count += int(finite.sum())
        self._mse_sum += float(mse.sum())
        self._ssim_sum += float(ssim_val.sum())
        self.count += int(mse.numel())

    @classmethod
    def merged(cls, parts: "list[ImageMetricAccumulator]") -> "ImageMetricAccumulator":
        """One accumulator holding the sums of ``parts`` (e.g. gathered from several processes)."""
        out = cls(parts[0].data_range)
        for part in parts:
            out.count += part.count
            out._finite_psnr_sum += part._finite_psnr_sum
            out._finite_psnr_count += part._finite_psnr_count
            out._mse_sum += part._mse_sum
            out._ssim_sum += part._ssim_sum
        return out

    def result(self) -> Dict[str, float]:
        """``psnr``: mean of the finite per-image PSNRs (inf if all images are identical);
        ``psnr_dataset``: PSNR of the mean MSE over all images; ``ssim``: mean SSIM."""
        if self.count == 0:
            raise ValueError("ImageMetricAccumulator: no images were added (call update first)")
        mean_mse = self._mse_sum / self.count
        return {
            "psnr": (self._finite_psnr_sum / self._finite_psnr_count
                     if self._finite_psnr_count else math.inf),
            "psnr_dataset": 10.0 * math.log10(self.data_range ** 2 / mean_mse) if mean_mse > 0 else math.inf,
            "ssim": self._ssim_sum / self.count,
            "count": self.count,
        }


def image_metrics(o: torch.Tensor, x: torch.Tensor, data_range: float = 1.0) -> Dict[str, float]:
    """PSNR (per-image mean and dataset-level) and mean SSIM of the pairs (o[i], x[i])."""
    acc = ImageMetricAccumulator(data_range)
    acc.update(o, x)
    return acc.result()
