"""The security review's faults, one test each: each failed on 1db565f.

Folder-level tests seal with an identity "anonymizer" (no model needed); the CLI tests use the
session's small joint run for a learned decoder.
"""
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchreid_privacy.cli import main
from torchreid_privacy.sealing import containers, keys, payload
from torchreid_privacy.sealing.keys import write_key_file
from torchreid_privacy.folders.process import process_folder, unseal_folder
from torchreid_privacy.utils import atomic

KEY = bytes(range(32))


def _image_bytes(fmt="PNG", size=(16, 8), seed=0):
    buf = io.BytesIO()
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (*size, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


def _inputs(folder, names=("0001_c1s1_000001_00.jpg", "0002_c2s1_000002_00.jpg")):
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        (folder / name).write_bytes(_image_bytes("JPEG", seed=i))
    return folder


def _seal_folder(src, out, **kw):
    return process_folder(str(src), str(out), lambda x: x, height=16, width=8, seal_key=KEY, **kw)


# ------------------------------------------------------------------ 1. a stripped or truncated seal
@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_a_seal_cut_inside_its_payload_still_reads_as_sealed_and_fails_naming_the_cut(fmt):
    sealed = payload.seal(_image_bytes(fmt), b"the original" * 200, "x.img", KEY).image
    data = containers.png_payload(sealed) if fmt == "PNG" else containers.jpeg_payload(sealed)
    start = sealed.find(data[:16])
    cut = sealed[:start + len(data) // 2]  # inside the chunk / APP11 segment
    assert payload.is_sealed(cut)
    with pytest.raises(payload.AuthenticationFailed, match="truncated"):
        payload.unseal(cut, "x.img", KEY)


def test_recover_never_runs_the_decoder_on_an_unsealed_image_beside_sealed_ones(trained_run, tmp_path, capsys):
    src = _inputs(tmp_path / "in")
    out = tmp_path / "sealed"
    key = tmp_path / "k.key"
    write_key_file(str(key), KEY)
    assert main(["anonymize", "--input", str(src), "--output", str(out), "--checkpoint", trained_run,
                 "--seal-key", str(key)]) == 0
    stripped = out / "0002_c2s1_000002_00.jpg"  # its payload removed: a plain JPEG again
    stripped.write_bytes(_reencode(stripped))
    assert not payload.is_sealed(stripped.read_bytes())
    rec = tmp_path / "rec"
    assert main(["recover", "--input", str(out), "--output", str(rec), "--key-file", str(key),
                 "--checkpoint", trained_run]) == 1
    assert "--allow-unsealed" in capsys.readouterr().err
    assert sorted(p.name for p in rec.iterdir()) == ["0001_c1s1_000001_00.jpg"]  # the exact one only
    assert main(["recover", "--input", str(out), "--output", str(tmp_path / "rec2"), "--key-file", str(key),
                 "--checkpoint", trained_run, "--allow-unsealed"]) == 0
    assert len(list((tmp_path / "rec2").iterdir())) == 2


def _reencode(path):
    buf = io.BytesIO()
    Image.open(path).convert("RGB").save(buf, format="JPEG", quality=95)
    return buf.getvalue()


# ------------------------------------------------------------------ 2. per-file failures stay per file
def test_a_name_that_is_not_utf8_fails_alone(tmp_path):
    src = _inputs(tmp_path / "in")
    bad = os.fsencode(str(src)) + b"/0003_c3\xff.jpg"
    with open(bad, "wb") as f:
        f.write(_image_bytes("JPEG", seed=3))
    report = _seal_folder(src, tmp_path / "out")
    assert report.written == 2 and len(report.failed) == 1 and not report.ok
    assert "not valid UTF-8" in report.failed[0][1]


def test_an_original_name_too_long_for_the_file_system_fails_alone(tmp_path):
    out = tmp_path / "sealed"
    out.mkdir()
    for name, original in (("a.png", "x" * 300 + ".png"), ("b.png", "fine.png")):
        (out / name).write_bytes(payload.seal(_image_bytes(), b"o" + name.encode(), name, KEY,
                                              original_name=original).image)
    report = unseal_folder(str(out), str(tmp_path / "rec"), KEY)
    assert report.restored == 1 and [n for n, _ in report.failed] == ["a.png"]
    assert "cannot write" in report.failed[0][1]


# ------------------------------------------------------------------ 3. --output around --input
def test_an_output_folder_that_contains_the_input_is_refused(tmp_path):
    src = _inputs(tmp_path / "out" / "in")
    with pytest.raises(ValueError, match="--output: .* contains the input folder"):
        _seal_folder(src, tmp_path / "out")


# ------------------------------------------------------------------ 4. a symbolic link inside the output
def test_a_symlinked_subfolder_of_the_output_is_never_written_through(tmp_path):
    src = _inputs(tmp_path / "in" / "cam1")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    os.symlink(elsewhere, out / "cam1")
    report = _seal_folder(src.parent, out)
    assert not any(elsewhere.iterdir()) and report.written == 0
    assert len(report.failed) == 2 and "symbolic link" in report.failed[0][1]


# ------------------------------------------------------------------ 5. atomic writes and planted links
def test_atomic_writes_never_follow_a_link_planted_at_a_temp_name(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    target = tmp_path / "results.json"
    os.symlink(victim, tmp_path / f".results.json.tmp-{os.getpid()}")  # the old, predictable temp name
    atomic.write_json(target, {"a": 1})
    assert victim.read_text() == "keep me" and target.read_text().strip().startswith("{")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".results.json.") and
            not p.is_symlink()] == []  # no temp file left behind


# ------------------------------------------------------------------ 6. what P's size and name reveal
def test_the_payload_size_reveals_the_originals_size_only_to_its_bucket():
    p = _image_bytes()
    sizes = {payload.seal(p, bytes(n), "x.png", KEY).payload_bytes for n in (3000, 3010, 3050)}
    assert len(sizes) == 1
    for n in (3000, 3010):
        assert payload.unseal(payload.seal(p, bytes([7]) * n, "x.png", KEY).image, "x.png", KEY) == bytes([7]) * n


def test_neutral_names_hide_the_input_names_and_recovery_restores_them(trained_run, tmp_path):
    src = _inputs(tmp_path / "in" / "cam1")
    key = tmp_path / "k.key"
    write_key_file(str(key), KEY)
    out = tmp_path / "sealed"
    assert main(["anonymize", "--input", str(src.parent), "--output", str(out), "--checkpoint", trained_run,
                 "--seal-key", str(key), "--neutral-names"]) == 0
    names = sorted(p.name for p in out.iterdir())
    assert len(names) == 2 and all(p.is_file() for p in out.iterdir())  # flat: no camera folder either
    assert not any(part in n for n in names for part in ("0001", "0002", "_c1", "_c2", "cam1"))
    rec = tmp_path / "rec"
    assert main(["recover", "--input", str(out), "--output", str(rec), "--key-file", str(key)]) == 0
    assert sorted(p.relative_to(rec).as_posix() for p in rec.rglob("*.jpg")) == \
        ["cam1/0001_c1s1_000001_00.jpg", "cam1/0002_c2s1_000002_00.jpg"]
    assert (rec / "cam1" / "0001_c1s1_000001_00.jpg").read_bytes() == (src / "0001_c1s1_000001_00.jpg").read_bytes()
    assert main(["anonymize", "--input", str(src), "--output", str(tmp_path / "x"), "--checkpoint", trained_run,
                 "--neutral-names"]) == 1  # nothing to carry the names without a seal


# ------------------------------------------------------------------ 7. the PNG digest's inflation is bounded
def _png(width, height, raw):
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def test_a_png_that_inflates_past_its_declared_size_is_refused():
    declared = 4 * (1 + 4 * 3)  # 4x4 RGB: 52 bytes with filter bytes
    assert containers.png_digest(_png(4, 4, bytes(declared)))  # the honest file digests
    bomb = _png(4, 4, bytes(50_000_000))  # 50 MB of zeros compress to ~50 KB
    with pytest.raises(containers.MalformedContainer, match="inflates past the 52 bytes"):
        containers.png_digest(bomb)
    with pytest.raises(containers.MalformedContainer, match="over the"):
        containers.png_digest(_png(100_000, 100_000, b""))


def test_interlaced_png_sizes_follow_adam7():
    ihdr = struct.pack(">IIBBBBB", 5, 3, 8, 0, 0, 0, 1)  # 5x3 grey, interlaced
    # passes (cols x rows): 1x1, 0, 1x1, 1x1, 3x1, 2x2, 5x1 -> (1+1)*3 + (1+3) + (1+2)*2 + (1+5)
    assert containers.png_raw_size(ihdr) == 2 * 3 + 4 + 6 + 6


# ------------------------------------------------------------------ 8. key files
def test_a_key_file_others_can_read_is_refused(tmp_path):
    path = tmp_path / "k.key"
    path.write_text(KEY.hex() + "\n")
    os.chmod(path, 0o644)
    with pytest.raises(keys.KeyFileError, match=r"accessible by others \(mode 644\).*chmod 600"):
        keys.read_key_file(str(path))
    os.chmod(path, 0o600)
    assert keys.read_key_file(str(path)) == KEY


def test_bytes_after_the_key_are_refused(tmp_path):
    path = tmp_path / "k.key"
    path.write_text(KEY.hex() + "\n" + " " * 200 + "trailing")
    os.chmod(path, 0o600)
    with pytest.raises(keys.KeyFileError, match="and nothing else"):
        keys.read_key_file(str(path))


# ------------------------------------------------------------------ 9. an original too large for the cipher
def test_an_original_over_the_cipher_limit_fails_alone(tmp_path, monkeypatch):
    src = _inputs(tmp_path / "in")
    (src / "0003_c3s1_000003_00.jpg").write_bytes(_image_bytes("JPEG", size=(64, 32), seed=9))
    monkeypatch.setattr(payload, "MAX_ORIGINAL_BYTES", 1000)  # stands in for 2 GiB
    report = _seal_folder(src, tmp_path / "out")
    big = [n for n, _ in report.failed]
    assert big == ["0003_c3s1_000003_00.jpg"] and "at most 1000 can be sealed" in report.failed[0][1]
    assert report.written == 2


# ------------------------------------------------------------------ 10. two payloads, one original
def test_two_payloads_naming_the_same_original_fail(tmp_path):
    out = tmp_path / "sealed"
    out.mkdir()
    for name, content in (("a.png", b"first"), ("b.png", b"second")):
        (out / name).write_bytes(payload.seal(_image_bytes(seed=len(content)), content, name, KEY,
                                              original_name="orig.jpg").image)
    report = unseal_folder(str(out), str(tmp_path / "rec"), KEY)
    assert report.restored == 1 and not report.ok
    assert "names the same original orig.jpg as a.png" in report.failed[0][1]


# ------------------------------------------------------------------ 11. recovering from a subfolder
def test_recovering_from_a_subfolder_says_why_every_file_fails(tmp_path, capsys):
    src = _inputs(tmp_path / "in" / "cam1")
    _seal_folder(src.parent, tmp_path / "sealed")
    key = tmp_path / "k.key"
    write_key_file(str(key), KEY)
    assert main(["recover", "--input", str(tmp_path / "sealed" / "cam1"), "--output", str(tmp_path / "rec"),
                 "--key-file", str(key)]) == 1
    err = capsys.readouterr().err
    assert "recover from that folder, not a subfolder of it" in err
