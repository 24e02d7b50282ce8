"""``search`` speed on CPU: feature throughput (images/s, reading + resize + G + C), ranking a
1,000 x 10,000 problem, and what the feature cache saves on a second run. Weights are random (speed
does not depend on them). Run:

    python -m pytest tests/benchmarks/test_search_bench.py --benchmark-only -q -s
"""
from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from torchreid_privacy.config import load_config
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config
from torchreid_privacy.inference import model_from_config
from torchreid_privacy.models.nets import build_generator, build_reid_model
from torchreid_privacy.metrics.ranking import distances, protocol_mask, rank_metrics, top_k
from torchreid_privacy.search.query import folder_features, search

MODELS = {
    # the demo's model: tiny_reid + U-Net ngf 16 at 64x32
    "quickstart-64x32": [],
    # Market-1501 size with a torchreid ResNet-50 as C (the paper's AGW is ResNet-50 + non-local)
    "resnet50-256x128": ["model.name", "resnet50", "data.height", "256", "data.width", "128",
                         "privacy.generator.ngf", "64", "privacy.generator.num_downs", "7"],
}
N_QUERY, N_GALLERY, DIM = 1000, 10000, 512


@pytest.fixture(autouse=True)
def all_cores():
    """tests/conftest.py pins torch to one thread; a throughput number uses the machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


def _model(overrides):
    cfg = load_config(packaged_config(QUICKSTART), list(overrides))
    return model_from_config(cfg, build_reid_model(cfg, 10, loss="triplet", load_weights=False),
                             build_generator(cfg)).eval()


def _folder(path, n, seed=0):
    """``n`` Market-1501-sized (128x64) JPEGs named like Market-1501."""
    path.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        arr = rng.integers(0, 255, (128, 64, 3), dtype=np.uint8)
        Image.fromarray(arr).save(path / f"{i // 4 + 1:04d}_c{i % 6 + 1}s1_{i:06d}_00.jpg", quality=90)
    return [p.name for p in sorted(path.iterdir())]


@pytest.mark.benchmark(group="search-features")
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("anonymize", [False, True], ids=["raw", "protect"])
def test_feature_throughput(benchmark, tmp_path, name, anonymize):
    n = 512 if name == "quickstart-64x32" else 64
    names = _folder(tmp_path, n)
    model = _model(MODELS[name])
    folder_features(model, tmp_path, names[:64])  # warm-up
    res = benchmark.pedantic(folder_features, args=(model, tmp_path, names),
                             kwargs={"anonymize": anonymize, "batch_size": 64}, rounds=2, iterations=1)
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.min
    assert res.computed == n


@pytest.fixture(scope="module")
def ranking_problem():
    g = torch.Generator().manual_seed(0)
    qf, gf = torch.randn(N_QUERY, DIM, generator=g), torch.randn(N_GALLERY, DIM, generator=g)
    rs = np.random.RandomState(0)
    return (qf, gf, rs.randint(1, 750, N_QUERY), rs.randint(1, 750, N_GALLERY), rs.randint(0, 6, N_QUERY),
            rs.randint(0, 6, N_GALLERY))


@pytest.mark.benchmark(group="search-ranking")
def test_ranking_1000_x_10000(benchmark, ranking_problem):
    qf, gf, qp, gp, qc, gc = ranking_problem

    def rank():
        dist = distances(qf, gf)
        return top_k(dist, 10, protocol_mask(qp, gp, qc, gc))

    idx, vals = benchmark.pedantic(rank, rounds=3, iterations=1)
    t0 = time.perf_counter()
    rank_metrics(distances(qf, gf), qp, gp, qc, gc)
    benchmark.extra_info["with_metrics_ms"] = 1000 * (benchmark.stats.stats.min + time.perf_counter() - t0)
    assert idx.shape == (N_QUERY, 10) and np.all(np.diff(vals, axis=1) >= 0)


@pytest.mark.benchmark(group="search-cache")
def test_cache_saving_on_second_run(benchmark, tmp_path):
    query, gallery = tmp_path / "q", tmp_path / "g"
    _folder(query, 100)
    _folder(gallery, 1000, seed=1)
    model = _model(MODELS["quickstart-64x32"])
    cache = tmp_path / "cache"
    t0 = time.perf_counter()
    first = search(model, str(query), str(gallery), str(tmp_path / "o1"), protect_gallery=True, cache=str(cache),
                   pngs=False)
    first_s = time.perf_counter() - t0
    second = benchmark.pedantic(search, args=(model, str(query), str(gallery), str(tmp_path / "o2")),
                                kwargs={"protect_gallery": True, "cache": str(cache), "pngs": False},
                                rounds=1, iterations=1)
    benchmark.extra_info.update(first_run_s=first_s, first_features_s=first.timings["features_s"],
                                second_features_s=second.timings["features_s"])
    assert second.timings["computed"] == 0 and np.array_equal(second.indices, first.indices)
