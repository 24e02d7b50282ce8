"""Keyed recovery: key files (0600, never overwritten, clear errors), the key never persisted,
and a keyed decoder that restores O only with the right key."""
import os
import stat

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from torchreid_privacy.sealing import keys
from torchreid_privacy.builder import build_privacy_engine
from torchreid_privacy.cli import main
from torchreid_privacy.utils.images import from_gan, to_gan
from torchreid_privacy.plugins.keyed import KeyedDecoder


def test_keygen_writes_owner_only_file_and_never_overwrites(tmp_path):
    old = os.umask(0o000)  # even a permissive umask must not widen the key's mode
    try:
        path = str(tmp_path / "secret.key")
        assert main(["keygen", "--output", path]) == 0
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    content = open(path).read()
    assert len(keys.read_key_file(path)) == 32  # 256 bits; legacy 128-bit files still read (test_seal.py)
    assert main(["keygen", "--output", path]) == 1
    assert open(path).read() == content, "an existing key file was overwritten"
    assert main(["keygen", "--output", str(tmp_path / "missing" / "k.key")]) == 1


def test_keygen_keys_differ(tmp_path):
    a, b = keys.write_key_file(str(tmp_path / "a")), keys.write_key_file(str(tmp_path / "b"))
    assert keys.read_key_file(a) != keys.read_key_file(b)


@pytest.mark.parametrize("content,match", [(None, "no such key file"), ("xyz\n", "not a 256-bit key"),
                                           ("ab" * 15 + "\n", "not a 256-bit key"), ("", "not a 256-bit key")])
def test_bad_key_files_name_flag_and_path(tmp_path, content, match):
    path = tmp_path / "k.key"
    if content is not None:
        path.write_text(content)
        os.chmod(path, 0o600)
    with pytest.raises(keys.KeyFileError, match=match) as e:
        keys.read_key_file(str(path))
    assert str(e.value).startswith("--key-file:") and str(path) in str(e.value)


def test_key_planes_are_deterministic_pm1_and_key_dependent():
    k1, k2 = bytes(range(16)), bytes(range(1, 17))
    a = keys.key_planes(k1, 64, 16, 8)
    assert a.shape == (64, 16, 8) and set(a.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(a, keys.key_planes(k1, 64, 16, 8))
    assert torch.equal(a[:, 0, 0], keys.key_code(k1, 64)) and bool((a == a[:, :1, :1]).all())
    assert (a != keys.key_planes(k2, 64, 16, 8)).float().mean() > 0.3  # about half the bits differ
    assert abs(float(a[:, 0, 0].mean())) < 0.3


def test_keyed_decoder_checks_key_shape():
    net = KeyedDecoder(torch.nn.Conv2d(3 + 2, 3, 1), key_channels=2)
    p = torch.zeros(2, 3, 8, 4)
    assert net(p, torch.ones(2, 8, 4)).shape == (2, 3, 8, 4)
    with pytest.raises(ValueError, match="key planes"):
        net(p, torch.ones(3, 8, 4))


KEYED = ("privacy.mode", "joint", "privacy.decoder.keyed", "true")


def test_training_a_keyed_decoder_needs_the_key(tiny_cfg, tmp_path):
    engine = build_privacy_engine(tiny_cfg(*KEYED))
    with pytest.raises(ValueError, match="--key-file"):
        engine.run_privacy(save_dir=str(tmp_path / "run"), max_epoch=1)


def test_right_key_restores_o_wrong_key_gives_back_p(tiny_cfg):
    """Overfit one batch: with the right key R ~ O, with random wrong keys R ~ P (not O)."""
    engine = build_privacy_engine(tiny_cfg(*KEYED, "privacy.lr", "0.002"))
    engine.set_key(bytes(range(16)))
    engine.set_model_mode("train")
    data = next(iter(engine.train_loader))
    for _ in range(200):  # the key test is learned after ~150 steps here
        engine.forward_backward(data)
    engine.set_model_mode("eval")
    o01 = engine.inference.to01(data["img"])
    with torch.no_grad():
        p01 = engine.inference.anonymize(o01)
        right = engine.inference.recover(p01)
        wrong = engine.inference.recover(p01, wrong_key_generator=torch.Generator().manual_seed(1))
    assert F.l1_loss(right, o01) < 0.8 * F.l1_loss(wrong, o01)  # an ignored key gives right == wrong
    assert F.l1_loss(right, o01) < F.l1_loss(p01, o01)
    assert F.l1_loss(wrong, p01) < F.l1_loss(wrong, o01)


@pytest.fixture(scope="module")
def keyed_run(tiny_root, tmp_path_factory):
    from tiny_config import TINY

    from torchreid_privacy.config import load_config
    from torchreid_privacy.studies.demo import QUICKSTART, packaged_config

    base = tmp_path_factory.mktemp("keyed")
    key_file = str(base / "secret.key")
    assert main(["keygen", "--output", key_file]) == 0
    run = base / "run"
    cfg_file = base / "cfg.yaml"
    from torchreid_privacy.config import dump_yaml

    cfg_file.write_text(dump_yaml(load_config(packaged_config(QUICKSTART), [
        "data.root", tiny_root, "data.save_dir", str(run), *TINY, "train.max_epoch", "1", *KEYED])))
    assert main(["train", "--config-file", str(cfg_file), "--key-file", key_file]) == 0
    return run, key_file


def test_key_is_never_persisted(keyed_run, capsys):
    run, key_file = keyed_run
    key = keys.read_key_file(key_file)
    needles = [key, key.hex().encode(), key.hex().upper().encode()]
    for folder, _, files in os.walk(run):
        for name in files:
            blob = open(os.path.join(folder, name), "rb").read()
            assert not any(n in blob for n in needles), f"the key leaked into {name}"


def _images(folder, n=3):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (64, 32, 3), dtype=np.uint8)).save(folder / f"{i:04d}_c1.jpg")
    return folder


