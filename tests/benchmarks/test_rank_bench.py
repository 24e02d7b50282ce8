"""Evaluation speed: ranking at Market-1501 size and SSIM+PSNR on a 64-image batch.

Run: ``pytest tests/benchmarks/test_rank_bench.py --benchmark-only``. The torchreid numbers
are for its pure-Python evaluator (the PyPI wheel ships no Cython), measured on a query
subset and extrapolated (``extra_info``), because the full run takes minutes.
"""
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from references import market_ranking_problem, naive_conv2d_ssim
from torchreid_privacy import bridge
from torchreid_privacy.metrics.settings import ImageMetricAccumulator, evaluate_rank

MARKET_QUERY, MARKET_GALLERY, FEATURE_DIM = 3368, 15913, 512
TORCHREID_SUBSET = 300


@pytest.fixture(scope="module")
def market_problem():
    return market_ranking_problem(MARKET_QUERY, MARKET_GALLERY, FEATURE_DIM)


@pytest.mark.benchmark(group="rank-market1501")
def test_evaluate_rank_market_size(benchmark, market_problem):
    cmc, m_ap, m_inp = benchmark.pedantic(evaluate_rank, args=market_problem, rounds=3, iterations=1)
    assert cmc.shape == (50,) and 0 <= m_inp <= m_ap <= 1


@pytest.mark.benchmark(group="rank-market1501")
def test_torchreid_python_rank_subset(benchmark, market_problem):
    dist, q_pids, g_pids, q_cams, g_cams = market_problem
    sub = slice(0, TORCHREID_SUBSET)
    args = (dist[sub], q_pids[sub], g_pids, q_cams[sub], g_cams)
    cmc_ref, map_ref = benchmark.pedantic(bridge.torchreid_evaluate_rank, args=args, rounds=1, iterations=1)
    start = time.perf_counter()
    cmc, m_ap, _ = evaluate_rank(*args)
    ours = time.perf_counter() - start
    subset_s = benchmark.stats.stats.min
    benchmark.extra_info["torchreid_extrapolated_full_s"] = subset_s * MARKET_QUERY / TORCHREID_SUBSET
    benchmark.extra_info["speedup_on_subset"] = subset_s / ours
    assert cmc.shape == cmc_ref.shape and 0 <= m_ap <= 1  # equality: tests/test_reference_parity.py


# --------------------------------------------------------------------------- SSIM + PSNR
@pytest.fixture(scope="module")
def image_batch():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(64, 3, 256, 128, generator=g)
    b = (a + 0.1 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    return a, b


def ssim_and_psnr(a: torch.Tensor, b: torch.Tensor):
    acc = ImageMetricAccumulator()
    acc.update(a, b)
    return acc.result()


@pytest.mark.benchmark(group="ssim-64x3x256x128")
def test_ssim_psnr_fast(benchmark, image_batch):
    result = benchmark.pedantic(ssim_and_psnr, args=image_batch, rounds=5, iterations=1, warmup_rounds=1)
    assert 0 < result["ssim"] < 1 and result["count"] == 64  # equality: tests/test_reference_parity.py


@pytest.mark.benchmark(group="ssim-64x3x256x128")
def test_ssim_naive_conv2d(benchmark, image_batch):
    ssim = benchmark.pedantic(naive_conv2d_ssim, args=image_batch, rounds=3, iterations=1, warmup_rounds=1)
    assert ssim.shape == (64,) and bool(((ssim > 0) & (ssim < 1)).all())
