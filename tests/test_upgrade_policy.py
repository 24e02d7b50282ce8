"""The supervision-upgrade policy from a few numbers (no data, no networks), and the paper's
protocol switches: dataset-level PSNR gate, fallback to the conventional M, C per domain,
the rank-1 floor taken from a joint run."""
import json
import math

import pytest
import torch

from torchreid_privacy.plugins.engine.upgrade import UpgradePolicy, floor_from_results


def _val(psnr_op, psnr_om, ssim_op=0.3, ssim_om=0.3, r1=0.9, psnr_op_dataset=None, psnr_om_dataset=None):
    rank = {s: {"R1": r1, "mAP": r1} for s in ("O->O", "O->P", "P->O", "P->P")}
    return {"rank": rank, "image": {
        "O-M": {"psnr": psnr_om, "psnr_dataset": psnr_om if psnr_om_dataset is None else psnr_om_dataset, "ssim": ssim_om},
        "O-P": {"psnr": psnr_op, "psnr_dataset": psnr_op if psnr_op_dataset is None else psnr_op_dataset,
                "ssim": ssim_op}}}


def test_gates_from_numbers():
    policy = UpgradePolicy(eps_psnr=1.0, eps_ssim=0.05, r1_floor=0.5)
    assert policy.gates(psnr_op=18.9, ssim_op=0.34, r1_op=0.6, psnr_om=18.0, ssim_om=0.3) == \
        {"psnr": True, "ssim": True, "rank1": True}
    assert not policy.gates(19.0, 0.34, 0.6, 18.0, 0.3)["psnr"]      # exactly eps above M: fails
    assert not policy.gates(18.0, 0.35, 0.6, 18.0, 0.3)["ssim"]
    assert not policy.gates(18.0, 0.3, 0.5, 18.0, 0.3)["rank1"]      # the floor itself is not enough


def test_decide_raises_the_bar_and_records():
    policy = UpgradePolicy(r1_floor=0.0)
    assert policy.decide(_val(18.0, 18.0, r1=0.6), epoch=2)
    assert not policy.decide(_val(18.0, 18.0, r1=0.6), epoch=3)      # must beat the best so far
    assert policy.decide(_val(18.0, 18.0, r1=0.7), epoch=4)
    assert [u["epoch"] for u in policy.upgrades] == [2, 4] and policy.best_r1 == 0.7
    state = policy.state_dict()
    again = UpgradePolicy(r1_floor=0.0)
    again.load_state_dict(state)
    assert again.best_r1 == 0.7 and again.upgrades == policy.upgrades


def test_gate_psnr_dataset_uses_the_dataset_level_value():
    # per-image mean passes, dataset-level fails (a few bright images dominate the MSE)
    val = _val(psnr_op=18.5, psnr_om=18.0, psnr_op_dataset=20.0, psnr_om_dataset=18.0)
    assert UpgradePolicy(r1_floor=0.0, gate_psnr="image").gates_of(val)["psnr"]
    assert not UpgradePolicy(r1_floor=0.0, gate_psnr="dataset").gates_of(val)["psnr"]
    with pytest.raises(ValueError, match="privacy.gate_psnr"):
        UpgradePolicy(gate_psnr="median")


def test_fallback_follows_the_latest_validation():
    policy = UpgradePolicy(r1_floor=0.0, fallback=True)
    assert policy.decide(_val(18.0, 18.0, r1=0.6), epoch=1) and policy.use_snapshot()
    policy.decide(_val(25.0, 18.0, r1=0.9), epoch=2)   # P became too recognizable: back to M
    assert not policy.use_snapshot()
    policy.decide(_val(18.2, 18.0, r1=0.5), epoch=3)   # gates hold again (no new upgrade: rank-1 lower)
    assert policy.use_snapshot() and len(policy.upgrades) == 1
    permanent = UpgradePolicy(r1_floor=0.0, fallback=False)
    permanent.decide(_val(18.0, 18.0, r1=0.6), epoch=1)
    permanent.decide(_val(25.0, 18.0, r1=0.9), epoch=2)
    assert permanent.use_snapshot()


def test_unresolved_auto_floor_is_refused():
    with pytest.raises(ValueError, match="privacy.r1_floor.*--floor-from"):
        UpgradePolicy(r1_floor="auto")


def test_floor_from_a_joint_run():
    history = [{"epoch": 2, "score": 0.5, "val_r1": {"O->P": 0.6}}, {"epoch": 4, "score": 0.7, "val_r1": {"O->P": 0.8}},
               {"epoch": 6, "score": 0.7, "val_r1": {"O->P": 0.75}}, {"epoch": 7}]
    assert floor_from_results({"mode": "joint", "history": history}) == 0.75  # ties: the later epoch
    with pytest.raises(ValueError, match="--floor-from.*joint"):
        floor_from_results({"mode": "progressive", "history": history})