def test_recover_folder_needs_the_right_kind_of_key(keyed_run, trained_run, tmp_path, capsys):
    run, key_file = keyed_run
    src = _images(tmp_path / "in")
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "p"), "--checkpoint", str(run)]) == 0
    capsys.readouterr()
    assert main(["recover", "--input", str(tmp_path / "p"), "--output", str(tmp_path / "r0"),
                 "--checkpoint", str(run)]) == 1
    assert "--key-file: required" in capsys.readouterr().err
    assert not (tmp_path / "r0").exists() or not os.listdir(tmp_path / "r0")
    assert main(["recover", "--input", str(tmp_path / "p"), "--output", str(tmp_path / "r1"),
                 "--checkpoint", str(run), "--key-file", str(tmp_path / "nope.key")]) == 1
    assert "no such key file" in capsys.readouterr().err
    assert main(["recover", "--input", str(tmp_path / "p"), "--output", str(tmp_path / "r2"),
                 "--checkpoint", str(run), "--key-file", key_file]) == 0
    assert sorted(os.listdir(tmp_path / "r2")) == sorted(os.listdir(src))
    # an unkeyed run refuses a key instead of silently ignoring it
    assert main(["recover", "--input", str(tmp_path / "p"), "--output", str(tmp_path / "r3"),
                 "--checkpoint", trained_run, "--key-file", key_file]) == 1
    assert "not keyed" in capsys.readouterr().err


def test_test_command_reports_wrong_key_row(keyed_run, tmp_path):
    import json

    run, key_file = keyed_run
    assert main(["test", "--checkpoint", str(run), "--key-file", key_file, "--output", str(tmp_path / "t")]) == 0
    image = next(iter(json.load(open(tmp_path / "t" / "results.json"))["test"].values()))["image"]
    assert {"O-R", "O-R wrong key"} <= set(image)
    assert main(["test", "--checkpoint", str(run), "--output", str(tmp_path / "t2")]) == 0
    image = next(iter(json.load(open(tmp_path / "t2" / "results.json"))["test"].values()))["image"]
    assert "O-R" not in image, "without the key nothing may be recovered"


def test_from_gan_roundtrip_sanity():
    x = torch.rand(1, 3, 4, 4)
    assert torch.allclose(from_gan(to_gan(x)), x)
