"""The demo end to end at test size: every table, results.json's documented shape, the key file."""
import json
import os
import stat

from tiny_config import TINY

from torchreid_privacy.demo import KEYED, run_demo


def test_demo_writes_attack_and_keyed_results(tmp_path, capsys):
    out = tmp_path / "demo"
    overrides = [*TINY, "train.max_epoch", "1"]
    res = run_demo(str(out), modes=["progressive", KEYED], overrides=overrides,
                   attack_pairs=[4, 8], attack_steps=5)
    printed = capsys.readouterr().out
    for title in ("PSNR/SSIM O-R", "third-party ReID", "recovery attack", "keyed recovery O-R"):
        assert title in printed
    saved = json.load(open(out / "results.json"))
    assert set(saved) >= {"progressive", KEYED, "attack", "keyed"}
    assert saved["attack"]["victim"] == KEYED
    for setting in ("O->O", "O->P", "P->P"):
        r = saved["attack"]["reid"][setting]
        assert 0 <= r["R1"] <= 1 and 0 <= r["mAP"] <= 1
    assert set(saved["attack"]["recover"]) >= {"authorized", "4", "8"}
    assert set(saved["keyed"]) >= {"right_key", "wrong_key", "unkeyed"}
    assert saved["keyed"]["unkeyed"] == {k: saved["progressive"]["image"]["O-R"][k] for k in ("psnr", "ssim")}
    assert res["attack"]["recover"]["steps"] == 5
    key = out / "secret.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert key.read_text().strip() not in (out / "results.json").read_text()
