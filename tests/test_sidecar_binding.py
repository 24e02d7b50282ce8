"""A video's sealed sidecar is bound to the video's encoded content, not only its name and shape:
another video of the same name, size, rate and frame count, or a re-encoded or changed copy of the
right one, is refused naming both files, and nothing is written. Sidecars are built directly with
``SealedCropsWriter`` (no model)."""
import contextlib
import io
import logging
import os
import shutil
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from torchreid_privacy.cli import main
from torchreid_privacy.sealing.keys import read_key_file, write_key_file
from torchreid_privacy.sealing.payload import AuthenticationFailed, SealError
from torchreid_privacy.video import sealed_crops
from torchreid_privacy.video.io import VideoWriter, probe, read_frames
from torchreid_privacy.video.sealed_crops import (SealedCropsWriter, encode_png, open_sealed_crops,
                                                  recover_video_crops, video_binding, video_digest)
from torchreid_privacy.video.synthetic import make_synthetic_video

FRAMES, SIZE = 6, 64
BOX = (8, 4, 40, 60)  # x1, y1, x2, y2
OTHER = "belongs to another video, or the video was changed"


def _seal(video: Path, key: bytes, digest=True) -> dict:
    """``video.sealed`` holding one crop per frame; ``{file name: PNG bytes}`` it seals."""
    info = probe(video)
    writer = SealedCropsWriter(video, key, info.width, info.height, info.fps)
    crops = {}
    x1, y1, x2, y2 = BOX
    for i, rgb in enumerate(read_frames(video)):
        png = encode_png(rgb[y1:y2, x1:x2])
        writer.add(i, 0, BOX, png)
        crops[f"frame{i:06d}_box00.png"] = png
    writer.finish(i + 1, video_digest(video) if digest else None)
    writer.publish()
    return crops


def _beside(sidecar_of: Path, video: Path) -> Path:
    """``sidecar_of``'s sidecar copied beside ``video``; the copy's path."""
    side = video.with_name(video.name + ".sealed")
    shutil.copy(sidecar_of.with_name(sidecar_of.name + ".sealed"), side)
    return side


def _write(path: Path, frames, fps=Fraction(10)) -> Path:
    with VideoWriter(path, frames[0].shape[1], frames[0].shape[0], fps) as writer:
        for rgb in frames:
            writer.write(rgb)
    return path


def _nothing_written(out: Path) -> bool:
    return not out.exists() and not [p for p in out.parent.iterdir() if p.name.startswith(f".{out.name}-")]


@pytest.fixture
def key(tmp_path):
    return read_key_file(write_key_file(str(tmp_path / "k.key")))


@pytest.fixture
def pair(tmp_path):
    """Two different videos of the same name, size, rate and frame count, in two folders."""
    videos = []
    for folder, seed in (("a", 1), ("b", 2)):
        (tmp_path / folder).mkdir()
        videos.append(make_synthetic_video(tmp_path / folder / "street.mkv", frames=FRAMES, width=SIZE,
                                           height=SIZE, fps=10, people=2, seed=seed).path)
    return videos


def test_the_right_pair_recovers_every_crop_exactly(pair, key, tmp_path):
    video = pair[0]
    crops = _seal(video, key)
    binding, records = open_sealed_crops(video, key)
    assert binding == video_binding(video) and len(list(records)) == FRAMES
    report = recover_video_crops(video, key, tmp_path / "o")
    assert report.crops == FRAMES
    assert {p.name: p.read_bytes() for p in (tmp_path / "o").glob("*.png")} == crops


def test_another_videos_sidecar_of_the_same_name_and_shape_is_refused(pair, key, tmp_path):
    right, other = pair
    assert video_binding(right) == video_binding(other)  # name, size, rate, frames: all the old binding held
    assert video_digest(right) != video_digest(other)
    _seal(right, key)
    side = _beside(right, other)
    out = tmp_path / "o"
    with pytest.raises(SealError, match=OTHER) as err:
        recover_video_crops(other, key, out)
    msg = str(err.value)
    assert str(side) in msg and str(other) in msg and "\n" not in msg
    assert _nothing_written(out)

    err_io = io.StringIO()  # the command line: one line, a user error
    with contextlib.redirect_stderr(err_io), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["recover", "--input", str(other), "--key-file", str(tmp_path / "k.key"), "--output", str(out)])
    assert rc == 1 and OTHER in err_io.getvalue() and len(err_io.getvalue().strip().splitlines()) == 1
    assert _nothing_written(out)


def test_a_reencoded_copy_of_the_right_video_is_refused(tmp_path, key):
    """A lossy re-encode (H.264: decoded then encoded again) and a lossless one with one pixel changed."""
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(FRAMES)]
    for suffix in (".mp4", ".mkv"):
        right = _write(tmp_path / "right" / f"street{suffix}", frames)
        _seal(right, key)
        copy = [f.copy() for f in read_frames(right)]
        if suffix == ".mkv":
            copy[3][10, 20, 1] ^= 1
        again = _write(tmp_path / f"again{suffix}" / f"street{suffix}", copy)
        assert video_binding(again) == video_binding(right)
        _beside(right, again)
        out = tmp_path / f"o{suffix}"
        with pytest.raises(SealError, match=OTHER):
            recover_video_crops(again, key, out)
        assert _nothing_written(out)