def test_engine_fallback_trains_on_conventional_m(tiny_cfg):
    from torchreid_privacy.builder import build_privacy_engine

    engine = build_privacy_engine(tiny_cfg("privacy.mode", "progressive", "privacy.r1_floor", "0.0",
                                           "privacy.upgrade.fallback", "true"))
    o01 = engine.inference.to01(next(iter(engine.train_loader))["img"])
    conventional = engine.supervision(o01)
    assert engine.maybe_upgrade(_val(18.0, 18.0, r1=0.6))
    upgraded = engine.supervision(o01)
    assert not torch.equal(upgraded, conventional)
    engine.maybe_upgrade(_val(30.0, 18.0, r1=0.9))    # fails the PSNR gate
    assert torch.equal(engine.supervision(o01), conventional)


def test_separate_reid_forward_runs_c_once_per_domain(tiny_cfg):
    from torchreid_privacy.builder import build_privacy_engine

    for mode, calls in (("joint", [32]), ("separate", [16, 16])):
        engine = build_privacy_engine(tiny_cfg("privacy.mode", "baseline", "privacy.reid_forward", mode))
        seen = []
        engine.model.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
        out = engine.forward_backward(next(iter(engine.train_loader)))
        assert seen == calls and math.isfinite(out["reid_p"])


def test_train_auto_floor_needs_a_run(tiny_cfg, tmp_path, capsys):
    from torchreid_privacy.cli import main
    from torchreid_privacy.config import dump_yaml

    cfg_path = tmp_path / "c.yaml"
    cfg_path.write_text(dump_yaml(tiny_cfg("privacy.r1_floor", "auto")))
    assert main(["train", "--config-file", str(cfg_path)]) == 1
    assert "--floor-from" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "results.json").write_text(json.dumps({"mode": "baseline", "history": []}))
    assert main(["train", "--config-file", str(cfg_path), "--floor-from", str(tmp_path / "run")]) == 1
    assert "joint" in capsys.readouterr().err


def test_inversion_gate_from_numbers():
    """With the inversion gate, P must be inverted no better than M plus the margin; unmeasured fails."""
    policy = UpgradePolicy(r1_floor=0.0, inversion_gate=True)
    base = _val(18.0, 18.0, r1=0.6)
    assert policy.gates_of(base, inversion=False) == {"psnr": True, "ssim": True, "rank1": True}
    assert policy.gates_of(base)["inversion"] is False and not policy.decide(base, epoch=1)
    leaky = dict(base, inversion_gate={"psnr_p": 22.6, "psnr_m": 22.0, "margin_db": 0.5})
    assert not policy.decide(leaky, epoch=2) and not policy.privacy_ok
    tight = dict(base, inversion_gate={"psnr_p": 22.4, "psnr_m": 22.0, "margin_db": 0.5})
    assert policy.decide(tight, epoch=3) and policy.privacy_ok
    assert policy.upgrades[-1]["inversion"] == {"psnr_p": 22.4, "psnr_m": 22.0, "margin_db": 0.5}
    assert "inversion" not in UpgradePolicy(r1_floor=0.0).gates_of(base)  # off: the paper's three gates


def test_engine_measures_the_inversion_gate_only_when_the_other_gates_hold(tiny_cfg, monkeypatch):
    from torchreid_privacy.builder import build_privacy_engine
    from torchreid_privacy.plugins.engine import inversion_gate

    engine = build_privacy_engine(tiny_cfg("privacy.mode", "progressive", "privacy.r1_floor", "0.0",
                                           "privacy.upgrade.inversion_gate.enabled", "true",
                                           "privacy.upgrade.inversion_gate.steps", "3",
                                           "privacy.upgrade.inversion_gate.pairs", "16"))
    calls = []
    real = inversion_gate.InversionGate.measure
    monkeypatch.setattr(inversion_gate.InversionGate, "measure", lambda self: calls.append(1) or real(self))
    failing = _val(30.0, 18.0, r1=0.9)  # PSNR gate fails: no attacker is trained
    assert not engine.maybe_upgrade(failing) and not calls and "inversion_gate" not in failing
    val = engine.evaluate(engine.val_target)
    val["image"]["O-P"] = dict(val["image"]["O-M"])  # the PSNR/SSIM gates hold
    upgraded = engine.maybe_upgrade(val)
    gate = val["inversion_gate"]
    assert calls == [1] and set(gate) == {"psnr_p", "psnr_m", "margin_db"}
    assert 5 < gate["psnr_p"] < 60 and 5 < gate["psnr_m"] < 60 and gate["margin_db"] == 0.5
    assert upgraded == (gate["psnr_p"] <= gate["psnr_m"] + 0.5)
    assert engine.policy.inversion_psnr_m == gate["psnr_m"]  # M is measured once, kept in the state
    assert engine.policy.state_dict()["inversion_psnr_m"] == gate["psnr_m"]
