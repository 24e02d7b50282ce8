"""Sealed recovery: the original's exact bytes travel with P under the user's key; any change to
the key, the payload, P's pixels/scans or P's name fails with "authentication failed"."""
import hashlib
import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from PIL import Image

from torchreid_privacy.sealing import keys
from torchreid_privacy.folders.process import process_folder, unseal_folder
from torchreid_privacy.sealing.payload import (
    HEADER_BYTES,
    AlreadySealed,
    AuthenticationFailed,
    CannotCarryPayload,
    NotSealed,
    SealError,
    is_sealed,
    seal,
    seal_file,
    sidecar_path,
    unseal,
    unseal_file,
    unseal_record,
)
from torchreid_privacy.sealing.containers import JPEG_IDENT

KEY = bytes(range(32))
OTHER_KEY = bytes(range(1, 33))
CONTAINER = {"PNG": "png-chunk", "JPEG": "jpeg-app11", "BMP": "sidecar"}


def _encode(fmt: str, seed: int = 0, size=(100, 37)) -> bytes:
    """A small image file's bytes; 100x37: odd sizes catch row-padding and MCU-edge mistakes."""
    w, h = size
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _p(fmt: str, seed: int = 10) -> bytes:
    return _encode(fmt, seed, size=(32, 64))


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _payload_of(sealed) -> bytes:
    """The raw payload from a SealedImage, whatever its container (parsed here, not by seal.py)."""
    if sealed.sidecar is not None:
        return sealed.sidecar
    data = sealed.image
    if data.startswith(b"\x89PNG"):
        i = data.index(b"trPS") - 4
        n, = struct.unpack(">I", data[i:i + 4])
        return data[i + 8:i + 8 + n]
    pieces, pos = [], data.index(JPEG_IDENT)
    while data[pos - 4:pos - 2] == b"\xff\xeb":
        n, = struct.unpack(">H", data[pos - 2:pos])
        pieces.append(data[pos + len(JPEG_IDENT) + 4:pos - 2 + n])
        pos = pos - 2 + n + 4
    return b"".join(pieces)


def _png_with_chunk(p_bytes: bytes, chunk_data: bytes) -> bytes:
    """``p_bytes`` with a trPS chunk (valid CRC) holding ``chunk_data`` before IEND."""
    iend = p_bytes.rindex(b"IEND") - 4
    body = b"trPS" + chunk_data
    chunk = struct.pack(">I", len(chunk_data)) + body + struct.pack(">I", zlib.crc32(body))
    return p_bytes[:iend] + chunk + p_bytes[iend:]


def _strip_png_chunk(data: bytes) -> bytes:
    i = data.index(b"trPS") - 4
    n, = struct.unpack(">I", data[i:i + 4])
    return data[:i] + data[i + 12 + n:]


# -------------------------------------------------------------------------------------- round trips

@pytest.mark.parametrize("p_fmt", ["PNG", "JPEG", "BMP"])
@pytest.mark.parametrize("o_fmt", ["JPEG", "PNG", "BMP"])
def test_round_trip_is_byte_exact(p_fmt, o_fmt):
    p, original = _p(p_fmt), _encode(o_fmt)
    sealed = seal(p, original, "cam1/0001_c1.x", KEY)
    assert sealed.container == CONTAINER[p_fmt]
    assert (sealed.sidecar is None) == (p_fmt != "BMP")
    assert _sha(unseal(sealed.image, "cam1/0001_c1.x", KEY, sealed.sidecar)) == _sha(original)
    assert is_sealed(sealed.image, sealed.sidecar is not None) and not is_sealed(p)
    with Image.open(io.BytesIO(sealed.image)) as a, Image.open(io.BytesIO(p)) as b:  # P still decodes, unchanged
        assert np.array_equal(np.asarray(a), np.asarray(b))


def test_original_name_travels_encrypted():
    p, original = _p("PNG"), _encode("JPEG")
    sealed = seal(p, original, "q/0001.png", KEY, original_name="0001_c1s1.jpg")
    assert b"0001_c1s1" not in sealed.image  # the name is inside the ciphertext
    rec = unseal_record(sealed.image, "q/0001.png", KEY)
    assert rec.original_name == "0001_c1s1.jpg" and rec.data == original
    assert unseal_record(seal(p, original, "q/0001.png", KEY).image, "q/0001.png", KEY).original_name == "0001.png"


