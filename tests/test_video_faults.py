"""Damaged videos and interrupted runs: a cut or empty video is never taken quietly, and a run
stopped by SIGTERM or Ctrl-C leaves nothing behind; a SIGKILLed one's temporaries (its decrypted
originals in a 0700 folder) are swept by the next run writing the same output, never a live run's."""
import contextlib
import logging
import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from torchreid_privacy.sealing.keys import read_key_file, write_key_file
from torchreid_privacy.utils import atomic
from torchreid_privacy.video import io as video_io
from torchreid_privacy.video.io import VideoError, VideoWriter, probe, read_frames
from torchreid_privacy.video.sealed_crops import SealedCropsWriter, encode_png, recover_video_crops

W, H, FPS = 64, 48, Fraction(10)
CROPS = 12
REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 60  # seconds a child may take to import torch and reach the point under test (~6 s here)


def _frames(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (H, W, 3), dtype=np.uint8) for _ in range(n)]


def _write_video(path: Path, n: int) -> Path:
    with VideoWriter(path, W, H, FPS) as writer:
        for frame in _frames(n):
            writer.write(frame)
    return path


# -------------------------------------------------------------------------------- damaged videos

@pytest.mark.parametrize("suffix", [".mkv", ".avi"])
def test_a_video_cut_in_half_warns_with_both_counts(tmp_path, suffix, caplog):
    full = _write_video(tmp_path / f"full{suffix}", 60)
    cut = tmp_path / f"cut{suffix}"
    data = full.read_bytes()
    cut.write_bytes(data[:len(data) // 2])
    with caplog.at_level(logging.WARNING, logger="torchreid_privacy.video.io"):
        assert len(list(read_frames(full))) == 60
        assert not caplog.records
        n = len(list(read_frames(cut)))
    assert 0 < n < 60
    # .avi states its frame count; .mkv does not, but its header keeps the duration (6 s at 10 fps)
    stated = "its container states 60" if suffix == ".avi" else "its container's duration implies about 60"
    assert [r.getMessage() for r in caplog.records] == [
        f"{cut}: decoded {n} frame(s), but {stated}: the file is likely cut short"]


def test_an_mp4_cut_in_half_is_refused_naming_the_file(tmp_path):
    full = _write_video(tmp_path / "full.mp4", 60)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(full.read_bytes()[:full.stat().st_size // 2])  # its index (moov) is at the end: lost
    for call in (probe, lambda p: list(read_frames(p))):
        with pytest.raises(VideoError, match=rf"^{re.escape(str(cut))}: cannot be opened as a video"):
            call(cut)


def test_a_video_with_a_header_and_no_frame_is_refused_when_read(tmp_path):
    full = _write_video(tmp_path / "full.mkv", 30)
    head = tmp_path / "head.mkv"
    head.write_bytes(full.read_bytes()[:600])  # Matroska header and track list, no cluster
    assert probe(head).width == W  # it opens ...
    frames = read_frames(head)
    seen = []
    with pytest.raises(VideoError, match=rf"^{re.escape(str(head))}: decoded no frame \("):
        for frame in frames:  # ... and a lazy reader meets the error where the stream ends
            seen.append(frame)
    assert seen == []
    for size in (0, 40):  # nothing, or less than a header
        (tmp_path / f"h{size}.mkv").write_bytes(full.read_bytes()[:size])
        with pytest.raises(VideoError, match=re.escape(f"h{size}.mkv: cannot be opened as a video")):
            list(read_frames(tmp_path / f"h{size}.mkv"))


def test_a_decoding_error_says_how_many_frames_came_before(tmp_path, monkeypatch):
    import av

    video = _write_video(tmp_path / "v.mkv", 8)
    real_open = video_io._open

    class Failing:  # the real container, whose decoder fails after 3 frames
        def __init__(self, path):
            self.container = real_open(path)
            self.streams, self.duration = self.container.streams, self.container.duration

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.container.close()

        def decode(self, stream):
            for i, frame in enumerate(self.container.decode(stream)):
                if i == 3:
                    raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")
                yield frame

    monkeypatch.setattr(video_io, "_open", Failing)
    got = []
    with pytest.raises(VideoError, match=rf"^{re.escape(str(video))}: decoding failed after 3 frame\(s\) \(.*Invalid"):
        for frame in read_frames(video):
            got.append(frame)
    assert len(got) == 3


# -------------------------------------------------------------------------------- the temp names

def test_sweep_removes_only_dead_processes_temporaries_of_that_target(tmp_path, caplog):
    dead = _dead_pid()
    live = os.getpid()
    target = tmp_path / "out.mkv"
    names = {
        f".out.mkv.{dead}.abc_1234.mkv": True,  # VideoWriter's, dead
        f".out.mkv.{dead}.abcd1234.tmp": True,  # new_temp's default suffix, dead
        f".out.mkv-{dead}-zz9_zz9z.partial": True,  # a folder's, dead
        f".out.mkv.{live}.abcd1234.mkv": False,  # a live process's
        f".out.mkv-{live}-abcd1234.partial": False,
        f".out.mkv.{dead}.abcd1234.mkv.bak": False,  # not the pattern
        f".out.mkv.{dead}.abcd123.mkv": False,  # 7 random characters
        f".out.mkv.x{dead}.abcd1234.mkv": False,
        f".other.mkv.{dead}.abcd1234.mkv": False,  # another target's
        f".out.mkv.1.{dead}.abcd1234.mkv": False,  # the target out.mkv.1's
        f".out.mkv.{dead}.abcd1234.avi": False,  # a suffix this target's writers never use
        "out.mkv.partial": False,
    }
    for name, _ in names.items():
        if name.endswith(".partial"):
            (tmp_path / name).mkdir()
            (tmp_path / name / "frame000000_box00.png").write_bytes(b"x")
        else:
            (tmp_path / name).write_bytes(b"x")
    os.symlink(tmp_path / "out.mkv.partial", tmp_path / f".out.mkv-{dead}-linkdir1.partial")  # a link: kept
    names[f".out.mkv-{dead}-linkdir1.partial"] = False
    with caplog.at_level(logging.WARNING, logger="torchreid_privacy.utils.atomic"):
        assert atomic.sweep_stale(target) == 3
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {n for n, swept in names.items() if not swept}
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert all(f"{n}: removed" in logged and f"process {dead}" in logged for n, swept in names.items() if swept)
    assert atomic.sweep_stale(target) == 0
    assert atomic.sweep_stale(tmp_path / "missing-folder" / "x") == 0


def test_temp_names_carry_the_pid(tmp_path):
    fd, tmp = atomic.new_temp(str(tmp_path / "a.json"))
    os.close(fd)
    assert re.fullmatch(rf"\.a\.json\.{os.getpid()}\.[a-z0-9_]{{8}}\.tmp", Path(tmp).name)
    shared, private = atomic.new_folder_beside(tmp_path / "o"), atomic.new_folder_beside(tmp_path / "p", private=True)
    assert re.fullmatch(rf"\.o-{os.getpid()}-[a-z0-9_]{{8}}\.partial", shared.name)
    assert stat.S_IMODE(shared.stat().st_mode) == 0o777 & ~atomic.UMASK
    assert stat.S_IMODE(private.stat().st_mode) == 0o700


# -------------------------------------------------------------------------------- killed runs

def _dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _poll(what, condition, proc, timeout: float = TIMEOUT):
    """Wait until ``condition()`` is true; fail (with the child's output) if ``proc`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"the child ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def spawn():
    """Start ``python -c SCRIPT ARGS...`` from the repository; whatever still runs at the end is killed."""
    started = []

    def start(script: str, *args) -> subprocess.Popen:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script), *map(str, args)], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


@pytest.fixture
def sealed(tmp_path):
    """A small video and its sealed sidecar of CROPS crops (written directly: no model needed)."""
    video = _write_video(tmp_path / "anon.mkv", 4)
    key_file = write_key_file(str(tmp_path / "k.key"))
    key = read_key_file(key_file)
    writer = SealedCropsWriter(video, key, W, H, FPS)
    crops = {}
    for i, rgb in enumerate(_frames(CROPS, seed=1)):
        png = encode_png(rgb[:16, :8])
        writer.add(i % 4, i // 4, (0, 0, 8, 16), png)
        crops[f"frame{i % 4:06d}_box{i // 4:02d}.png"] = png
    writer.finish(4)
    writer.publish()
    return {"video": video, "key_file": key_file, "key": key, "crops": crops}


# the recover CLI in a child whose crop iterator stops after 2 crops until a signal arrives
RECOVER = """
    import sys, time
    from torchreid_privacy.video import sealed_crops

    real = sealed_crops.open_sealed_crops

    def stalling(video, key):
        binding, crops = real(video, key)

        def slowly():
            for i, crop in enumerate(crops):
                yield crop
                if i == 1:
                    time.sleep(600)  # until the test's signal
        return binding, slowly()

    sealed_crops.open_sealed_crops = stalling
    from torchreid_privacy.cli import main
    sys.exit(main(["recover", "--input", sys.argv[1], "--key-file", sys.argv[2], "--output", sys.argv[3]]))
"""


def _partials(folder: Path, name: str):
    return [p for p in folder.iterdir() if p.name.startswith(f".{name}-") and p.name.endswith(".partial")]


def _stalled(folder: Path, name: str):
    """True once a temporary folder for ``name`` holds the 2 crops the child writes before it stalls."""
    return lambda: any(len(list(p.glob("*.png"))) == 2 for p in _partials(folder, name))


def test_interrupted_recovers_leave_nothing_and_a_killed_ones_leftover_is_swept(sealed, spawn, tmp_path, caplog):
    outs = {how: tmp_path / f"originals-{how}" for how in ("term", "int", "kill")}
    procs = {how: spawn(RECOVER, sealed["video"], sealed["key_file"], out) for how, out in outs.items()}  # in parallel
    for how, proc in procs.items():
        _poll(f"{how}: the 2 crops in the temporary folder", _stalled(tmp_path, outs[how].name), proc)
    procs["term"].send_signal(signal.SIGTERM)
    procs["int"].send_signal(signal.SIGINT)  # Ctrl-C
    procs["kill"].kill()
    for how, code in (("term", 143), ("int", 130)):
        _, stderr = procs[how].communicate(timeout=TIMEOUT)
        assert procs[how].returncode == code, stderr
        assert stderr.strip().splitlines()[-1] == "torchreid-privacy: interrupted" and "Traceback" not in stderr
        assert not outs[how].exists() and not _partials(tmp_path, outs[how].name)

    # SIGKILL runs no cleanup: the decrypted originals stay, in a folder only the owner can open
    procs["kill"].communicate(timeout=TIMEOUT)
    assert procs["kill"].returncode == -signal.SIGKILL
    out = outs["kill"]
    [left] = _partials(tmp_path, out.name)
    assert f"-{procs['kill'].pid}-" in left.name and len(list(left.glob("*.png"))) == 2
    assert stat.S_IMODE(left.stat().st_mode) == 0o700
    assert not out.exists()
    with caplog.at_level(logging.WARNING, logger="torchreid_privacy.utils.atomic"):
        report = recover_video_crops(sealed["video"], sealed["key"], out)  # the next run sweeps it
    assert f"{left.name}: removed" in " ".join(r.getMessage() for r in caplog.records)
    assert report.crops == CROPS and not _partials(tmp_path, out.name)
    assert stat.S_IMODE(out.stat().st_mode) == 0o700
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == sealed["crops"]


# a VideoWriter and a SealedCropsWriter for out.mkv, stopped after 3 frames until a signal arrives
WRITE = """
    import sys, time
    from fractions import Fraction
    from pathlib import Path
    import numpy as np
    from torchreid_privacy.video.io import VideoWriter
    from torchreid_privacy.video.sealed_crops import SealedCropsWriter

    out, ready, how = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    if how == "cli":  # SIGTERM handled as the command line's main does
        from torchreid_privacy.cli import _sigterm_interrupts
        guard = _sigterm_interrupts()
    else:
        import contextlib
        guard = contextlib.nullcontext()
    try:
        with guard:
            sealer = SealedCropsWriter(out, bytes(32), 64, 48, Fraction(10))
            try:
                with VideoWriter(out, 64, 48, Fraction(10)) as writer:
                    for i in range(3):
                        writer.write(np.full((48, 64, 3), 40 * i, dtype=np.uint8))
                        sealer.add(i, 0, (0, 0, 4, 4), b"png")
                    ready.write_text("3 frames")
                    time.sleep(600)  # until the test's signal
            except BaseException:
                sealer.discard()
                raise
    except KeyboardInterrupt as exc:
        sys.exit(143 if type(exc).__name__ == "Terminated" else 130)
"""


def _temps(folder: Path):
    return sorted(p.name for p in folder.iterdir() if re.fullmatch(r"\.out\.mkv(\.sealed)?\.\d+\.\w{8}\.(mkv|tmp)",
                                                                  p.name))


def test_killed_and_terminated_writers(spawn, tmp_path, caplog):
    killed, stopped = tmp_path / "killed", tmp_path / "stopped"
    killed.mkdir()
    stopped.mkdir()
    procs = {"kill": spawn(WRITE, killed / "out.mkv", tmp_path / "ready-kill", "plain"),
             "term": spawn(WRITE, stopped / "out.mkv", tmp_path / "ready-term", "cli")}
    for name, proc in procs.items():
        _poll(f"{name}: 3 frames written", (tmp_path / f"ready-{name}").exists, proc)

    # a writer of the same target while the first still runs: the live run's temporaries are kept
    with contextlib.closing(VideoWriter(killed / "out.mkv", W, H, FPS)) as other:
        other.close(keep=False)
    pid = procs["kill"].pid
    assert {re.sub(r"\.\w{8}\.", ".X.", n) for n in _temps(killed)} == {f".out.mkv.sealed.{pid}.X.tmp",
                                                                        f".out.mkv.{pid}.X.mkv"}

    procs["kill"].kill()
    procs["term"].send_signal(signal.SIGTERM)
    for proc in procs.values():
        proc.communicate(timeout=TIMEOUT)
    assert procs["kill"].returncode == -signal.SIGKILL
    assert procs["term"].returncode == 143 and os.listdir(stopped) == []  # every cleanup ran
    assert len(_temps(killed)) == 2  # SIGKILL runs none

    with caplog.at_level(logging.WARNING, logger="torchreid_privacy.utils.atomic"):
        sealer = SealedCropsWriter(killed / "out.mkv", bytes(32), W, H, FPS)  # sweeps the sidecar's temp
        assert [n for n in _temps(killed) if ".sealed." in n and str(pid) in n] == []
        with VideoWriter(killed / "out.mkv", W, H, FPS) as writer:  # and the video's
            assert [n for n in _temps(killed) if str(pid) in n] == []
            writer.write(_frames(1)[0])
        sealer.finish(1)
        sealer.publish()
    assert sorted(os.listdir(killed)) == ["out.mkv", "out.mkv.sealed"]
    assert sum(f"process {pid}, which is no longer running" in r.getMessage() for r in caplog.records) == 2


def test_a_failed_writer_start_leaves_no_temp(tmp_path, monkeypatch):
    import av

    def no_container(*args, **kwargs):
        raise av.error.InvalidDataError(-1094995529, "Invalid data found when processing input")

    monkeypatch.setattr(av, "open", no_container)
    with pytest.raises(av.error.InvalidDataError):
        VideoWriter(tmp_path / "out.mkv", W, H, FPS)
    assert os.listdir(tmp_path) == []
