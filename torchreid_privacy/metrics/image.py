"""Per-image PSNR and SSIM that match scikit-image, fast enough to run over a whole test set.

SSIM follows ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
use_sample_covariance=False)``: 11-tap Gaussian (scipy's ``truncate=3.5``), population
covariance, and the mean taken over the map cropped by the 5-pixel border. Because the border
is cropped, only fully-inside windows count, so a *valid* (unpadded) convolution gives the same
numbers as scipy's reflect-padded filter -- no padding mode to emulate.

SSIM and the per-image MSE come from ``kernels.ssim_psnr``: one fused Triton pass over both
batches, or its torch reference (four filtered planes s, d, s^2, d^2 by separable depthwise
convolutions, a few images at a time), as the run's backend table says (kernels/README.md).
"""
from __future__ import annotations

import math
from typing import Dict

import torch

from torchreid_privacy import kernels
from torchreid_privacy.kernels.ssim_psnr import (  # noqa: F401  (re-exported: the SSIM definition)
    SSIM_K1,
    SSIM_K2,
    SSIM_SIGMA,
    SSIM_TRUNCATE,
    as_float,
    check_pair,
    gaussian_taps,
)


def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean squared error of each image, accumulated in float64."""
    check_pair(a, b)
    diff = as_float(a) - as_float(b)
    return (diff * diff).flatten(1).sum(1, dtype=torch.float64) / diff[0].numel()


def _psnr_from_mse(mse: torch.Tensor, data_range: float) -> torch.Tensor:
    # 0 MSE (identical images) -> +inf, as in scikit-image
    return 10.0 * torch.log10(data_range ** 2 / mse)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB, (N,) float64; equals ``skimage.metrics.peak_signal_noise_ratio``."""
    return _psnr_from_mse(mse_per_image(a, b), float(data_range))


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Per-image SSIM, (N,) float64, of (N, C, H, W) images (H, W >= 11); no gradient.

    Equals ``skimage.metrics.structural_similarity(gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=data_range, channel_axis=...)`` per image.
    """
    with torch.no_grad():
        return kernels.ssim_psnr(as_float(a).detach(), as_float(b).detach(), float(data_range))[0]


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
        ssim_val, mse = kernels.ssim_psnr(as_float(o).detach(), as_float(x).detach(), self.data_range)
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