def test_two_seals_of_one_image_use_fresh_nonces():
    p, original = _p("PNG"), _encode("PNG")
    a, b = (_payload_of(seal(p, original, "x.png", KEY)) for _ in range(2))
    assert a[5:HEADER_BYTES] != b[5:HEADER_BYTES]  # nonces
    assert a[HEADER_BYTES:] != b[HEADER_BYTES:]
    assert original not in a and original[100:164] not in a  # ciphertext, not the bytes themselves


def test_aead_key_is_hkdf_derived_in_its_own_domain():
    """AES-256-GCM under HKDF-SHA256(key, info "torchreid-privacy/seal/v1/aes-256-gcm"), not the raw key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    from torchreid_privacy.sealing.payload import _associated_data
    from torchreid_privacy.sealing.containers import file_digest

    p = _p("BMP")
    payload = seal(p, b"secret original", "x.bmp", KEY).sidecar
    nonce, ct, ad = payload[5:HEADER_BYTES], payload[HEADER_BYTES:], _associated_data("x.bmp", file_digest(p))
    derived = HKDF(hashes.SHA256(), 32, None, b"torchreid-privacy/seal/v1/aes-256-gcm").derive(KEY)
    pt = AESGCM(derived).decrypt(nonce, ct, ad)  # u16 name length | name | u64 size | original | zero padding
    n = int.from_bytes(pt[:2], "big")
    size = int.from_bytes(pt[2 + n:2 + n + 8], "big")
    assert pt[2 + n + 8:2 + n + 8 + size] == b"secret original" and not any(pt[2 + n + 8 + size:])
    with pytest.raises(InvalidTag):
        AESGCM(KEY).decrypt(nonce, ct, ad)


def test_large_payload_is_split_over_app11_segments_in_order():
    p = _p("JPEG")
    original = os.urandom(150_000)  # > 65533: three segments
    sealed = seal(p, original, "big.jpg", KEY)
    assert sealed.image.count(JPEG_IDENT) == 3
    assert unseal(sealed.image, "big.jpg", KEY) == original
    with Image.open(io.BytesIO(sealed.image)) as im:
        im.load()
    # swap the first two segments: the reassembly refuses them
    data = sealed.image
    starts = [i - 4 for i in range(len(data)) if data.startswith(JPEG_IDENT, i)]
    seg = [data[s:s + 2 + struct.unpack(">H", data[s + 2:s + 4])[0]] for s in starts[:2]]
    swapped = data.replace(seg[0] + seg[1], seg[1] + seg[0])
    with pytest.raises(AuthenticationFailed, match="out of order"):
        unseal(swapped, "big.jpg", KEY)


# ---------------------------------------------------------------------------------------- failures

@pytest.mark.parametrize("p_fmt", ["PNG", "JPEG", "BMP"])
def test_wrong_key_fails(p_fmt):
    sealed = seal(_p(p_fmt), _encode("JPEG"), "a/x.img", KEY)
    with pytest.raises(AuthenticationFailed, match=r"^a/x.img: authentication failed") as e:
        unseal(sealed.image, "a/x.img", OTHER_KEY, sealed.sidecar)
    assert "\n" not in str(e.value)
    legacy = bytes(range(16))  # a 128-bit key that shares its first half with KEY
    with pytest.raises(AuthenticationFailed, match="^a/x.img: authentication failed"):
        unseal(sealed.image, "a/x.img", legacy, sealed.sidecar)


@pytest.mark.parametrize("p_fmt", ["PNG", "JPEG", "BMP"])
def test_renamed_image_fails(p_fmt):
    sealed = seal(_p(p_fmt), _encode("PNG"), "cam1/0001.img", KEY)
    for other in ("cam1/0002.img", "cam2/0001.img", "0001.img"):
        with pytest.raises(AuthenticationFailed, match="authentication failed"):
            unseal(sealed.image, other, KEY, sealed.sidecar)
    assert unseal(sealed.image, "./cam1//0001.img", KEY, sealed.sidecar)  # the same POSIX name, spelled loosely


@pytest.mark.parametrize("p_fmt", ["PNG", "JPEG", "BMP"])
def test_payload_moved_onto_another_image_fails(p_fmt):
    a_p, b_p = _p(p_fmt, seed=1), _p(p_fmt, seed=2)
    a = seal(a_p, _encode("JPEG", 1), "x.img", KEY)
    if p_fmt == "PNG":
        moved, side = _png_with_chunk(b_p, _payload_of(a)), None
    elif p_fmt == "JPEG":  # our segments sit right after SOI + PIL's 18-byte JFIF APP0
        assert a_p[2:4] == b_p[2:4] == b"\xff\xe0" and a.image.index(JPEG_IDENT) == 20 + 4
        block = a.image[20:20 + len(a.image) - len(a_p)]
        moved, side = b_p[:20] + block + b_p[20:], None
    else:
        moved, side = b_p, a.sidecar
    assert is_sealed(moved, side is not None)
    with pytest.raises(AuthenticationFailed, match="authentication failed"):
        unseal(moved, "x.img", KEY, side)


def test_flipped_pixel_in_png_fails():
    sealed = seal(_p("PNG"), _encode("JPEG"), "x.png", KEY)
    payload = _payload_of(sealed)
    with Image.open(io.BytesIO(sealed.image)) as im:
        arr = np.asarray(im).copy()
    arr[10, 5, 1] ^= 1
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    with pytest.raises(AuthenticationFailed, match="authentication failed"):
        unseal(_png_with_chunk(buf.getvalue(), payload), "x.png", KEY)
    # the same pixels re-encoded (another IDAT split/compression) still open: the binding is to pixel data
    same = io.BytesIO()
    with Image.open(io.BytesIO(sealed.image)) as im:
        im.save(same, format="PNG", compress_level=1)
    assert unseal(_png_with_chunk(same.getvalue(), payload), "x.png", KEY) == unseal(sealed.image, "x.png", KEY)


def test_changed_scan_byte_in_jpeg_fails():
    sealed = seal(_p("JPEG"), _encode("PNG"), "x.jpg", KEY)
    data = bytearray(sealed.image)
    sos = data.index(b"\xff\xda")
    i = sos + (len(data) - sos) // 2
    while data[i] in (0xFF, 0xFE) or data[i - 1] == 0xFF:  # keep the marker structure intact
        i += 1
    data[i] ^= 0x01
    with pytest.raises(AuthenticationFailed, match="authentication failed"):
        unseal(bytes(data), "x.jpg", KEY)
    # and a changed quantization table (before the scans) fails too
    data = bytearray(sealed.image)
    dqt = data.index(b"\xff\xdb")
    data[dqt + 10] ^= 0x01
    with pytest.raises(AuthenticationFailed, match="authentication failed"):
        unseal(bytes(data), "x.jpg", KEY)


@pytest.mark.parametrize("p_fmt", ["PNG", "JPEG", "BMP"])
def test_flipped_payload_byte_fails(p_fmt):
    sealed = seal(_p(p_fmt), _encode("JPEG"), "x.img", KEY)
    payload = bytearray(_payload_of(sealed))
    for at in (5, HEADER_BYTES + 7, len(payload) - 1):  # nonce, ciphertext, tag
        bad = bytearray(payload)
        bad[at] ^= 0x80
        if p_fmt == "PNG":  # a valid CRC, so the AEAD itself must catch it
            image, side = _png_with_chunk(_strip_png_chunk(sealed.image), bytes(bad)), None
        elif p_fmt == "JPEG":
            image, side = sealed.image.replace(bytes(payload), bytes(bad)), None
            assert image != sealed.image
        else:
            image, side = sealed.image, bytes(bad)
        with pytest.raises(AuthenticationFailed, match="authentication failed"):
            unseal(image, "x.img", KEY, side)
    if p_fmt == "PNG":  # a flip without fixing the CRC is caught as damage, same verdict
        raw = bytearray(sealed.image)
        raw[sealed.image.index(b"trPS") + 30] ^= 1
        with pytest.raises(AuthenticationFailed, match="authentication failed.*CRC"):
            unseal(bytes(raw), "x.img", KEY)


@pytest.mark.parametrize("p_fmt", ["PNG", "BMP"])
def test_truncated_payload_fails(p_fmt):
    sealed = seal(_p(p_fmt), _encode("JPEG"), "x.img", KEY)
    payload = _payload_of(sealed)
    for cut in (len(payload) - 1, HEADER_BYTES + 3, 10, 0):
        short = payload[:cut]
        if p_fmt == "PNG":
            image, side = _png_with_chunk(_strip_png_chunk(sealed.image), short), None
        else:
            image, side = sealed.image, short
        with pytest.raises(AuthenticationFailed, match="authentication failed"):
            unseal(image, "x.img", KEY, side)
    if p_fmt == "PNG":  # the file itself cut inside the chunk
        cut_at = sealed.image.index(b"trPS") + 100
        with pytest.raises(AuthenticationFailed, match="authentication failed.*truncated"):
            unseal(sealed.image[:cut_at], "x.img", KEY)


def test_not_sealed_and_bad_arguments():
    with pytest.raises(NotSealed, match="^x.png: not sealed"):
        unseal(_p("PNG"), "x.png", KEY)
    with pytest.raises(NotSealed, match="^x.bmp: not sealed"):
        unseal(_p("BMP"), "x.bmp", KEY)
    with pytest.raises(SealError, match="^key: expected 32 bytes"):
        seal(_p("PNG"), b"o", "x.png", b"short")
    with pytest.raises(SealError, match="name: .*relative"):
        seal(_p("PNG"), b"o", "../x.png", KEY)
    with pytest.raises(SealError, match="original_name: '../b.jpg' must be a relative path"):
        seal(_p("PNG"), b"o", "x.png", KEY, original_name="../b.jpg")
    with pytest.raises(SealError, match="fmt='JPEG'"):
        seal(_p("PNG"), b"o", "x.png", KEY, fmt="JPEG")
    with pytest.raises(CannotCarryPayload, match="^x.bmp: cannot carry"):
        seal(_p("BMP"), b"o", "x.bmp", KEY, allow_sidecar=False)


def test_resealing_is_refused():
    sealed = seal(_p("PNG"), b"first", "x.png", KEY)
    with pytest.raises(AlreadySealed, match="^x.png: already sealed"):
        seal(sealed.image, b"second", "x.png", KEY)
    sealed = seal(_p("JPEG"), b"first", "x.jpg", KEY)
    with pytest.raises(AlreadySealed, match="^x.jpg: already sealed"):
        seal(sealed.image, b"second", "x.jpg", KEY)


def test_seal_file_and_unseal_file(tmp_path):
    (tmp_path / "p.bmp").write_bytes(_p("BMP"))
    (tmp_path / "p.png").write_bytes(_p("PNG"))
    (tmp_path / "o.jpg").write_bytes(original := _encode("JPEG"))
    before_bmp = (tmp_path / "p.bmp").read_bytes()
    assert seal_file(tmp_path / "p.bmp", tmp_path / "o.jpg", KEY).container == "sidecar"
    assert (tmp_path / "p.bmp").read_bytes() == before_bmp and sidecar_path(tmp_path / "p.bmp").is_file()
    assert seal_file(tmp_path / "p.png", tmp_path / "o.jpg", KEY).container == "png-chunk"
    with pytest.raises(AlreadySealed, match="p.bmp: already sealed .*sidecar"):
        seal_file(tmp_path / "p.bmp", tmp_path / "o.jpg", KEY)
    with pytest.raises(AlreadySealed, match="p.png: already sealed"):
        seal_file(tmp_path / "p.png", tmp_path / "o.jpg", KEY)
    assert unseal_file(tmp_path / "p.bmp", KEY, out_path=tmp_path / "r.jpg") == original
    assert (tmp_path / "r.jpg").read_bytes() == original
    with pytest.raises(SealError, match="r.jpg already exists"):
        unseal_file(tmp_path / "p.png", KEY, out_path=tmp_path / "r.jpg")
    assert (tmp_path / "r.jpg").read_bytes() == original
    (tmp_path / "p.png").rename(tmp_path / "q.png")  # a renamed file no longer opens under its new name
    with pytest.raises(AuthenticationFailed, match=f"^{tmp_path / 'q.png'}: authentication failed"):
        unseal_file(tmp_path / "q.png", KEY)
    assert unseal_file(tmp_path / "q.png", KEY, name="p.png") == original
    assert not [p for p in os.listdir(tmp_path) if ".tmp" in p]


# --------------------------------------------------------------------------------------------- keys

def test_legacy_128_bit_key_file_still_works(tmp_path):
    legacy = bytes(range(16))
    path = tmp_path / "old.key"
    path.write_text(legacy.hex() + "\n")
    os.chmod(path, 0o600)
    key = keys.read_key_file(str(path))
    assert key == legacy
    # the keyed decoder's code of this fixed legacy key, pinned from the 128-bit-only implementation
    expected = "1101001111000110100110101111101110001010011100111010101100000011"
    assert "".join("1" if v > 0 else "0" for v in keys.key_code(key, 64).tolist()) == expected
    sealed = seal(_p("PNG"), b"original", "x.png", key)
    assert unseal(sealed.image, "x.png", key) == b"original"


def test_new_key_files_hold_256_bits(tmp_path):
    path = keys.write_key_file(str(tmp_path / "new.key"))
    assert len(open(path).read().strip()) == 64
    key = keys.read_key_file(path)
    assert len(key) == 32
    code = keys.key_code(key, 64)
    assert set(code.unique().tolist()) == {-1.0, 1.0}
    assert not torch.equal(code, keys.key_code(key[:16], 64))  # all 256 bits count
    sealed = seal(_p("JPEG"), b"original", "x.jpg", key)
    assert unseal(sealed.image, "x.jpg", key) == b"original"
    with pytest.raises(AuthenticationFailed, match="^x.jpg: authentication failed"):
        unseal(sealed.image, "x.jpg", key[:16])


@pytest.mark.parametrize("digits", [48, 31, 65, 0])
def test_key_file_of_wrong_length_names_flag_and_path(tmp_path, digits):
    path = tmp_path / "bad.key"
    path.write_text("a" * digits + "\n")
    os.chmod(path, 0o600)
    with pytest.raises(keys.KeyFileError, match="not a 256-bit key") as e:
        keys.read_key_file(str(path))
    assert str(e.value).startswith("--key-file:") and str(path) in str(e.value)
    with pytest.raises(keys.KeyFileError, match="key: expected 32 bytes"):
        keys.write_key_file(str(tmp_path / "w.key"), b"x" * 24)


# ------------------------------------------------------------------------------------------ folders

def _listing(root: Path) -> dict:
    """Every path under ``root`` with its content hash and mtime (folders: None): any write shows."""
    return {p.relative_to(root).as_posix(): (_sha(p.read_bytes()) if p.is_file() else None, p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def mixed_folder(tmp_path):
    src = tmp_path / "in"
    (src / "cam2").mkdir(parents=True)
    files = {"0001_c1.jpg": ("JPEG", 1), "0002_c1.png": ("PNG", 2), "0003_c1.bmp": ("BMP", 3),
             "0004_c1.tif": ("TIFF", 4), "cam2/0005_c2.jpg": ("JPEG", 5), "cam2/0006_c2.png": ("PNG", 6)}
    for name, (fmt, seed) in files.items():
        (src / name).write_bytes(_encode(fmt, seed))
    (src / "notes.txt").write_text("not an image")
    return src


def _fn(x: torch.Tensor) -> torch.Tensor:
    return 1.0 - x  # stands in for G: sealing must not depend on the model


def test_sealed_folder_round_trip(mixed_folder, tmp_path):
    src = mixed_folder
    before = _listing(src)
    plain, sealed_out, restored = tmp_path / "plain", tmp_path / "sealed", tmp_path / "restored"
    process_folder(str(src), str(plain), _fn, height=64, width=32)
    report = process_folder(str(src), str(sealed_out), _fn, height=64, width=32, seal_key=KEY)
    assert report.written == 6 and not report.skipped_unreadable
    assert _listing(src) == before, "the input folder was written"
    for p in plain.rglob("*.*"):  # same pixels as without sealing
        with Image.open(p) as a, Image.open(sealed_out / p.relative_to(plain)) as b:
            assert np.array_equal(np.asarray(a), np.asarray(b)), p
    assert sorted(p.name for p in sealed_out.rglob("*.sealed")) == ["0003_c1.bmp.sealed", "0004_c1.tif.sealed"]
    again = process_folder(str(src), str(sealed_out), _fn, height=64, width=32, seal_key=KEY)
    assert again.written == 0 and again.skipped_existing == 6

    rep = unseal_folder(str(sealed_out), str(restored), KEY)
    assert (rep.restored, rep.failed, rep.unsealed, rep.ok) == (6, [], [], True)
    originals = {p.relative_to(src).as_posix(): _sha(p.read_bytes()) for p in src.rglob("*") if p.suffix != ".txt"
                 and p.is_file()}
    assert {p.relative_to(restored).as_posix(): _sha(p.read_bytes()) for p in restored.rglob("*") if p.is_file()} \
        == originals
    assert _listing(src) == before
    stamp = _listing(restored)
    rep = unseal_folder(str(sealed_out), str(restored), KEY)  # never overwrites
    assert (rep.restored, rep.skipped_existing) == (0, 6) and _listing(restored) == stamp


def test_unseal_folder_reports_failures_by_name_and_continues(mixed_folder, tmp_path):
    sealed_out = tmp_path / "sealed"
    process_folder(str(mixed_folder), str(sealed_out), _fn, height=64, width=32, seal_key=KEY)
    (sealed_out / "0001_c1.jpg").rename(sealed_out / "0009_c1.jpg")  # renamed
    png = (sealed_out / "cam2" / "0006_c2.png").read_bytes()  # another image's payload on this one
    other = (sealed_out / "0002_c1.png").read_bytes()
    i = png.index(b"trPS") - 4
    payload = png[i + 8:i + 8 + struct.unpack(">I", png[i:i + 4])[0]]
    (sealed_out / "0002_c1.png").write_bytes(_png_with_chunk(_strip_png_chunk(other), payload))
    side = sealed_out / "0003_c1.bmp.sealed"  # truncated sidecar
    side.write_bytes(side.read_bytes()[:-5])
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(sealed_out / "plain.png")  # never sealed
    restored = tmp_path / "restored"
    rep = unseal_folder(str(sealed_out), str(restored), KEY)
    assert sorted(name for name, _ in rep.failed) == ["0002_c1.png", "0003_c1.bmp", "0009_c1.jpg"]
    assert all(f"{name}: authentication failed" in why for name, why in rep.failed)
    assert rep.unsealed == ["plain.png"] and rep.restored == 3 and not rep.ok
    assert sorted(p.relative_to(restored).as_posix() for p in restored.rglob("*") if p.is_file()) == \
        ["0004_c1.tif", "cam2/0005_c2.jpg", "cam2/0006_c2.png"]
    assert "failed 3" in rep.line() and "not sealed 1" in rep.line()
    # the CLI's fallback: the learned decoder runs on the unsealed images only
    fallback = process_folder(str(sealed_out), str(restored), _fn, 64, 32, only=rep.unsealed)
    assert fallback.written == 1 and (restored / "plain.png").is_file()

    wrong = unseal_folder(str(sealed_out), str(tmp_path / "wrong"), OTHER_KEY)
    assert len(wrong.failed) == 6 and wrong.restored == 0
    assert not (tmp_path / "wrong").exists() or not any((tmp_path / "wrong").rglob("*.*"))
    (sealed_out / "0004_c1.tif").unlink()  # a sidecar without its image
    orphan = unseal_folder(str(sealed_out), str(tmp_path / "orphan"), KEY)
    assert ("0004_c1.tif.sealed" in dict(orphan.failed)) and "is missing" in dict(orphan.failed)["0004_c1.tif.sealed"]


def test_unseal_folder_refuses_output_inside_input_and_bad_keys(mixed_folder):
    with pytest.raises(ValueError, match="--output"):
        unseal_folder(str(mixed_folder), str(mixed_folder / "out"), KEY)
    with pytest.raises(SealError, match="^key:"):
        unseal_folder(str(mixed_folder), str(mixed_folder.parent / "o"), b"123")
    with pytest.raises(SealError, match="^key:"):
        process_folder(str(mixed_folder), str(mixed_folder.parent / "o2"), _fn, 64, 32, seal_key=b"123")
    assert not (mixed_folder.parent / "o2").exists()
