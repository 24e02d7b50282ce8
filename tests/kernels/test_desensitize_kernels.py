"""Mosaic / blur / noise kernels: PIL semantics, tiling, seeded reproducible noise."""
import importlib

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage import data as skdata

from torchreid_privacy import kernels

blur_module = importlib.import_module("torchreid_privacy.kernels.gaussian_blur")


def _photo(height=96, width=64):
    photo = Image.fromarray(skdata.astronaut()).resize((width, height), Image.BILINEAR)
    return photo, torch.from_numpy(np.array(photo)).permute(2, 0, 1)[None].float().div(255)


def test_blur_kernel_stays_within_a_grey_level_of_pil():
    photo, x = _photo()
    pil = torch.from_numpy(np.array(photo.filter(ImageFilter.GaussianBlur(5)))).permute(2, 0, 1).float()
    got = kernels.gaussian_blur(x, 5.0, backend="triton")[0] * 255
    diff = (got - pil).abs()
    assert float(diff.max()) <= 1.0 + 1e-3
    assert float((diff > 0.5).float().mean()) < 0.05


def test_blur_kernel_with_many_small_tiles(monkeypatch):
    """Several programs per launch, partial last tiles, the column pass's cumulative-sum form."""
    monkeypatch.setattr(blur_module, "_TILE", 256)
    x = torch.rand(2, 3, 29, 13)
    for radius in (2.0, 30.0):  # 30: more than 45 column taps -> the reference's cumsum pass
        blur_module.compare(kernels.gaussian_blur(x, radius, backend="torch"),
                            kernels.gaussian_blur(x, radius, backend="triton"))


def test_mosaic_kernel_fills_cells_with_their_top_left_pixel():
    photo, x = _photo(height=100, width=70)  # partial cells at the right and bottom edges
    pixels = np.asarray(photo)
    rows, cols = np.arange(100) // 24 * 24, np.arange(70) // 24 * 24
    want = pixels[rows[:, None], cols[None, :]]
    got = kernels.mosaic(x, 24, backend="triton")[0].permute(1, 2, 0).mul(255).round().byte().numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_noise_is_reproducible_by_seed(backend):
    x = torch.rand(2, 3, 21, 13)
    first = kernels.add_noise(x, 0.5, seed=3, backend=backend)
    assert torch.equal(first, kernels.add_noise(x, 0.5, seed=3, backend=backend))
    assert not torch.equal(first, kernels.add_noise(x, 0.5, seed=4, backend=backend))
    torch.manual_seed(0)
    drawn = kernels.add_noise(x, 0.5, backend=backend)
    torch.manual_seed(0)
    assert torch.equal(drawn, kernels.add_noise(x, 0.5, backend=backend))


def test_torch_noise_draws_from_the_generator_like_the_plain_formula():
    """The torch path is the noise desensitizer as it always was (the demo's numbers rely on it)."""
    x = torch.rand(1, 3, 8, 8)
    gen = torch.Generator().manual_seed(9)
    want = (x + 0.2 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    torch.testing.assert_close(kernels.add_noise(x, 0.2, 9, backend="torch"), want, atol=0, rtol=0)
    got = kernels.add_noise(x, 0.2, generator=torch.Generator().manual_seed(9), backend="torch")
    torch.testing.assert_close(got, want, atol=0, rtol=0)


def test_noise_statistics_and_clipping():
    x = torch.full((4, 3, 64, 32), 0.5)
    out = kernels.add_noise(x, 0.1, seed=1, backend="triton")
    noise = out - x
    assert abs(float(noise.mean())) < 0.005 and abs(float(noise.std()) - 0.1) < 0.005
    clipped = kernels.add_noise(x, 2.0, seed=1, backend="triton")
    assert float(clipped.min()) == 0.0 and float(clipped.max()) == 1.0
    assert 0.3 < float((clipped == 1.0).float().mean()) < 0.5  # P(N(0, 2) > 0.5) = 0.40
    assert float(kernels.add_noise(x, 0.0, seed=1, backend="triton").sub(x).abs().max()) == 0.0


@pytest.mark.parametrize("backend", ["triton", "torch"])
def test_noise_from_a_generator_is_reproducible_and_advances_it(backend):
    """The engine's seeded evaluation noise: a re-seeded generator repeats the draw; one
    generator used twice gives two draws."""
    x = torch.rand(1, 3, 16, 8)
    outs = [kernels.add_noise(x, 0.5, generator=torch.Generator().manual_seed(5), backend=backend) for _ in range(2)]
    assert torch.equal(outs[0], outs[1])
    gen = torch.Generator().manual_seed(5)
    first = kernels.add_noise(x, 0.5, generator=gen, backend=backend)
    assert torch.equal(first, outs[0])
    assert not torch.equal(kernels.add_noise(x, 0.5, generator=gen, backend=backend), first)


@pytest.mark.parametrize("call,arg", [
    (lambda x: kernels.mosaic(x, 0), "block"),
    (lambda x: kernels.mosaic(x, 2.5), "block"),
    (lambda x: kernels.gaussian_blur(x, -1.0), "radius"),
    (lambda x: kernels.add_noise(x, -0.1), "sigma"),
    (lambda x: kernels.add_noise(x, 0.1, seed=-1), "seed"),
    (lambda x: kernels.mosaic(x[0], 2), "x"),
    (lambda x: kernels.add_noise(x, 0.1, seed=1, generator=torch.Generator()), "seed"),
    (lambda x: kernels.add_noise(x, 0.1, generator=3), "generator"),
    (lambda x: kernels.gaussian_blur(x.long(), 2.0), "x"),
])
def test_bad_arguments_raise_value_error_naming_them(call, arg):
    with pytest.raises(ValueError, match=arg):
        call(torch.rand(1, 3, 8, 8))
