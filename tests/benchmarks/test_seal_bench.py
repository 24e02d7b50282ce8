"""What sealing adds to ``anonymize``: encoding 64 P images (256x128 PNG) with and without sealing
each one's original (a Market-1501-like 128x64 JPEG) into it. No model runs: the G forward pass is
the same either way. ``extra_info`` holds the payload overhead per image (bytes beyond the
original's own bytes: header, nonce, tag, name, chunk framing). Sealed time / plain time is the
time ratio. Run:

    python -m pytest tests/benchmarks/test_seal_bench.py --benchmark-only -q
"""
from __future__ import annotations

import io
from typing import List, Tuple

import numpy as np
import pytest
from PIL import Image

from references import photo_crops
from torchreid_privacy.folders.process import encode_image
from torchreid_privacy.sealing.payload import seal, unseal

BATCH, HEIGHT, WIDTH = 64, 256, 128
KEY = bytes(range(32))


def _images() -> List[Tuple[str, np.ndarray, bytes]]:
    """(relative name, P pixels 256x128, original JPEG bytes 128x64) from scikit-image's photos."""
    out = []
    for i, crop in enumerate(photo_crops(BATCH, HEIGHT, WIDTH)):
        buf = io.BytesIO()
        crop.resize((64, 128), Image.BILINEAR).save(buf, format="JPEG", quality=95)
        p = np.asarray(crop.transpose(Image.FLIP_LEFT_RIGHT))
        out.append((f"{i // 6:04d}_c{i % 6 + 1}s1_{i:06d}_00.png", p, buf.getvalue()))
    return out


@pytest.fixture(scope="module")
def images():
    return _images()


def _plain(images):
    return [encode_image(p, ".png") for _, p, _ in images]


def _sealed(images):
    return [seal(encode_image(p, ".png"), original, name, KEY).image for name, p, original in images]


@pytest.mark.benchmark(group="seal: 64 PNG 256x128")
@pytest.mark.parametrize("mode", ["plain", "sealed"])
def test_encode_with_and_without_sealing(benchmark, images, mode):
    files = benchmark(_plain if mode == "plain" else _sealed, images)
    assert len(files) == BATCH
    plain = _plain(images)
    originals = [o for _, _, o in images]
    benchmark.extra_info["mean_p_bytes"] = float(np.mean([len(f) for f in files]))
    benchmark.extra_info["mean_original_bytes"] = float(np.mean([len(o) for o in originals]))
    if mode == "sealed":
        overhead = [len(s) - len(p) - len(o) for s, p, o in zip(files, plain, originals)]
        benchmark.extra_info["payload_overhead_bytes_per_image"] = float(np.mean(overhead))
        assert min(overhead) > 0 and all(unseal(f, name, KEY) == o for f, (name, _, o) in zip(files, images))
