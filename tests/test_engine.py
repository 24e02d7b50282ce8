"""The privacy engine: steps, losses falling, upgrade gates, selection on val, outputs."""
import json
import os

import pytest
import torch

from torchreid_privacy import bridge

from torchreid_privacy.utils import checkpoint
from torchreid_privacy.builder import build_privacy_engine


def _batch(engine):
    return next(iter(engine.train_loader))


def _val(psnr_op, psnr_om, ssim_op, ssim_om, r1):
    rank = {s: {"R1": r1, "R5": r1, "R10": r1, "mAP": r1, "mINP": r1} for s in ("O->O", "O->P", "P->O", "P->P")}
    return {"rank": rank, "image": {"O-M": {"psnr": psnr_om, "ssim": ssim_om},
                                    "O-P": {"psnr": psnr_op, "ssim": ssim_op}}}


@pytest.mark.parametrize("mode", ["baseline", "joint"])
def test_losses_fall_when_overfitting_one_batch(tiny_cfg, mode):
    torch.manual_seed(0)
    engine = build_privacy_engine(tiny_cfg("privacy.mode", mode, "privacy.lr", "0.002", "train.lr", "0.002"))
    engine.set_model_mode("train")
    data = _batch(engine)
    first = engine.forward_backward(data)
    for _ in range(25):
        last = engine.forward_backward(data)
    keys = ["reid_o", "reid_p"] + (["rec_p", "rec_r"] if mode == "joint" else [])
    for k in keys:
        assert last[k] < first[k], (k, first[k], last[k])
    if mode == "joint":
        assert {"gan", "d_op", "d_pr", "xent_o", "triplet_p"} <= set(last)
        assert "supervisor" not in bridge.engine_models(engine)


def test_upgrade_fires_only_when_every_gate_holds(tiny_cfg):
    engine = build_privacy_engine(tiny_cfg("privacy.mode", "progressive", "privacy.r1_floor", "0.5"))
    o01 = engine.inference.to01(_batch(engine)["img"])
    conventional = engine.supervision(o01)
    # each gate failing alone keeps the supervision
    assert not engine.maybe_upgrade(_val(psnr_op=20.0, psnr_om=18.0, ssim_op=0.3, ssim_om=0.3, r1=0.9))  # psnr
    assert not engine.maybe_upgrade(_val(psnr_op=18.0, psnr_om=18.0, ssim_op=0.4, ssim_om=0.3, r1=0.9))  # ssim
    assert not engine.maybe_upgrade(_val(psnr_op=18.0, psnr_om=18.0, ssim_op=0.3, ssim_om=0.3, r1=0.4))  # floor
    assert engine.supervisor is None and torch.equal(engine.supervision(o01), conventional)
    # all gates hold -> G snapshot becomes M
    assert engine.maybe_upgrade(_val(psnr_op=18.5, psnr_om=18.0, ssim_op=0.33, ssim_om=0.3, r1=0.6))
    assert engine.supervisor is not None and not engine.supervisor.training
    assert all(not p.requires_grad for p in engine.supervisor.parameters())
    engine.nets["generator"].eval()
    with torch.no_grad():
        expected = engine.inference.anonymize(o01)
    assert torch.allclose(engine.supervision(o01), expected, atol=1e-6)
    # the snapshot is frozen: training G further does not change M
    with torch.no_grad():
        for p in engine.nets["generator"].parameters():
            p.add_(0.1)
    assert torch.allclose(engine.supervision(o01), expected, atol=1e-6)
    # rank-1 must beat the best so far
    assert not engine.maybe_upgrade(_val(psnr_op=18.5, psnr_om=18.0, ssim_op=0.33, ssim_om=0.3, r1=0.6))
    assert engine.maybe_upgrade(_val(psnr_op=18.5, psnr_om=18.0, ssim_op=0.33, ssim_om=0.3, r1=0.7))
    assert [u["val_r1_op"] for u in engine.upgrades] == [0.6, 0.7]


