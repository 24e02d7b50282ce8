"""Sealed recovery from the command line: anonymize --seal-key, recover --key-file (no checkpoint)."""
import hashlib
import os
import secrets

import numpy as np
import pytest
from PIL import Image

from torchreid_privacy.cli import main
from torchreid_privacy.sealing.keys import write_key_file


def _sha(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _originals(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (100, 37, 3), dtype=np.uint8)).save(folder / "0001_c1s1_000001_00.jpg",
                                                                             quality=87)
    Image.fromarray(rng.integers(0, 255, (80, 41, 3), dtype=np.uint8)).save(folder / "0002_c2s1_000002_00.png")
    Image.fromarray(rng.integers(0, 255, (64, 30, 3), dtype=np.uint8)).save(folder / "0003_c3s1_000003_00.bmp")
    return folder


@pytest.fixture
def sealed(trained_run, tmp_path):
    src = _originals(tmp_path / "in")
    key = tmp_path / "secret.key"
    write_key_file(str(key))
    before = _sha(src)
    out = tmp_path / "sealed"
    assert main(["anonymize", "--input", str(src), "--output", str(out), "--checkpoint", trained_run,
                 "--seal-key", str(key)]) == 0
    assert _sha(src) == before  # the input folder is only read
    return src, out, key


def test_recover_without_checkpoint_gives_back_the_exact_files(sealed, tmp_path):
    src, out, key = sealed
    rec = tmp_path / "rec"
    assert main(["recover", "--input", str(out), "--output", str(rec), "--key-file", str(key)]) == 0
    assert _sha(rec) == _sha(src)  # every format, every size: byte-identical (PSNR infinite)


def test_wrong_key_fails_per_file_and_exits_non_zero(sealed, tmp_path, capsys, caplog):
    """Each failure is said once: as the command's own line, not also as a log warning."""
    _, out, _ = sealed
    wrong = tmp_path / "wrong.key"
    write_key_file(str(wrong), secrets.token_bytes(32))
    rec = tmp_path / "rec"
    assert main(["recover", "--input", str(out), "--output", str(rec), "--key-file", str(wrong)]) == 1
    err = capsys.readouterr().err
    assert err.count("authentication failed") == 3 and "0001_c1s1_000001_00.jpg" in err
    assert "authentication failed" not in caplog.text
    assert not rec.exists() or not any(rec.iterdir())


def test_tampered_file_fails_the_others_proceed(sealed, tmp_path, capsys):
    src, out, key = sealed
    jpg = out / "0001_c1s1_000001_00.jpg"
    data = bytearray(jpg.read_bytes())
    data[-10] ^= 0x01  # inside the entropy-coded scan
    jpg.write_bytes(bytes(data))
    rec = tmp_path / "rec"
    assert main(["recover", "--input", str(out), "--output", str(rec), "--key-file", str(key)]) == 1
    assert "0001_c1s1_000001_00.jpg: authentication failed" in capsys.readouterr().err
    assert sorted(p.name for p in rec.iterdir()) == ["0002_c2s1_000002_00.png", "0003_c3s1_000003_00.bmp"]


def test_recover_sealed_images_without_key_names_key_file(sealed, trained_run, tmp_path, capsys):
    _, out, _ = sealed
    assert main(["recover", "--input", str(out), "--output", str(tmp_path / "rec"), "--checkpoint", trained_run]) == 1
    assert "--key-file" in capsys.readouterr().err


def test_unsealed_images_fall_back_to_the_learned_decoder(sealed, trained_run, tmp_path):
    src, out, key = sealed
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for f in out.iterdir():
        (mixed / f.name).write_bytes(f.read_bytes())
    plain = tmp_path / "plain"
    assert main(["anonymize", "--input", str(_originals(tmp_path / "in2")), "--output", str(plain),
                 "--checkpoint", trained_run]) == 0
    (mixed / "plain_0001.jpg").write_bytes((plain / "0002_c2s1_000002_00.jpg").read_bytes())  # P is JPEG 95
    rec = tmp_path / "rec"
    assert main(["recover", "--input", str(mixed), "--output", str(rec), "--key-file", str(key)]) == 1  # no ckpt
    assert main(["recover", "--input", str(mixed), "--output", str(tmp_path / "rec2"), "--key-file", str(key),
                 "--checkpoint", trained_run, "--allow-unsealed"]) == 0
    got = sorted(p.name for p in (tmp_path / "rec2").iterdir())
    assert got == sorted([p.name for p in src.iterdir()] + ["plain_0001.jpg"])
    with Image.open(tmp_path / "rec2" / "plain_0001.jpg") as im:
        assert im.size == (32, 64)  # G_R's output at the model's size


def test_seal_key_of_the_wrong_length(trained_run, tmp_path, capsys):
    src = _originals(tmp_path / "in")
    bad = tmp_path / "bad.key"
    bad.write_text("abcd\n")
    os.chmod(bad, 0o600)
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "o"), "--checkpoint", trained_run,
                 "--seal-key", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "--seal-key" in err and str(bad) in err
    assert not os.path.exists(tmp_path / "o")
