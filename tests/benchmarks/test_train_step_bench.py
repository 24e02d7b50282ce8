"""Training-step throughput: joint privacy step vs torchreid's plain triplet step.

Same backbone, batch and resolution; reports images/s and the share of the joint step
spent making M (desensitization). Run: ``pytest tests/benchmarks --benchmark-only``.
"""
import math
import time

import pytest

from torchreid_privacy import bridge
from torchreid_privacy.builder import build_privacy_engine
from torchreid_privacy.config import load_config
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from torchreid_privacy.data.synthetic import make_synthetic_market

    root = tmp_path_factory.mktemp("bench-data")
    make_synthetic_market(root)
    cfg = load_config(packaged_config(QUICKSTART), ["data.root", str(root), "data.save_dir",
                                                    str(root / "run"), "privacy.mode", "joint"])
    engine = build_privacy_engine(cfg)
    engine.set_model_mode("train")
    batch = next(iter(engine.train_loader))
    return cfg, engine, batch


def test_joint_step(benchmark, setup):
    cfg, engine, batch = setup
    losses = benchmark.pedantic(engine.forward_backward, args=(batch,), rounds=10, warmup_rounds=2)
    assert {"reid_o", "reid_p", "gan", "rec_p"} <= set(losses) and all(map(math.isfinite, losses.values()))
    n = batch["img"].shape[0]
    benchmark.extra_info["images_per_s"] = n / benchmark.stats.stats.median
    o01 = engine.inference.to01(batch["img"])
    t = time.perf_counter()
    for _ in range(20):
        engine.inference.conventional(o01)
    desens = (time.perf_counter() - t) / 20
    benchmark.extra_info["desensitize_share"] = desens / benchmark.stats.stats.median


def test_plain_triplet_step(benchmark, setup):
    cfg, engine, batch = setup
    model = bridge.build_model(cfg.model.name, engine.datamanager.num_train_pids, loss="triplet")
    model.train()
    opt = bridge.build_optimizer(model, optim="adam", lr=3e-4)
    xent = bridge.CrossEntropyLoss(engine.datamanager.num_train_pids, use_gpu=False)
    trip = bridge.TripletLoss(margin=0.3)

    def step():
        logits, feats = model(batch["img"])
        loss = xent(logits, batch["pid"]) + trip(feats, batch["pid"])
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss)

    assert math.isfinite(benchmark.pedantic(step, rounds=10, warmup_rounds=2))
    benchmark.extra_info["images_per_s"] = batch["img"].shape[0] / benchmark.stats.stats.median
