"""Desensitizers: PIL-exact semantics, batching, the registry contract and input checking."""
from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage import data as skdata

import torchreid_privacy
from torchreid_privacy.registry import DESENSITIZERS

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
PHOTOS = ["astronaut", "chelsea", "coffee"]


def _photo(name: str, size=None) -> Image.Image:
    img = Image.fromarray(getattr(skdata, name)())
    return img.resize(size, Image.BILINEAR) if size else img


def _to_batch(*images: Image.Image, dtype=torch.float32) -> torch.Tensor:
    arrays = [torch.from_numpy(np.array(img)).permute(2, 0, 1) for img in images]
    return torch.stack(arrays).to(dtype) / 255


def _to_uint8(x: torch.Tensor) -> np.ndarray:
    """First image of a batch as HWC uint8, rounded like an image writer would."""
    return x[0].permute(1, 2, 0).mul(255).round().to(torch.uint8).cpu().numpy()


def _is_stochastic(name: str) -> bool:
    return "generator" in inspect.signature(DESENSITIZERS.get(name)).parameters


def _run(name: str, x: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """Call a registered desensitizer with defaults (seeded when it draws random numbers)."""
    fn = DESENSITIZERS.get(name)
    if _is_stochastic(name):
        return fn(x, generator=torch.Generator(x.device).manual_seed(seed))
    return fn(x)


# --- mosaic -------------------------------------------------------------------------------


def _mosaic_reference(img: np.ndarray, block: int) -> np.ndarray:
    """Per image, per cell: paste the cell's top-left pixel colour over the cell."""
    out = img.copy()
    for top in range(0, img.shape[0], block):
        for left in range(0, img.shape[1], block):
            out[top : top + block, left : left + block] = img[top, left]
    return out


@pytest.mark.parametrize("block", [1, 2, 5, 24, 300])
@pytest.mark.parametrize("size", [(128, 256), (451, 300), (29, 37)])
def test_mosaic_equals_top_left_fill_to_the_pixel(block, size):
    img = _photo("chelsea", size)
    out = torchreid_privacy.desensitize(_to_batch(img), "mosaic", block=block)
    np.testing.assert_array_equal(_to_uint8(out), _mosaic_reference(np.array(img), block))


# --- blur ---------------------------------------------------------------------------------


@pytest.mark.parametrize("radius", [2, 5, 12])
@pytest.mark.parametrize("size", [(128, 256), None], ids=["256x128", "full"])
@pytest.mark.parametrize("photo", PHOTOS)
def test_blur_within_one_grey_level_of_pil(photo, size, radius):
    img = _photo(photo, size)
    ours = torchreid_privacy.desensitize(_to_batch(img), "blur", radius=radius)
    ours = _to_uint8(ours).astype(int)
    pil = np.asarray(img.filter(ImageFilter.GaussianBlur(radius))).astype(int)
    diff = np.abs(ours - pil)
    assert diff.max() <= 1
    # float32 only misses PIL's near-ties of its 24-bit fixed point; a true Gaussian
    # differs on most pixels (and by up to ~25 levels near edges).
    assert (diff > 0).mean() < 0.08


@pytest.mark.parametrize("radius", [0.4, 2, 5, 12, 40])  # 40: over 45 taps, the cumsum path along y
@pytest.mark.parametrize("photo", PHOTOS)
def test_blur_in_float64_is_pil_exactly(photo, radius):
    img = _photo(photo, (128, 256))
    ours = _to_uint8(DESENSITIZERS.get("blur")(_to_batch(img, dtype=torch.float64), radius=radius))
    np.testing.assert_array_equal(ours, np.asarray(img.filter(ImageFilter.GaussianBlur(radius))))


@pytest.mark.parametrize("radius", [2, 12, 30])
def test_blur_radius_larger_than_image_repeats_edges_like_pil(radius):
    img = _photo("coffee", (7, 5))
    ours = _to_uint8(DESENSITIZERS.get("blur")(_to_batch(img, dtype=torch.float64), radius=radius))
    np.testing.assert_array_equal(ours, np.asarray(img.filter(ImageFilter.GaussianBlur(radius))))


def test_blur_radius_zero_is_identity():
    x = torch.rand(2, 3, 16, 8)
    torch.testing.assert_close(DESENSITIZERS.get("blur")(x, radius=0), x, rtol=0, atol=0)


# --- noise --------------------------------------------------------------------------------


def _grey(value: float = 0.5, n: int = 4) -> torch.Tensor:
    return torch.full((n, 3, 64, 64), value)


def test_noise_adds_zero_mean_noise_of_the_given_sigma():
    x, sigma = _grey(), 0.05
    gen = torch.Generator().manual_seed(1)
    added = DESENSITIZERS.get("noise")(x, sigma=sigma, generator=gen) - x
    stderr = sigma / math.sqrt(added.numel())
    assert abs(added.mean().item()) < 5 * stderr
    assert added.std().item() == pytest.approx(sigma, rel=0.02)


@pytest.mark.parametrize("level", [0.5, 0.2])
def test_noise_clips_as_the_normal_cdf_predicts(level):
    x, sigma = _grey(level), 0.5
    out = DESENSITIZERS.get("noise")(x, sigma=sigma, generator=torch.Generator().manual_seed(2))
    assert out.min().item() == 0.0 and out.max().item() == 1.0
    cdf = lambda z: 0.5 * (1 + math.erf(z / math.sqrt(2)))  # noqa: E731
    assert (out == 0).float().mean().item() == pytest.approx(cdf(-level / sigma), abs=0.01)
    assert (out == 1).float().mean().item() == pytest.approx(1 - cdf((1 - level) / sigma), abs=0.01)


def test_noise_is_reproducible_from_the_generator():
    x = torch.rand(2, 3, 32, 16)
    def draw(seed: int) -> torch.Tensor:
        return DESENSITIZERS.get("noise")(x, generator=torch.Generator().manual_seed(seed))

    torch.testing.assert_close(draw(3), draw(3), rtol=0, atol=0)
    assert not torch.equal(draw(3), draw(4))


# --- every registered desensitizer --------------------------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
@pytest.mark.parametrize("channels", [3, 1])
@pytest.mark.parametrize("name", DESENSITIZERS.names())
def test_registered_desensitizer_contract(name, channels, dtype, device):
    x = torch.rand(3, channels, 40, 24, generator=torch.Generator().manual_seed(0))
    x = x.to(device, dtype)
    before = x.clone()
    out = _run(name, x)
    assert out.shape == x.shape and out.dtype == x.dtype and out.device == x.device
    assert out.min().item() >= 0.0 and out.max().item() <= 1.0
    assert torch.equal(x, before), "the input batch was modified in place"
    assert not torch.equal(out, x), "the desensitizer left the batch unchanged"
    if _is_stochastic(name):
        torch.testing.assert_close(_run(name, x, seed=5), _run(name, x, seed=5), rtol=0, atol=0)
    else:
        stacked = torch.cat([_run(name, image[None]) for image in x])
        torch.testing.assert_close(out, stacked, rtol=0, atol=0)


@pytest.mark.parametrize("name", DESENSITIZERS.names())
def test_registered_desensitizer_accepts_non_contiguous_batches(name):
    x = torch.rand(2, 3, 40, 48)
    strided = x[..., ::2]
    channels_last = x.contiguous(memory_format=torch.channels_last)
    expected = _run(name, strided.contiguous())
    torch.testing.assert_close(_run(name, strided), expected, rtol=0, atol=0)
    torch.testing.assert_close(_run(name, channels_last), _run(name, x), rtol=0, atol=0)


@pytest.mark.parametrize("shape", [(0, 3, 8, 8), (2, 3, 1, 1), (1, 1, 1, 9)])
@pytest.mark.parametrize("name", DESENSITIZERS.names())
def test_registered_desensitizer_handles_empty_and_one_pixel_batches(name, shape):
    x = torch.rand(shape)
    out = _run(name, x)
    assert out.shape == x.shape
    if not _is_stochastic(name) and x.shape[-2:] == (1, 1):  # a lone pixel keeps its grey level
        torch.testing.assert_close(out, x, rtol=0, atol=0.5 / 255 + 1e-6)


# --- input checking -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, params, match",
    [
        ("mosaic", {"block": 0}, "block"),
        ("mosaic", {"block": 2.5}, "block"),
        ("blur", {"radius": -1}, "radius"),
        ("noise", {"sigma": -0.1}, "sigma"),
        ("noise", {"sigma": float("nan")}, "sigma"),
        ("blur", {"block": 3}, "block"),
    ],
)
def test_bad_parameters_are_named(name, params, match):
    with pytest.raises(ValueError, match=match):
        torchreid_privacy.desensitize(torch.rand(1, 3, 8, 8), name, **params)


@pytest.mark.parametrize(
    "images",
    [
        torch.rand(3, 8, 8),
        torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8),
        torch.rand(1, 3, 8, 8) + 1.0,
        torch.rand(1, 3, 8, 8) - 1.0,
        torch.rand(1, 2, 8, 8),
        torch.full((1, 3, 8, 8), float("nan")),
    ],
    ids=["3d", "uint8", "above-one", "below-zero", "two-channels", "nan"],
)
def test_bad_images_are_named(images):
    with pytest.raises(ValueError, match="images"):
        torchreid_privacy.desensitize(images, "mosaic")


def test_unknown_desensitizer_lists_the_registered_names():
    with pytest.raises(KeyError, match="mosaic"):
        torchreid_privacy.desensitize(torch.rand(1, 3, 8, 8), "mosiac")
