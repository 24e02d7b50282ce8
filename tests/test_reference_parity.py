"""Correctness checks that used to live only in the opt-in benchmarks: each against an
independent reference (PIL, torchreid, a plain conv2d SSIM, the payload format's own sums)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

from references import as_batch, market_ranking_problem, naive_conv2d_ssim, photo_crops, pil_mosaic
from torchreid_privacy import bridge
from torchreid_privacy.metrics.settings import ImageMetricAccumulator, evaluate_rank
from torchreid_privacy.registry import DESENSITIZERS
from torchreid_privacy.sealing.payload import payload_overhead, seal, unseal
from torchreid_privacy.folders.process import encode_image


def test_mosaic_equals_pils_top_left_pixel_mosaic_on_photographs():
    images = photo_crops(8)
    out = DESENSITIZERS.get("mosaic")(as_batch(images), block=24)
    got = out.permute(0, 2, 3, 1).mul(255).round().byte().numpy()
    for g, img in zip(got, images):
        np.testing.assert_array_equal(g, np.asarray(pil_mosaic(img, 24)))


def test_ranking_equals_torchreid_on_a_market_size_gallery():
    """Market-1501's 15,913-image gallery, 40 queries (torchreid's Python loop takes ~21 ms each)."""
    dist, q_pids, g_pids, q_cams, g_cams = market_ranking_problem(num_query=40)
    cmc_ref, map_ref = bridge.torchreid_evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
    cmc, m_ap, _ = evaluate_rank(dist, q_pids, g_pids, q_cams, g_cams)
    np.testing.assert_allclose(cmc, cmc_ref, atol=1e-6)
    assert abs(m_ap - map_ref) < 1e-6


def test_ssim_equals_a_plain_conv2d_ssim():
    a = as_batch(photo_crops(6))
    rng = np.random.default_rng(0)
    b = (a + 0.1 * torch.from_numpy(rng.standard_normal(a.shape).astype(np.float32))).clamp(0, 1)
    acc = ImageMetricAccumulator()
    acc.update(a, b)
    assert acc.result()["ssim"] == pytest.approx(naive_conv2d_ssim(a, b).mean().item(), abs=1e-5)


def test_sealing_adds_exactly_the_documented_bytes():
    """Header, name, size field, padding to the size bucket and tag, plus the PNG chunk's 12 bytes."""
    key = bytes(range(32))
    for i, img in enumerate(photo_crops(4)):
        name = f"{i:04d}_c1s1_{i:06d}_00.png"
        buf = io.BytesIO()
        img.resize((64, 128), Image.BILINEAR).save(buf, format="JPEG", quality=95)
        original = buf.getvalue()
        plain = encode_image(np.asarray(img), ".png")
        sealed = seal(plain, original, name, key).image
        assert len(sealed) - len(plain) - len(original) == payload_overhead(name, len(original)) + 12
        assert unseal(sealed, name, key) == original
