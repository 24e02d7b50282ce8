"""Bad input met through the CLI: a one-line error naming the culprit and a non-zero exit, or a
counted, logged skip; never a traceback, never lost or overwritten data."""
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from torchreid_privacy.utils import checkpoint
from torchreid_privacy.cli import main
from torchreid_privacy.data.synthetic import DATASET_DIR, MARKET_SUBDIR
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config


from tiny_config import TINY


def _train(root, save_dir, *overrides):
    return main(["train", "--config-file", packaged_config(QUICKSTART), "data.root", str(root),
                 "data.save_dir", str(save_dir), *TINY, *overrides])


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("torchreid-privacy: error: "), err
    return err[len("torchreid-privacy: error: "):]


@pytest.fixture
def data_copy(tiny_root, tmp_path):
    """A private copy of the tiny synthetic set (tests damage it); returns (root, image folder)."""
    root = tmp_path / "data"
    shutil.copytree(Path(tiny_root) / DATASET_DIR, root / DATASET_DIR)
    return root, root / DATASET_DIR / MARKET_SUBDIR


def test_truncated_jpeg_in_training_set(data_copy, tmp_path, capsys):
    root, images = data_copy
    victim = sorted((images / "bounding_box_train").glob("*.jpg"))[5]
    victim.write_bytes(victim.read_bytes()[:200])
    assert _train(root, tmp_path / "run", "privacy.mode", "baseline") == 1
    err = _error(capsys)
    assert err.startswith(f"data: unreadable image {victim}: ") and err.endswith("; remove or replace it "
                                                                                 "(torchreid would retry it forever)")
    assert not (tmp_path / "run").exists()  # stopped before training


@pytest.mark.parametrize("kind", ["grayscale", "rgba", "png16"])
def test_anonymize_converts_unusual_pngs(trained_run, tmp_path, capsys, kind):
    src = tmp_path / "in"
    src.mkdir()
    if kind == "grayscale":
        Image.fromarray(np.full((40, 20), 128, np.uint8)).save(src / "x.png")
    elif kind == "rgba":
        Image.fromarray(np.full((40, 20, 4), 200, np.uint8), "RGBA").save(src / "x.png")
    else:
        Image.fromarray(np.full((40, 20), 40000, np.uint16)).save(src / "x.png")
    before = (src / "x.png").read_bytes()
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "out"), "--checkpoint", trained_run]) == 0
    assert "written 1" in capsys.readouterr().out
    # written as the run publishes P (privacy.publish: JPEG by default), whatever the input was
    assert [f.name for f in (tmp_path / "out").iterdir()] == ["x.jpg"]
    with Image.open(tmp_path / "out" / "x.jpg") as im:
        assert im.format == "JPEG" and im.mode == "RGB" and im.size == (32, 64)
    assert (src / "x.png").read_bytes() == before
    if kind == "png16":  # 16-bit is rescaled, not clipped to white
        from torchreid_privacy.folders.process import read_rgb

        assert read_rgb(src / "x.png")[0, 0].tolist() == [156, 156, 156]


def test_stray_file_name_in_synthetic_set_is_skipped_and_logged(data_copy, tmp_path, caplog):
    root, images = data_copy
    shutil.copy(next((images / "bounding_box_train").glob("*.jpg")), images / "bounding_box_train" / "notes.jpg")
    out = tmp_path / "split.json"
    with caplog.at_level(logging.WARNING):
        assert main(["split", "--dataset", "synthetic_market", "--root", str(root), "--output", str(out)]) == 0
    assert "skipped 1 file(s)" in caplog.text and "(first: notes.jpg)" in caplog.text
    assert "notes.jpg" not in out.read_text()


def test_stray_file_name_in_torchreid_market1501(data_copy, tmp_path, capsys):
    root, images = data_copy
    stray = images / "bounding_box_train" / "notes.jpg"
    shutil.copy(next((images / "bounding_box_train").glob("*.jpg")), stray)
    assert _train(root, tmp_path / "run", "data.sources", "[market1501]", "data.targets", "[market1501]") == 1
    assert _error(capsys) == (f"data: {stray}: file name does not follow the Market1501 naming scheme "
                              r"(pattern ([-\d]+)_c(\d)); rename or remove the file")


def test_validation_split_leaves_too_few_training_identities(tiny_root, tmp_path, capsys):
    assert _train(tiny_root, tmp_path / "run", "privacy.val_ratio", "0.9") == 1
    assert _error(capsys) == ("data: the training split has 1 identity, fewer than the 4 one batch needs "
                              "(train.batch_size 16 / sampler.num_instances 4); privacy.val_ratio 0.9 holds "
                              "identities out for validation; use a smaller batch or more training identities")
    assert _train(tiny_root, tmp_path / "run", "privacy.val_ratio", "0.95") == 1
    assert _error(capsys) == "val_ratio: 0.95 leaves an empty train or val split with 12 identities"


