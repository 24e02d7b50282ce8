"""SSIM/MSE kernel: equal to scikit-image on real photographs, tiles stitched exactly."""
import importlib

import numpy as np
import pytest
import torch
from skimage import data as skdata
from skimage.metrics import mean_squared_error, structural_similarity

from torchreid_privacy import kernels

ssim_module = importlib.import_module("torchreid_privacy.kernels.ssim_psnr")


def _photos():
    """Two 64x64 crops of photographs and degraded copies (mosaic, noise)."""
    crops = [skdata.astronaut()[:128:2, 100:228:2], skdata.coffee()[100:228:2, 200:328:2]]
    a = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float().div(255)
    b = kernels.mosaic(a, 6, backend="torch")
    b[1] = kernels.add_noise(a[1:2], 0.1, seed=0, backend="torch")[0]
    return a, b


def test_matches_scikit_image_on_photographs():
    a, b = _photos()
    ssim, mse = kernels.ssim_psnr(a, b, backend="triton")
    assert ssim.dtype == mse.dtype == torch.float64
    for i in range(2):
        x, y = a[i].permute(1, 2, 0).double().numpy(), b[i].permute(1, 2, 0).double().numpy()
        want = structural_similarity(x, y, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                     data_range=1.0, channel_axis=2)
        assert abs(float(ssim[i]) - want) < 2e-5
        assert abs(float(mse[i]) - mean_squared_error(x, y)) < 1e-7 + 1e-5 * mean_squared_error(x, y)


def test_small_tiles_stitch_to_the_same_result(monkeypatch):
    """Several column strips, row chunks and plane blocks (the last one partial) per launch:
    windows and squared errors must each be counted once."""
    a = torch.rand(1, 3, 24, 20)
    b = (a + 0.2 * torch.randn_like(a)).clamp(0, 1)
    want = kernels.ssim_psnr(a, b, backend="torch")
    monkeypatch.setattr(ssim_module, "_TILE_W", 8)
    monkeypatch.setattr(ssim_module, "_CHUNK_ROWS", 8)
    monkeypatch.setattr(ssim_module, "_PLANES", 2)
    got = kernels.ssim_psnr(a, b, backend="triton")
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=2e-6, rtol=1e-5)


def test_identical_images_and_data_range():
    a = torch.rand(2, 1, 20, 30)
    ssim, mse = kernels.ssim_psnr(a, a, backend="triton")
    torch.testing.assert_close(ssim, torch.ones(2, dtype=torch.float64))
    assert float(mse.abs().max()) == 0.0
    scaled = kernels.ssim_psnr(a * 255, (a * 255).flip(-1), data_range=255.0, backend="triton")
    ref = kernels.ssim_psnr(a * 255, (a * 255).flip(-1), data_range=255.0, backend="torch")
    torch.testing.assert_close(scaled[0], ref[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(scaled[1], ref[1], atol=1e-3, rtol=1e-5)


def test_inference_only_and_bad_inputs():
    a = torch.rand(1, 3, 16, 16)
    with pytest.raises(ValueError, match="inference-only"):
        kernels.ssim_psnr(a.requires_grad_(True), a.detach(), backend="triton")
    with torch.no_grad():
        kernels.ssim_psnr(a, a.detach(), backend="triton")  # fine without autograd
    with pytest.raises(ValueError, match="at least 11x11"):
        kernels.ssim_psnr(torch.rand(1, 3, 10, 40), torch.rand(1, 3, 10, 40))
    with pytest.raises(ValueError, match=r"^b: expected shape \(1, 3, 16, 16\)"):
        kernels.ssim_psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 17))
    with pytest.raises(ValueError, match="data_range"):
        kernels.ssim_psnr(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16), data_range=0)
