"""Every shipped config loads, and the dataset configs carry the paper's hyper-parameters."""
import pathlib

import pytest

from torchreid_privacy.config import load_config
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config

CONFIGS = sorted((pathlib.Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
QUICKSTARTS = {QUICKSTART, "quickstart_sealed.yaml"}  # the demo's, and the recommended sealed run at its size
PAPER = [c for c in CONFIGS if c.name not in QUICKSTARTS]


def test_every_dataset_and_desensitizer_is_shipped():
    names = {c.stem for c in PAPER}
    assert names == {f"{d}_{m}" for d in ("market1501", "msmt17", "cuhk03") for m in ("mosaic", "blur", "noise")}


@pytest.mark.parametrize("path", PAPER, ids=lambda p: p.stem)
def test_paper_hyper_parameters(path):
    cfg = load_config(path)
    dataset, desens = path.stem.split("_")
    assert cfg.data.sources == [dataset] and cfg.privacy.enabled and cfg.privacy.mode == "progressive"
    assert cfg.privacy.desensitizer.name == desens
    assert cfg.privacy.desensitizer.params == {"mosaic": {"block": 24}, "blur": {"radius": 12},
                                               "noise": {"sigma": 0.5}}[desens]
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.max_epoch) == (0.00035, 0.0005, 120)
    assert cfg.train.stepsize == [40, 80] and cfg.train.batch_size == 64 and cfg.sampler.num_instances == 4
    assert (cfg.privacy.warmup_epochs, cfg.privacy.warmup_factor) == (10, 0.01)
    assert (cfg.data.height, cfg.data.width, cfg.data.norm_std) == (256, 128, [0.5, 0.5, 0.5])
    assert {"random_flip", "random_crop", "random_erase"} <= set(cfg.data.transforms)
    w = cfg.privacy.weights
    assert (w.gan, w.rec_p, w.rec_r, w.reid_o, w.reid_p, w.center) == (1.0, 100.0, 100.0, 1.0, 1.0, 0.0005)
    assert cfg.privacy.gen_betas == [0.5, 0.999] and cfg.privacy.center_lr == 0.5
    # the paper's backbone and triplet: AGW (plugins/agw.py), weighted regularized triplet
    assert cfg.model.name == "resnet50_agw" and cfg.privacy.triplet.weighted is True


def test_quickstart_is_the_packaged_one():
    cfg = load_config(packaged_config(QUICKSTART))
    assert cfg.data.sources == ["synthetic_market"] and cfg.model.pretrained is False
