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

from references import as_batch, photo_crops, pil_mosaic
from torchreid_privacy.registry import DESENSITIZERS

BATCH, HEIGHT, WIDTH = 64, 256, 128
PARAMS: Dict[str, dict] = {
    "mosaic": {"block": 24},
    "blur": {"radius": 12.0},
    "noise": {"sigma": 0.5},
}
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def pil_blur(img: Image.Image, radius: float) -> Image.Image:
    return img.filter(ImageFilter.GaussianBlur(radius))


def numpy_noise(img: Image.Image, sigma: float, rng: np.random.Generator) -> np.ndarray:
    pixels = np.asarray(img, dtype=np.float32) / 255
    return np.clip(pixels + rng.normal(0.0, sigma, pixels.shape).astype(np.float32), 0.0, 1.0)


@pytest.fixture(scope="module")
def pil_images() -> List[Image.Image]:
    return photo_crops(BATCH, HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def batch(pil_images) -> torch.Tensor:
    return as_batch(pil_images)


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
    assert out.shape == x.shape and torch.isfinite(out).all()  # equality with PIL: tests/test_reference_parity.py
