"""The command line end to end: errors are one line + non-zero exit; folders are safe."""
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from torchreid_privacy.cli import main


def _cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "torchreid_privacy", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, "TQDM_DISABLE": "1"})


def _images(folder, n=3, size=(64, 128)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i:04d}_c1.jpg")
    return folder


def test_list_prints_every_kind():
    r = _cli("list")
    assert r.returncode == 0, r.stderr
    for kind in ("desensitizers:", "anonymizers:", "discriminators:", "losses:", "engines:", "mosaic", "unet_128"):
        assert kind in r.stdout


def test_anonymize_then_recover_a_folder(trained_run, tmp_path):
    src = _images(tmp_path / "in")
    before = {p: p.read_bytes() for p in src.iterdir()}
    out, rec = tmp_path / "protected", tmp_path / "recovered"
    assert main(["anonymize", "--input", str(src), "--output", str(out), "--checkpoint", trained_run]) == 0
    assert main(["recover", "--input", str(out), "--output", str(rec),
                 "--checkpoint", os.path.join(trained_run, "checkpoints", "last.pth")]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir())
    assert sorted(p.name for p in rec.iterdir()) == sorted(p.name for p in src.iterdir())
    assert {p: p.read_bytes() for p in src.iterdir()} == before  # input untouched
    with Image.open(next(out.iterdir())) as im:
        assert im.size == (32, 64)  # the model's input size
    # never overwrites: a second run skips every existing output
    stamp = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["anonymize", "--input", str(src), "--output", str(out), "--checkpoint", trained_run]) == 0
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == stamp


def test_anonymize_counts_and_skips_unreadable(trained_run, tmp_path, capsys):
    src = _images(tmp_path / "in", n=2)
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    Image.fromarray(np.full((40, 20), 128, np.uint8)).save(src / "gray.png")
    Image.fromarray(np.full((40, 20, 4), 200, np.uint8), "RGBA").save(src / "rgba.png")
    Image.fromarray(np.full((40, 20), 40000, np.uint16)).save(src / "deep.png")
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "o"), "--checkpoint", trained_run]) == 0
    line = capsys.readouterr().out
    assert "written 5" in line and "(unreadable) 1" in line
    assert not (tmp_path / "o" / "broken.jpg").exists()


@pytest.mark.parametrize("case", ["same", "inside"])
def test_output_in_input_is_refused(trained_run, tmp_path, case):
    src = _images(tmp_path / "in", n=1)
    out = src if case == "same" else src / "sub"
    r = _cli("anonymize", "--input", str(src), "--output", str(out), "--checkpoint", trained_run)
    assert r.returncode != 0 and "--output" in r.stderr and r.stderr.strip().count("\n") == 0
    assert sorted(p.name for p in src.iterdir()) == ["0000_c1.jpg"]


def test_missing_checkpoint_and_baseline_checkpoint(tiny_cfg, tmp_path):
    src = _images(tmp_path / "in", n=1)
    r = _cli("anonymize", "--input", str(src), "--output", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "nope"))
    assert r.returncode != 0 and "nope" in r.stderr
    from torchreid_privacy.builder import build_privacy_engine

    cfg = tiny_cfg("privacy.mode", "baseline", "train.max_epoch", "1")
    build_privacy_engine(cfg).run_privacy(save_dir=str(tmp_path / "base"), max_epoch=1, eval_test=False)
    # a baseline run's P is its conventional M (as in its evaluation and its ONNX export)
    r = _cli("anonymize", "--input", str(src), "--output", str(tmp_path / "o"), "--checkpoint", str(tmp_path / "base"))
    assert r.returncode == 0, r.stderr
    import torch
    from torchreid_privacy import desensitize
    from torchreid_privacy.folders.process import read_rgb

    out = torch.from_numpy(read_rgb(next((tmp_path / "o").iterdir())).copy()).permute(2, 0, 1).float() / 255
    block = cfg.privacy.desensitizer.params["block"]
    # already a mosaic: nearly a fixed point of mosaic (up to JPEG ringing); random input is far from one
    src_t = torch.from_numpy(read_rgb(next(src.iterdir())).copy()).permute(2, 0, 1).float() / 255
    assert (out - desensitize(out[None], "mosaic", block=block)[0]).abs().mean() < 0.05
    assert (src_t - desensitize(src_t[None], "mosaic", block=block)[0]).abs().mean() > 0.1
    r = _cli("recover", "--input", str(src), "--output", str(tmp_path / "r"), "--checkpoint", str(tmp_path / "base"))
    assert r.returncode != 0 and "no recovery decoder" in r.stderr and r.stderr.strip().count("\n") == 0


def test_test_command_evaluates_a_run(trained_run, tmp_path):
    r = _cli("test", "--checkpoint", trained_run, "--output", str(tmp_path / "t"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert "O->P" in r.stdout and (tmp_path / "t" / "results.json").is_file()


def test_plain_torchreid_training_when_privacy_disabled(tiny_root, tmp_path):
    """privacy.enabled false -> torchreid's own triplet engine, one epoch on the embedded data."""
    from torchreid_privacy.studies.demo import QUICKSTART, packaged_config

    r = _cli("train", "--config-file", packaged_config(QUICKSTART), "data.root", tiny_root,
             "data.save_dir", str(tmp_path / "plain"), "privacy.enabled", "false", "loss.name", "triplet",
             "loss.triplet.weight_x", "1.0", "train.max_epoch", "1", "train.batch_size", "16",
             "data.height", "64", "data.width", "32")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Rank-1" in r.stdout and "model.pth.tar-1" in r.stdout


def test_unknown_key_on_train_is_one_line(tmp_path):
    r = _cli("train", "--config-file", "does-not-exist.yaml")
    assert r.returncode != 0 and "does-not-exist.yaml" in r.stderr and r.stderr.strip().count("\n") == 0