def test_a_copy_or_link_of_the_same_file_opens(pair, key, tmp_path):
    """The digest is of the coded stream: a byte copy or a hard link elsewhere is the same video."""
    right = pair[0]
    crops = _seal(right, key)
    for how in ("copy", "link"):
        (tmp_path / how).mkdir()
        video = tmp_path / how / right.name
        (shutil.copy if how == "copy" else os.link)(right, video)
        _beside(right, video)
        recover_video_crops(video, key, tmp_path / f"o-{how}")
        assert {p.name: p.read_bytes() for p in (tmp_path / f"o-{how}").glob("*.png")} == crops


def test_digest_the_finished_video_under_its_temporary_name_then_link_both(tmp_path, key):
    """What ``anonymize`` does: video closed under a temporary name, digested, sidecar finished with
    that digest and linked, then the video linked into place."""
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(FRAMES)]
    final = tmp_path / "out.mkv"
    writer = SealedCropsWriter(final, key, SIZE, SIZE, Fraction(10))
    for i, rgb in enumerate(frames):
        writer.add(i, 0, BOX, encode_png(rgb[BOX[1]:BOX[3], BOX[0]:BOX[2]]))
    temp = _write(tmp_path / ".out.mkv.123.tmp.mkv", frames)
    writer.finish(FRAMES, video_digest(temp))
    writer.publish()
    os.link(temp, final)
    temp.unlink()
    assert recover_video_crops(final, key, tmp_path / "o").crops == FRAMES


def test_a_version_1_sidecar_opens_with_a_warning(pair, key, tmp_path, caplog):
    """Written without a digest (no video there yet): version 1, bound to the name and shape only;
    it opens with a warning naming it, beside its own video and, the limitation, another of the same shape."""
    right, other = pair
    moved = tmp_path / "aside.mkv"
    os.rename(right, moved)  # not there when the sidecar is finished
    with caplog.at_level(logging.WARNING, logger="torchreid_privacy.video.sealed_crops"):
        crops = _seal_from(moved, right, key)
    assert "version-1 sidecar" in caplog.text
    os.rename(moved, right)
    side = right.with_name(right.name + ".sealed")
    assert side.read_bytes()[4] == 1
    for video in (right, other):
        caplog.clear()
        if video is other:
            _beside(right, other)
        with caplog.at_level(logging.WARNING, logger="torchreid_privacy.video.sealed_crops"):
            out = tmp_path / f"o-{video.parent.name}"
            assert recover_video_crops(video, key, out).crops == FRAMES
        assert f"{video}.sealed: a version-1 sidecar" in caplog.text and "not to its content" in caplog.text
        assert {p.name: p.read_bytes() for p in out.glob("*.png")} == crops


def _seal_from(source: Path, video: Path, key: bytes) -> dict:
    """A version-1 sidecar for ``video`` (absent now) of ``source``'s crops."""
    info = probe(source)
    writer = SealedCropsWriter(video, key, info.width, info.height, info.fps)
    crops = {}
    for i, rgb in enumerate(read_frames(source)):
        png = encode_png(rgb[BOX[1]:BOX[3], BOX[0]:BOX[2]])
        writer.add(i, 0, BOX, png)
        crops[f"frame{i:06d}_box00.png"] = png
    writer.finish(i + 1)
    writer.publish()
    return crops


def test_a_version_2_sidecar_cannot_pass_as_version_1(pair, key, tmp_path):
    right = pair[0]
    _seal(right, key)
    side = right.with_name(right.name + ".sealed")
    data = bytearray(side.read_bytes())
    assert data[4] == 2
    data[4] = 1  # the header says version 1 (no digest to check); the authenticated footer says 2
    side.write_bytes(bytes(data))
    with pytest.raises(AuthenticationFailed, match=r"unusable footer.*version 2 in a version-1 header"):
        recover_video_crops(right, key, tmp_path / "o")
    assert _nothing_written(tmp_path / "o")


def test_the_key_is_checked_before_the_video_is_read(pair, key, monkeypatch, tmp_path):
    right = pair[0]
    _seal(right, key)

    def unread(path):
        raise AssertionError("the video was read before the footer authenticated")

    monkeypatch.setattr(sealed_crops, "_scan", unread)
    with pytest.raises(AuthenticationFailed, match="wrong key"):
        open_sealed_crops(right, bytes(32))


def test_finish_takes_the_32_byte_digest_only(tmp_path, key):
    writer = SealedCropsWriter(tmp_path / "v.mkv", key, SIZE, SIZE, Fraction(10))
    try:
        with pytest.raises(ValueError, match="video_digest must be the 32-byte"):
            writer.finish(1, b"\x00" * 16)
    finally:
        writer.discard()
    assert [p.name for p in tmp_path.iterdir()] == ["k.key"]
