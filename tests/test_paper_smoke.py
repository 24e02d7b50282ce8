"""Paper-scale smoke run on CPU, and the quickstart at every common torchreid input size.

The paper configs (``configs/market1501_*.yaml``: AGW + unet_128 with ngf 64 at 256x128,
weighted triplet) are only ever trained on a GPU; this runs one training step and one
four-setting evaluation of that exact network stack on the embedded synthetic data, so a
broken piece of the paper setting fails here, not hours into a GPU run.
"""
from __future__ import annotations

import math
import pathlib
import time

import pytest
import torch

from torchreid_privacy.builder import build_privacy_engine
from torchreid_privacy.config import load_config
from torchreid_privacy.models.nets import build_privacy_nets

CONFIGS = pathlib.Path(__file__).resolve().parents[1] / "configs"
SETTINGS = ("O->O", "O->P", "P->O", "P->P")
SIZES = [(256, 128), (384, 128), (128, 64), (160, 64), (224, 224), (96, 48)]


@pytest.fixture(scope="module")
def small_root(tmp_path_factory) -> str:
    """10 training identities of 4 images: the validation split is 2 identities (8 images)."""
    from torchreid_privacy.data.synthetic import make_synthetic_market

    root = tmp_path_factory.mktemp("paper-smoke-data")
    make_synthetic_market(root, num_ids=20, train_images_per_id=4, query_per_id=1, gallery_per_id=2, num_junk=2, extra_test_ids=0)
    return str(root)


def test_paper_setting_one_step_and_evaluation(small_root, tmp_path):
    """~25 s on one CPU thread: 1 step is ~1 TFLOP at batch 8, so the batch is 2 ids x 2 images."""
    start = time.perf_counter()
    cfg = load_config(CONFIGS / "market1501_mosaic.yaml", [
        "data.root", small_root, "data.sources", "[synthetic_market]", "data.targets", "[synthetic_market]",
        "data.save_dir", str(tmp_path / "run"), "data.workers", "0", "use_gpu", "false",
        "model.pretrained", "false", "train.batch_size", "4", "sampler.num_instances", "2",
        "test.batch_size", "32",
    ])
    assert (cfg.model.name, cfg.privacy.generator.name, cfg.privacy.generator.ngf) == ("resnet50_agw", "unet_128", 64)
    assert (cfg.data.height, cfg.data.width, cfg.privacy.triplet.weighted) == (256, 128, True)
    engine = build_privacy_engine(cfg)
    classes = engine.datamanager.num_train_pids
    assert sum(p.numel() for p in engine.model.parameters()) == 23_536_719 + 1 + 4_096 + 2_048 * classes
    assert engine.nets["generator"].num_downs == 7
    engine.set_model_mode("train")
    batch = next(iter(engine.train_loader))
    assert tuple(batch["img"].shape) == (4, 3, 256, 128) and len(set(batch["pid"].tolist())) == 2
    losses = engine.forward_backward(batch)
    assert {"gan", "rec_p", "rec_r", "reid_o", "reid_p", "d_op", "d_pr"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values()), losses
    res = engine.evaluate(engine.val_target)
    for setting in SETTINGS:
        r1, mAP = res["rank"][setting]["R1"], res["rank"][setting]["mAP"]
        assert 0.0 <= r1 <= 1.0 and 0.0 < mAP <= 1.0, (setting, res["rank"][setting])
    for pair in ("O-M", "O-P", "O-R"):
        assert math.isfinite(res["image"][pair]["psnr"]) and 0 < res["image"][pair]["ssim"] <= 1
    elapsed = time.perf_counter() - start
    print(f"paper-scale smoke run (build + 1 step + 1 evaluation): {elapsed:.1f} s")


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_quickstart_trains_at_every_input_size(tiny_cfg, size):
    """Only data.height/width change: the quickstart's generator settings fit every size."""
    height, width = size
    cfg = tiny_cfg("data.height", str(height), "data.width", str(width), "privacy.mode", "joint",
                   "train.batch_size", "4", "sampler.num_instances", "2")
    engine = build_privacy_engine(cfg)
    engine.set_model_mode("train")
    batch = next(iter(engine.train_loader))
    assert tuple(batch["img"].shape[-2:]) == size
    losses = engine.forward_backward(batch)
    assert {"gan", "rec_p", "rec_r", "reid_o", "reid_p"} <= set(losses)
    assert all(math.isfinite(v) for v in losses.values()), losses
    with torch.no_grad():  # the very nets the config builds keep the size (padded inside if needed)
        nets = build_privacy_nets(cfg)
        p = nets["generator"](batch["img"].clamp(-1, 1))
        assert p.shape == batch["img"].shape and nets["decoder"](p).shape == p.shape
