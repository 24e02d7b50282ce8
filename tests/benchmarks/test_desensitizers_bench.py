"""Batched desensitizers vs the per-image PIL/numpy path of the paper's data pipeline.

One 64 x 3 x 256 x 128 float32 batch (torchreid's training batch) built from real
photographs. Each desensitizer has a benchmark group holding our batched call and the
per-image PIL path on the same 64 images as uint8 PIL images (what a dataset transform
sees); PIL time / batched time is the speed-up. Run:

    python -m pytest tests/benchmarks/test_desensitizers_bench.py --benchmark-only -q
"""
from __future__ import annotations

from typing import Callable, Dict, List

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from skimage import data as skdata

from torchreid_privacy.registry import DESENSITIZERS

BATCH, HEIGHT, WIDTH = 64, 256, 128
PARAMS: Dict[str, dict] = {
    "mosaic": {"block": 24},
    "blur": {"radius": 12.0},
    "noise": {"sigma": 0.5},
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _pil_batch() -> List[Image.Image]:
    """64 distinct 256x128 crops of scikit-image's photographs."""
    images = []
    names = ("astronaut", "chelsea", "coffee")
    photos = [Image.fromarray(getattr(skdata, name)()) for name in names]
    for i in range(BATCH):
        photo = photos[i % len(photos)]
        w, h = photo.size
        left = (i * 37) % (w // 2)
        crop = photo.crop((left, 0, left + w // 2, h)).resize((WIDTH, HEIGHT), Image.BILINEAR)
        images.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else crop)
    return images


def pil_mosaic(img: Image.Image, block: int) -> Image.Image:
    """Top-left-pixel mosaic with PIL: an affine NEAREST sample at each cell's top-left
    pixel centre, then an integer NEAREST upscale (a plain ``resize`` down samples cell
    centres instead, and drops partial cells)."""
    w, h = img.size
    cols, rows = -(-w // block), -(-h // block)
    offset = 0.5 - block / 2
    affine = (block, 0, offset, 0, block, offset)
    corners = img.transform((cols, rows), Image.AFFINE, affine, Image.NEAREST)
    return corners.resize((cols * block, rows * block), Image.NEAREST).crop((0, 0, w, h))


def pil_blur(img: Image.Image, radius: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def numpy_noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> np.ndarray:
    pixels = np.asarray(img, dtype=np.float32) / 255
    return np.clip(pixels + rng.normal(0.0, sigma, pixels.shape).astype(np.float32), 0.0, 1.0)


@pytest.fixture(scope="module")
def pil_images() -> List[Image.Image]:
    return _pil_batch()


@pytest.fixture(scope="module")
def batch(pil_images) -> torch.Tensor:
    arrays = np.stack([np.asarray(img) for img in pil_images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255).contiguous()


def _per_image(name: str) -> Callable[[Image.Image], object]:
    params = PARAMS[name]
    if name == "mosaic":
        return lambda img: pil_mosaic(img, **params)
    if name == "blur":
        return lambda img: pil_blur(img, **params)
    rng = np.random.default_rng(0)
    return lambda img: numpy_noise(img, rng=rng, **params)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_pil_per_image(benchmark, name, pil_images):
    benchmark.group = f"desensitize-{name}"
    fn = _per_image(name)
    out = benchmark(lambda: [fn(img) for img in pil_images])
    assert len(out) == BATCH


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", sorted(PARAMS))
def test_batched(benchmark, name, device, batch, pil_images):
    benchmark.group = f"desensitize-{name}"
    fn = DESENSITIZERS.get(name)
    x = batch.to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def run() -> torch.Tensor:
        out = fn(x, **PARAMS[name])
        sync()
        return out

    out = benchmark(run)
    assert out.shape == x.shape
    if name == "mosaic":  # the PIL path above computes the same thing, to the pixel
        expected = np.asarray(pil_mosaic(pil_images[0], **PARAMS[name]))
        got = out[0].permute(1, 2, 0).mul(255).round().byte().cpu().numpy()
        np.testing.assert_array_equal(got, expected)
