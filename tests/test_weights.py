"""``--weights URL_OR_PATH`` / ``--sha256``: local files only (the download path is faked)."""
import hashlib
import json

import pytest
import torch

from torchreid_privacy import bridge

from torchreid_privacy.utils import weights
from torchreid_privacy.cli import main
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config
from torchreid_privacy.registry import load_plugins


from tiny_config import TINY


def _backbone(seed=0, num_classes=5):
    load_plugins()
    torch.manual_seed(seed)
    return bridge.build_model("tiny_reid", num_classes=num_classes, loss="triplet")


@pytest.fixture
def weights_file(tmp_path):
    """A torchreid-style checkpoint (``state_dict`` with DataParallel's ``module.`` prefix)."""
    model = _backbone(seed=123)
    path = tmp_path / "tiny_reid.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}, "epoch": 3}, path)
    return path, model, hashlib.sha256(path.read_bytes()).hexdigest()


def _train(tiny_root, tmp_path, *flags):
    return main(["train", *flags, "--config-file", packaged_config(QUICKSTART), "data.root", tiny_root,
                 "data.save_dir", str(tmp_path / "run"), *TINY, "privacy.mode", "baseline", "train.max_epoch", "1"])


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("torchreid-privacy: error: "), err
    return err


def test_local_path_and_sha256_accepted(weights_file):
    path, _, digest = weights_file
    assert weights.fetch(str(path)) == str(path)
    assert weights.fetch(str(path), sha256=digest.upper()) == str(path)


def test_sha256_mismatch_names_file_and_both_hashes(weights_file, tiny_root, tmp_path, capsys):
    path, _, digest = weights_file
    wrong = "0" * 64
    assert _train(tiny_root, tmp_path, "--weights", str(path), "--sha256", wrong) == 1
    err = _one_line_error(capsys)
    assert str(path) in err and digest in err and wrong in err
    assert not (tmp_path / "run").exists()  # failed before building anything
    assert _train(tiny_root, tmp_path, "--weights", str(path), "--sha256", "abc") == 1
    assert "--sha256: expected 64 hexadecimal digits, got 'abc'" in _one_line_error(capsys)


def test_missing_weights_file(tiny_root, tmp_path, capsys):
    assert _train(tiny_root, tmp_path, "--weights", str(tmp_path / "nope.pth")) == 1
    assert f"--weights: no such file: {tmp_path / 'nope.pth'}" in _one_line_error(capsys)


def test_code_executing_pickle_is_refused_by_train(tiny_root, tmp_path, capsys):
    marker = tmp_path / "payload-ran"

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    evil = tmp_path / "evil.pth"
    torch.save({"state_dict": {"conv.weight": torch.zeros(1)}, "x": Payload()}, evil)
    assert _train(tiny_root, tmp_path, "--weights", str(evil)) == 1
    err = _one_line_error(capsys)
    assert f"cannot load checkpoint {evil}" in err
    assert not marker.exists()


def test_model_load_weights_initialises_the_backbone(weights_file, tiny_cfg):
    """``train --weights`` sets model.load_weights; the builder loads matching tensors, skips the classifier."""
    from torchreid_privacy.builder import build_reid_model

    path, source, _ = weights_file
    model = build_reid_model(tiny_cfg("model.load_weights", str(path)), num_classes=7, loss="triplet")
    mine, theirs = model.state_dict(), source.state_dict()
    assert mine["classifier.weight"].shape != theirs["classifier.weight"].shape
    for key, value in theirs.items():
        if key != "classifier.weight":
            assert torch.equal(mine[key], value), key


def test_a_skipped_classifier_warns_unless_only_features_are_used(weights_file, caplog):
    """The demo's third party is scored on features: its classifier (other identities) is
    expected not to fit, and the demo must not print a warning for it."""
    import logging

    path, _, _ = weights_file
    for features_only, level in ((False, logging.WARNING), (True, logging.INFO)):
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="torchreid_privacy.utils.weights"):
            _, discarded = weights.load_backbone_weights(_backbone(num_classes=9), str(path),
                                                          features_only=features_only)
        assert discarded == ["classifier.weight"]
        (record,) = [r for r in caplog.records if "do not fit" in r.getMessage()]
        assert record.levelno == level and "classifier.weight" in record.getMessage()


def test_test_command_swaps_in_backbone_weights(trained_run, weights_file, tmp_path, capsys):
    path, _, digest = weights_file
    out = tmp_path / "t"
    assert main(["test", "--checkpoint", trained_run, "--weights", str(path), "--sha256", digest,
                 "--output", str(out)]) == 0
    assert json.loads((out / "results.json").read_text())["weights"] == str(path)
    other = tmp_path / "other.pth"  # weights of another architecture: nothing fits
    torch.save(bridge.build_model("osnet_x0_25", num_classes=5).state_dict(), other)
    assert main(["test", "--checkpoint", trained_run, "--weights", str(other), "--output", str(out)]) == 1
    assert f"--weights: no tensor of {other} fits the model" in _one_line_error(capsys)


def test_google_drive_link_downloads_once_into_cache(monkeypatch, tmp_path, weights_file):
    """gdown is called with the file id, into the cache; a hash mismatch evicts the cached copy."""
    import gdown

    path, _, digest = weights_file
    calls = []

    def fake_download(id=None, output=None, quiet=False, **kw):
        calls.append(id)
        with open(output, "wb") as f:
            f.write(path.read_bytes())
        return output

    monkeypatch.setattr(gdown, "download", fake_download)
    url = "https://drive.google.com/file/d/1AbCdEfGhIjKlMnOp/view?usp=sharing"
    got = weights.fetch(url, sha256=digest, cache=tmp_path / "cache")
    assert got == str(tmp_path / "cache" / "gdrive-1AbCdEfGhIjKlMnOp") and calls == ["1AbCdEfGhIjKlMnOp"]
    assert weights.fetch(url, cache=tmp_path / "cache") == got and len(calls) == 1  # cached
    with pytest.raises(ValueError, match=f"has sha256 {digest}, expected {'f' * 64}"):
        weights.fetch(url, sha256="f" * 64, cache=tmp_path / "cache")
    assert not (tmp_path / "cache" / "gdrive-1AbCdEfGhIjKlMnOp").exists()
    assert path.exists()  # a local file is never removed, whatever its hash
    with pytest.raises(ValueError, match=f"has sha256 .*, expected {'f' * 64}"):
        weights.fetch(str(path), sha256="f" * 64)
    assert path.exists()