def test_a_validation_split_as_source_is_refused_not_split_again(tiny_root, tmp_path, capsys):
    """synthetic_market_val would silently become synthetic_market_val_val (a split of the split)."""
    assert _train(tiny_root, tmp_path / "run", "data.sources", "[synthetic_market_val]") == 2  # a config error
    assert _error(capsys) == ("data.sources: 'synthetic_market_val' is already a validation split of "
                              "'synthetic_market'; the privacy run makes its split itself (privacy.val_ratio, "
                              "privacy.split_seed): give data.sources [synthetic_market]")
    assert not (tmp_path / "run").exists()


def test_missing_data_root(tmp_path, capsys):
    missing = tmp_path / "no-such-root"
    assert _train(missing, tmp_path / "run", "data.sources", "[market1501]", "data.targets", "[market1501]") == 1
    assert _error(capsys) == f"data.root: no such folder: {missing} (needed by market1501)"
    assert not missing.exists()  # torchreid would have created it to download Market-1501 into


def test_unknown_config_key_in_a_fresh_process(tmp_path):
    r = subprocess.run([sys.executable, "-m", "torchreid_privacy", "train", "--config-file",
                        packaged_config(QUICKSTART), "train.lrr", "0.1"], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip() == ("torchreid-privacy: error: unknown config key 'train.lrr'; "
                                "closest valid key: 'train.lr'")


def test_wrong_value_type(tiny_root, tmp_path, capsys):
    assert _train(tiny_root, tmp_path / "run", "train.max_epoch", "four") == 2
    assert _error(capsys) == "train.max_epoch: expected int, got 'four' (str)"


def test_invalid_desensitizer_parameter_fails_before_loading_data(tiny_root, tmp_path, capsys):
    assert _train(tiny_root, tmp_path / "run", "privacy.desensitizer.params.block", "0") == 1
    out = capsys.readouterr()
    assert out.err.strip() == ("torchreid-privacy: error: privacy.desensitizer.params: "
                               "block must be an integer >= 1, got 0")
    assert "Loading train" not in out.out
    assert _train(tiny_root, tmp_path / "run", "privacy.desensitizer.params.blok", "6") == 1
    assert _error(capsys) == ("privacy.desensitizer.params: blok is not a parameter of desensitizer 'mosaic' "
                              "(accepts: block)")


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tiny_root, tmp_path, capsys, monkeypatch):
    from torchreid_privacy import builder

    real = builder.build_privacy_engine

    def poisoned(cfg):  # the decoder's output turns NaN from the second epoch on
        engine = real(cfg)
        engine.nets["decoder"].register_forward_hook(
            lambda mod, inp, out: out * float("nan") if mod.training and engine.epoch >= 1 else out)
        return engine

    monkeypatch.setattr(builder, "build_privacy_engine", poisoned)
    run = tmp_path / "run"
    assert _train(tiny_root, run, "privacy.mode", "joint") == 1
    last = run / "checkpoints" / "last.pth"
    err = _error(capsys)
    assert err.startswith("loss term 'd_pr' is nan at epoch 2, step ")
    assert err.endswith(f"; stopping; last good checkpoint: {last} (epoch 1)")
    ck = checkpoint.load(str(last))
    assert ck["epoch"] == 1 and all(torch.isfinite(v).all() for v in ck["models"]["decoder"].values()
                                    if v.is_floating_point())
    assert not (run / "results.json").exists()


def test_checkpoint_of_another_architecture(trained_run, capsys):
    assert main(["test", "--checkpoint", trained_run, "privacy.generator.ngf", "16"]) == 1
    err = _error(capsys)
    best = os.path.join(trained_run, "checkpoints", "best.pth")
    assert err.startswith(f"{best} [generator]: checkpoint does not fit this architecture; shape mismatch: ")
    assert "shape mismatch: down_in.weight, " in err and "more)" in err


def test_anonymize_output_through_a_link_into_the_input(trained_run, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(np.zeros((64, 32, 3), np.uint8)).save(src / "0001_c1.jpg")
    link = tmp_path / "out"
    link.symlink_to(src / "protected")  # dangling link pointing inside the input
    assert main(["anonymize", "--input", str(src), "--output", str(link), "--checkpoint", trained_run]) == 1
    assert _error(capsys).startswith(f"--output: {link} is the input folder or inside it")
    assert sorted(p.name for p in src.iterdir()) == ["0001_c1.jpg"]


def test_resume_from_nowhere(tmp_path, capsys):
    assert main(["train", "--resume", str(tmp_path / "nope")]) == 1
    assert _error(capsys) == f"--resume: no such file or directory: {tmp_path / 'nope'}"


def test_unexpected_failure_is_still_one_line(monkeypatch, capsys):
    from torchreid_privacy import cli

    def broken(args):
        raise TypeError("something\nspanning lines")

    from torchreid_privacy.cli import tools

    monkeypatch.setattr(tools, "list_components", broken)
    assert main(["list"]) == 3
    assert _error(capsys) == ("internal error (TypeError: something; spanning lines); "
                              "rerun with TORCHREID_PRIVACY_DEBUG=1 for the traceback")
