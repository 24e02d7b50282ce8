"""torchreid's own "get started" script runs the privacy training with one engine line swapped,
and the engine's inherited torchreid entry points never skip validation or the upgrade."""
import json
import os

import pytest

GET_STARTED = """
import torchreid
import torchreid_privacy

datamanager = torchreid.data.ImageDataManager(
    root={root!r}, sources="synthetic_market_val", targets=["synthetic_market_val", "synthetic_market"],
    height=64, width=32, batch_size_train=16, batch_size_test=64, workers=0, use_gpu=False,
    transforms=["random_flip"], train_sampler="RandomIdentitySampler")
model = torchreid.models.build_model(name="tiny_reid", num_classes=datamanager.num_train_pids,
                                     loss="softmax", pretrained=False)
optimizer = torchreid.optim.build_optimizer(model, optim="adam", lr=0.001)
scheduler = torchreid.optim.build_lr_scheduler(optimizer, lr_scheduler="single_step", stepsize=20)
engine = torchreid_privacy.ImagePrivacyEngine(
    datamanager, model, optimizer=optimizer, scheduler=scheduler, use_gpu=False,
    privacy={{"mode": "progressive", "r1_floor": 0.0, "eps_psnr": 100.0, "eps_ssim": 1.0,
              "generator": {{"ngf": 8}}, "decoder": {{"ngf": 8}}, "discriminator": {{"ndf": 8}},
              "warmup_epochs": 0}})
engine.run(save_dir={save!r}, max_epoch=2, eval_freq=1, print_freq=1000)
"""


def test_get_started_script_trains_with_privacy(tiny_root, tmp_path):
    save = str(tmp_path / "log")
    exec(compile(GET_STARTED.format(root=tiny_root, save=save), "get_started.py", "exec"), {})
    results = json.load(open(os.path.join(save, "results.json")))
    assert results["mode"] == "progressive"
    # validation ran every epoch on the held-out identities and the upgrade fired (gates opened wide)
    assert [h["epoch"] for h in results["history"] if "val_r1" in h] == [1, 2]
    assert results["upgrades"], "the supervision upgrade never ran"
    assert set(results["test"]) == {"synthetic_market"}
    assert set(results["test"]["synthetic_market"]["rank"]) == {"O->O", "O->P", "P->O", "P->P"}
    assert os.path.isfile(os.path.join(save, "checkpoints", "best.pth"))
    # the checkpoint loads as an inference model (the architecture is in its config)
    import torchreid_privacy

    model = torchreid_privacy.load(save)
    assert model.generator is not None and model.height == 64 and model.width == 32


def _plain_datamanager_and_model(root):
    """torchreid objects without a validation split (sources = targets = synthetic_market)."""
    import torchreid

    dm = torchreid.data.ImageDataManager(root=root, sources="synthetic_market", targets="synthetic_market",
                                         height=64, width=32, batch_size_train=16, workers=0, use_gpu=False,
                                         train_sampler="RandomIdentitySampler")
    return dm, torchreid.models.build_model(name="tiny_reid", num_classes=dm.num_train_pids, pretrained=False)


def test_progressive_without_validation_split_says_how_to_get_one(tiny_root):
    import torchreid_privacy

    dm, model = _plain_datamanager_and_model(tiny_root)
    with pytest.raises(ValueError, match=r"progressive needs a validation split.*market1501_val"):
        torchreid_privacy.ImagePrivacyEngine(dm, model, use_gpu=False, privacy={"mode": "progressive"})
    # joint mode needs none
    engine = torchreid_privacy.ImagePrivacyEngine(dm, model, use_gpu=False, privacy={"mode": "joint"})
    assert engine.val_target is None and engine.test_targets == ["synthetic_market"]


def test_run_refuses_what_it_cannot_measure(tiny_cfg):
    from torchreid_privacy.builder import build_privacy_engine

    engine = build_privacy_engine(tiny_cfg("privacy.mode", "joint"))
    with pytest.raises(ValueError, match="rerank"):
        engine.run(save_dir="unused", max_epoch=1, rerank=True)
    with pytest.raises(ValueError, match="dist_metric"):
        engine.run(save_dir="unused", max_epoch=1, dist_metric="cosine")


def test_unknown_privacy_key_is_named(tiny_root):
    import torchreid_privacy
    from torchreid_privacy.config import ConfigError

    dm, model = _plain_datamanager_and_model(tiny_root)
    with pytest.raises(ConfigError, match=r"privacy.modee.*privacy.mode"):
        torchreid_privacy.ImagePrivacyEngine(dm, model, use_gpu=False, privacy={"modee": "joint"})
