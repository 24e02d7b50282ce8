"""The demo end to end at test size: every table, results.json's documented shape, the key file."""
import json
import os
import stat

from tiny_config import TINY

from torchreid_privacy.studies.demo import KEYED, SEALED, run_demo


def test_demo_sealed_run_attacks_and_views(tmp_path, capsys):
    out = tmp_path / "demo"
    res = run_demo(str(out), modes=["baseline", "progressive", SEALED], overrides=[*TINY, "train.max_epoch", "1"],
                   attack_pairs=[4, 8], attack_steps=5, third_party_epochs=1)
    printed = capsys.readouterr().out
    for title in ("PSNR/SSIM O-R", "third-party ReID", "inversion attack", "attacker on M, 8 pairs",
                  "sealed recovery on", "views of the progressive run", "wall time: total",
                  "M (the baseline run's P)", "P (learned-mosaic)", "inversion@8 (dB)"):
        assert title in printed, title
    saved = json.load(open(out / "results.json"))
    assert set(saved) >= {"progressive", SEALED, "attack", "sealed", "views", "seconds"}
    for mode in ("progressive", SEALED):  # P as published, the float P beside it, named
        assert saved[mode]["publish"] == {"format": "jpeg", "quality": 95}
        assert set(saved[mode]["rank_unpublished"]) == {"O->P", "P->O", "P->P"}
    assert "unpublished O->P/P->O/P->P" in printed and "jpeg95" in printed
    assert saved["attack"]["victim"] == SEALED and saved["attack"]["reid"]["epochs"] == 1
    for setting in ("O->O", "O->P", "P->P", "O->M"):
        r = saved["attack"]["reid"][setting]
        assert 0 <= r["R1"] <= 1 and 0 <= r["mAP"] <= 1
    rec = saved["attack"]["recover"]
    assert set(rec) >= {"authorized", "4", "8", "M", "vs_m_db"} and set(rec["M"]) == {"4", "8"}
    assert rec["authorized"]["psnr"] is None  # sealed: the key holder gets the exact file back
    assert "O-R" not in saved[SEALED]["image"]
    # the sealed mode is the shipped sealed config's learned mosaic
    from torchreid_privacy.inference import load

    assert type(load(str(out / SEALED)).generator).__name__ == "LearnedMosaicAnonymizer"
    sealed = saved["sealed"]
    assert sealed["files"] > 0 and sealed["exact"] and sealed["wrong_key_rejected"] and sealed["tamper_rejected"]
    # header, name, size and tag (under 200 bytes) plus padding to the next 1 KiB bucket
    assert 0 < sealed["beyond_original_bytes_mean"] < 1024 + 200 < sealed["overhead_bytes_mean"]
    assert set(saved["seconds"]) >= {"data", "progressive", SEALED, "attacks", "sealed check", "views"}
    assert os.path.isfile(res["views"]["tsne"]) and res["views"]["ranklists"]
    key = out / "secret.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert key.read_text().strip() not in (out / "results.json").read_text()


def test_demo_keyed_run(tmp_path, capsys):
    out = tmp_path / "demo"
    run_demo(str(out), modes=["progressive", KEYED], overrides=[*TINY, "train.max_epoch", "1"],
             attack_pairs=[4], attack_steps=2, views=False, third_party_epochs=1)
    assert "keyed recovery O-R" in capsys.readouterr().out
    saved = json.load(open(out / "results.json"))
    assert saved["attack"]["victim"] == KEYED
    assert set(saved["keyed"]) >= {"right_key", "wrong_key", "unkeyed"}
    assert saved["keyed"]["unkeyed"] == {k: saved["progressive"]["image"]["O-R"][k] for k in ("psnr", "ssim")}


def test_demo_uses_a_set_already_under_its_data_root_and_makes_its_own_otherwise(tmp_path):
    """A set make-data wrote (any parameters) is read as it is, never an error; a missing one is
    made with the demo's 100 queries (the embedded set without its test-only identities)."""
    from torchreid_privacy.data import make_synthetic_market, read_manifest
    from torchreid_privacy.studies.demo import _demo_set

    made = make_synthetic_market(tmp_path / "mine", num_ids=8, train_images_per_id=3, gallery_per_id=3,
                                 num_junk=4, extra_test_ids=2)
    assert _demo_set(str(tmp_path / "mine")) == str(made)
    own = read_manifest(_demo_set(str(tmp_path / "fresh")))
    assert own["extra_test_ids"] == 0 and own["counts"]["query"] == 100