def test_joint_mode_never_upgrades(tiny_cfg):
    engine = build_privacy_engine(tiny_cfg("privacy.mode", "joint", "privacy.r1_floor", "0.0"))
    assert not engine.maybe_upgrade(_val(psnr_op=10.0, psnr_om=18.0, ssim_op=0.1, ssim_om=0.3, r1=0.9))


@pytest.mark.parametrize("eps,expect_upgrade", [("1000", True), ("-1000", False)])
def test_progressive_run_upgrade_on_val_only(tiny_cfg, tmp_path, eps, expect_upgrade):
    """A run built to pass the gates upgrades; one built to fail them never does.
    Selection and upgrades see only the validation target; the test split is evaluated once."""
    cfg = tiny_cfg("privacy.mode", "progressive", "privacy.r1_floor", "0.0", "privacy.eps_psnr", eps,
                   "privacy.eps_ssim", eps)
    engine = build_privacy_engine(cfg)
    assert engine.val_target == "synthetic_market_val" and engine.test_targets == ["synthetic_market"]
    seen = []
    real = engine.evaluate

    def spy(target, *a, **k):
        seen.append(target)
        return real(target, *a, **k)

    engine.evaluate = spy
    res = engine.run_privacy(save_dir=str(tmp_path / "run"), max_epoch=2)
    assert seen == ["synthetic_market_val", "synthetic_market_val", "synthetic_market"]
    assert (len(res["upgrades"]) >= 1) is expect_upgrade
    assert (engine.supervisor is not None) is expect_upgrade


def test_run_writes_checkpoints_results_grids_tensorboard(trained_run):
    for name in (checkpoint.BEST, checkpoint.LAST):
        ck = checkpoint.load(os.path.join(trained_run, checkpoint.CKPT_DIR, name),
                             need=("model", "generator", "decoder", "disc_op", "disc_pr"))
        assert ck["config"]["privacy"]["mode"] == "joint"
    res = json.load(open(os.path.join(trained_run, "results.json")))
    test = res["test"]["synthetic_market"]
    assert set(test["rank"]) == {"O->O", "O->P", "P->O", "P->P"}
    assert set(test["image"]) == {"O-M", "O-P", "O-R"}
    for r in test["rank"].values():
        assert 0.0 <= r["R1"] <= r["R5"] <= r["R10"] <= 1.0
    grids = os.listdir(os.path.join(trained_run, "grids"))
    assert "test-synthetic_market.png" in grids and any(g.startswith("val-epoch") for g in grids)
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(trained_run))


def test_tensorboard_has_every_loss_term(trained_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(trained_run)
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    for term in ("gan", "rec_p", "rec_r", "reid_o", "reid_p", "d_op", "d_pr"):
        assert f"Train/{term}" in tags
    assert "Val/rank1/O->P" in tags and "Test/synthetic_market/psnr/O-P" in tags


@pytest.mark.parametrize("backbone", ["osnet_x0_25", "resnet18", "resnet50", "mobilenetv2_x1_0"])
def test_any_torchreid_backbone_trains(tiny_cfg, backbone):
    engine = build_privacy_engine(tiny_cfg("model.name", backbone, "privacy.mode", "joint"))
    engine.set_model_mode("train")
    out = engine.forward_backward(_batch(engine))
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
    assert type(engine.model).__name__.lower().startswith(backbone.split("_")[0][:5])


def test_nonfinite_loss_stops_with_term_and_step(tiny_cfg):
    from torchreid_privacy.plugins.engine import NonFiniteLossError

    engine = build_privacy_engine(tiny_cfg("privacy.mode", "joint"))
    engine.set_model_mode("train")
    data = _batch(engine)
    engine.nets["decoder"].register_forward_hook(lambda mod, inp, out: out * float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"loss term 'd_pr' is nan at epoch 1, step 1"):
        engine.forward_backward(data)
