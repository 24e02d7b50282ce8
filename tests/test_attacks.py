"""The two privacy attacks (torchreid_privacy.attacks) end to end on the tiny trained run."""
import math
import os

import pytest
import torch

from torchreid_privacy.attacks import recovery_attack, reid_attack
from torchreid_privacy.attacks.recover import evaluate_attacker
from torchreid_privacy.metrics.inversion import build_attacker
from torchreid_privacy.metrics.settings import SETTINGS
from torchreid_privacy.trained_run import TrainedRun


def _listing(root):
    """Every file under ``root`` with its size and mtime (to show nothing was written there)."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            st = os.stat(os.path.join(folder, name))
            out[os.path.relpath(os.path.join(folder, name), root)] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def recovery(trained_run, tiny_root):
    """One recovery attack (4 and 16 pairs, 200 steps: ~3 s) shared by the checks below."""
    before = _listing(tiny_root)
    res = recovery_attack(trained_run, pairs=[4, 16], steps=200, batch_size=8, seed=0)
    assert _listing(tiny_root) == before, "the recovery attack wrote into the data root"
    return res


def test_reid_attack_end_to_end(trained_run, tiny_root, tmp_path):
    before = _listing(tiny_root)
    res = reid_attack(None, trained_run, str(tmp_path), max_epoch=1)
    assert _listing(tiny_root) == before, "the ReID attack wrote into the data root"
    for s in (*SETTINGS, "O->M"):  # O->M: the same third party against a conventionally desensitized gallery
        assert 0.0 <= res[s]["R1"] <= 1.0 and 0.0 <= res[s]["mAP"] <= 1.0, (s, res[s])
    assert res["O->O"]["R1"] > 0
    assert res["model"] == "tiny_reid" and res["epochs"] == 1 and res["train_seconds"] >= 0
    assert os.path.isfile(res["weights"]) and res["weights"].startswith(str(tmp_path))


def test_recovery_attack_reports_every_pair_count(recovery):
    assert set(recovery) >= {"authorized", "protected", "4", "16", "test_images", "steps", "margin_db"}
    for k in ("authorized", "4", "16"):
        assert math.isfinite(recovery[k]["psnr"]) and -1.0 <= recovery[k]["ssim"] <= 1.0, (k, recovery[k])
    assert recovery["4"]["steps"] == recovery["16"]["steps"] == recovery["steps"] == 200
    assert recovery["test_images"] > 0
    best = max(recovery["4"]["psnr"], recovery["16"]["psnr"])
    assert recovery["margin_db"] == pytest.approx(recovery["authorized"]["psnr"] - best)
    # the same attacker on (M, O) pairs: the yardstick P is judged against
    assert set(recovery["M"]) == {"4", "16"}
    best_m = max(recovery["M"]["4"]["psnr"], recovery["M"]["16"]["psnr"])
    assert math.isfinite(best_m) and recovery["vs_m_db"] == pytest.approx(best - best_m)
    assert recovery["M"]["16"]["train_l1"] < recovery["M"]["16"]["train_l1_start"]


def test_recovery_attacker_is_trained(recovery, trained_run):
    # the training L1 falls, and the trained attacker beats the same attacker untrained on test
    # images (untrained: ~15.5 dB, 16 pairs x 200 steps: ~19.5 dB on the tiny run)
    assert recovery["16"]["train_l1"] < 0.8 * recovery["16"]["train_l1_start"]
    run = TrainedRun.open(trained_run, need=("generator", "decoder"))
    untrained = evaluate_attacker(run, build_attacker(run.config, seed=0), run.test_targets[0])
    assert recovery["16"]["psnr"] > untrained["psnr"] + 1.0, (recovery["16"], untrained)


def test_authorized_numbers_match_test_evaluation(recovery, trained_run):
    run = TrainedRun.open(trained_run)
    ref = run.evaluate(run.test_targets[0])["image"]["O-R"]
    assert recovery["authorized"]["psnr"] == pytest.approx(ref["psnr"], abs=1e-6)
    assert recovery["test_images"] == ref["count"]


@pytest.mark.parametrize("kwargs, flag", [
    ({"pairs": []}, "--pairs"),
    ({"pairs": [0]}, "--pairs"),
    ({"pairs": [4, -1]}, "--pairs"),
    ({"pairs": [4, 4]}, "--pairs"),
    ({"pairs": [4], "steps": 0}, "--steps"),
    ({"pairs": [4], "batch_size": 0}, "--batch-size"),
    ({"pairs": [10**6], "steps": 1}, "--pairs"),  # more pairs than training images
])
def test_recovery_attack_bad_input(trained_run, kwargs, flag):
    with pytest.raises(ValueError, match=flag):
        recovery_attack(trained_run, **kwargs)


def test_reid_attack_bad_epochs(trained_run, tmp_path):
    with pytest.raises(ValueError, match="--max-epoch"):
        reid_attack(None, trained_run, str(tmp_path), max_epoch=0)


def test_attacker_init_is_seeded_and_leaves_global_rng_alone(trained_run):
    from torchreid_privacy.utils.checkpoint import load
    from torchreid_privacy.config import load_config

    cfg = load_config(base=load(trained_run)["config"])
    state = torch.get_rng_state()
    a, b = build_attacker(cfg, seed=3), build_attacker(cfg, seed=3)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_reid_attack_checks_the_checkpoint_before_training(tmp_path):
    from torchreid_privacy.bridge import CheckpointError

    with pytest.raises(CheckpointError, match="no such file"):
        reid_attack(None, str(tmp_path / "missing.pth"), str(tmp_path / "out"), max_epoch=1)
    assert not (tmp_path / "out").exists()


def test_attack_cli_writes_attack_json_and_rejects_bad_pairs(trained_run, tmp_path, capsys):
    import json

    from torchreid_privacy.cli import main

    out = tmp_path / "attack"
    assert main(["attack", "recover", "--checkpoint", trained_run, "--pairs", "4", "--steps", "3",
                 "--output", str(out)]) == 0
    result = json.load(open(out / "attack.json"))
    assert {"authorized", "4", "margin_db"} <= set(result)
    capsys.readouterr()
    assert main(["attack", "recover", "--checkpoint", trained_run, "--pairs", "4,x", "--output", str(out)]) == 1
    assert "--pairs: expected comma-separated integers, got 'x'" in capsys.readouterr().err
    assert main(["attack", "reid"]) == 1
    assert "--checkpoint: required" in capsys.readouterr().err
