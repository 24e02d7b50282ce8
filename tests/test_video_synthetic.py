"""The generated street videos (``make_synthetic_video``, ``make-data --synthetic-video``).

The plain style must stay byte-for-byte what it was (other tests are built on its frames and
boxes); the hard style must have what makes a pedestrian detector miss people (perspective,
people standing still, groups occluding each other) and a gt.txt whose boxes cover every person
pixel it renders.
"""
import hashlib
from pathlib import Path

import numpy as np
import pytest

from torchreid_privacy.cli import main
from torchreid_privacy.video.io import read_frames
from torchreid_privacy.video.mot import pixel_boxes, read_mot
from torchreid_privacy.video.synthetic import HardStreet, make_synthetic_video, render_hard_street

W, H, FRAMES, PEOPLE = 320, 240, 40, 7


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _columns_sha(path: Path, n: int) -> str:
    """Digest of the first ``n`` columns of every line (later columns belong to write_mot's format)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    return _sha("\n".join(",".join(line.split(",")[:n]) for line in lines).encode())


# -- plain: unchanged ----------------------------------------------------------------------------

# Recorded from the plain renderer before the hard style existed (Pillow 13.0, PyAV 18.1): the
# decoded frames (FFV1 is lossless), gt.txt's frame/id/box columns and det.txt's box/score columns.
# A Pillow release that changes its drawing or LANCZOS resampling changes the frame digest too.
PLAIN = [
    (dict(frames=16, width=160, height=120, people=3, seed=1), 3, 29,
     "40416629fd9e119b1da46fd4268a469c18635cfd1f8f795f2a1e10ee66e02996",
     "7b8f7bb668404e0def91a06bca8aed20b9cfe4acf5648cb7eb8913dca6e92da8",
     "b4c741c49b08b409a26bfcb265081ff36fc56e8c93d40174eb1fc65a10a04144"),
    (dict(frames=20, width=128, height=96, people=5, seed=7, fps=5), 5, 57,
     "21606049d9b3bb08686812ff58b01093a35566dd97008b0003273cc559b994e7",
     "cb90325c6074dd38d3decd43e7d48f18d82fa3873739d6ce561b65cb48c23497",
     "d10cc14bb123e69a8e7dd680bed4ad3b94b341eb8caf6b48eedfc21a368356f9"),
]


@pytest.mark.parametrize("kwargs,people,boxes,frames_sha,gt_sha,det_sha", PLAIN, ids=["160x120", "128x96-5fps"])
def test_plain_style_is_unchanged(tmp_path, kwargs, people, boxes, frames_sha, gt_sha, det_sha):
    info = make_synthetic_video(tmp_path / "plain.mkv", **kwargs)
    explicit = make_synthetic_video(tmp_path / "explicit.mkv", style="plain", **kwargs)
    assert (info.people, info.boxes) == (people, boxes)
    digest = hashlib.sha256()
    for frame in read_frames(info.path):
        digest.update(frame.tobytes())
    assert digest.hexdigest() == frames_sha
    assert _columns_sha(info.gt_path, 6) == gt_sha
    assert _columns_sha(info.det_path, 7) == det_sha
    assert explicit.gt_path.read_bytes() == info.gt_path.read_bytes()
    again = hashlib.sha256()
    for frame in read_frames(explicit.path):
        again.update(frame.tobytes())
    assert again.hexdigest() == frames_sha


# -- hard: what makes detection hard ----------------------------------------------------------------

@pytest.fixture(scope="module")
def street():
    s = HardStreet(frames=FRAMES, width=W, height=H, people=PEOPLE, seed=0)
    return s, [s.render(t, mask=True) for t in range(FRAMES)]


def _tracks(frames):
    out = {}
    for f in frames:
        for row in f.boxes:
            out.setdefault(int(row[5]), {})[f.index] = row[:4]
    return out


def _whole(box) -> bool:
    """A box not cut by the frame's border."""
    return box[0] > 0 and box[1] > 0 and box[2] < W and box[3] < H


def _iou(a, b) -> float:
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_hard_every_person_is_in_the_video(street):
    _, frames = street
    assert len(_tracks(frames)) == PEOPLE
    assert all(len(f.boxes) >= 3 for f in frames)
    for f in frames:
        assert f.image.shape == (H, W, 3) and f.image.dtype == np.uint8
        assert f.boxes.shape == (len(f.visibility), 6)
        assert list(f.boxes[:, 5]) == sorted(f.boxes[:, 5])
        assert ((f.visibility > 0) & (f.visibility <= 1)).all()


def test_hard_people_walking_out_are_annotated_to_the_last_pixel(street):
    s, _ = street
    later = [s.render(t, mask=True) for t in range(FRAMES, 6 * FRAMES, 4)]  # the walks go on after the clip
    cut = [(b, v) for f in later for b, v in zip(f.boxes, f.visibility) if b[0] == 0 or b[2] == W]
    assert min(b[2] - b[0] for b, _ in cut) <= 3  # a sliver of someone, clipped to the frame
    assert min(v for _, v in cut) < 0.2  # most of them is outside: low visibility
    assert len({int(b[5]) for b, _ in cut}) >= 3
    for f in later:
        covered = np.zeros((H, W), bool)
        for x1, y1, x2, y2 in pixel_boxes(f.boxes, W, H):
            covered[y1:y2, x1:x2] = True
        assert not (f.mask & ~covered).any()


def test_hard_people_are_in_perspective(street):
    s, frames = street
    heights = [b[3] - b[1] for f in frames for b in f.boxes if b[1] > 0 and b[3] < H]
    assert max(heights) / min(heights) >= 3
    assert min(heights) <= 0.09 * H and max(heights) >= 0.25 * H
    horizon = s.geometry.horizon
    moved_in_depth = 0.0
    for track in _tracks(frames).values():
        whole = [b for b in track.values() if _whole(b)]
        if len(whole) < 5:
            continue
        h = np.array([b[3] - b[1] for b in whole])
        # height follows the foot line: h / (foot - horizon) is the person's height over the camera's
        per_foot = h / (np.array([b[3] for b in whole]) - horizon)
        assert per_foot.max() / per_foot.min() < 1.1
        moved_in_depth = max(moved_in_depth, h.max() / h.min())
    assert moved_in_depth >= 1.2  # someone walks towards or away from the camera


def test_hard_someone_stands_still_from_the_first_frame(street):
    _, frames = street
    longest = 0
    for track in _tracks(frames).values():
        t = 0
        while t + 1 in track and 0 in track and np.abs(track[t + 1] - track[0]).max() < 1:
            t += 1
        longest = max(longest, t + 1 if 0 in track else 0)
    assert longest >= 25  # frames, from the first one on


def test_hard_groups_occlude_each_other(street):
    _, frames = street
    best = max(_iou(a, b) for f in frames for i, a in enumerate(f.boxes) for b in f.boxes[i + 1:])
    assert best > 0.2
    assert min(v for f in frames for v in f.visibility) < 0.7


def test_hard_boxes_cover_every_person_pixel(street):
    _, frames = street
    for f in frames:
        covered = np.zeros((H, W), bool)
        for x1, y1, x2, y2 in pixel_boxes(f.boxes, W, H):
            assert f.mask[y1:y2, x1:x2].any(), f"frame {f.index}: a box without a person pixel"
            covered[y1:y2, x1:x2] = True
        assert f.mask.any()
        assert not (f.mask & ~covered).any(), f"frame {f.index}: person pixels outside every gt box"


def test_hard_background_is_not_static(street):
    _, frames = street
    outside = np.ones((H, W), bool)
    for f in (frames[0], frames[-1]):
        for x1, y1, x2, y2 in pixel_boxes(f.boxes, W, H):
            outside[max(0, y1 - 2):y2 + 2, max(0, x1 - 2):x2 + 2] = False
    a, b = (frames[i].image.astype(np.float64) for i in (0, -1))
    diff = (a - b)[outside]
    assert np.abs(diff).mean() > 1.5  # sensor noise
    assert abs(diff.mean()) > 1.0  # brightness drift


def test_hard_is_deterministic(street):
    _, frames = street
    again = HardStreet(frames=FRAMES, width=W, height=H, people=PEOPLE, seed=0)
    for t in (FRAMES - 1, 17, 0):  # in another order: each frame depends on its index alone
        f = again.render(t, mask=True)
        assert np.array_equal(f.image, frames[t].image)
        assert np.array_equal(f.boxes, frames[t].boxes) and np.array_equal(f.visibility, frames[t].visibility)
        assert np.array_equal(f.mask, frames[t].mask)
    other = next(render_hard_street(frames=FRAMES, width=W, height=H, people=PEOPLE, seed=1))
    assert not np.array_equal(other.image, frames[0].image)


def test_hard_sizes(tmp_path):
    for width, height in ((64, 64), (160, 90)):
        f = HardStreet(frames=3, width=width, height=height, people=2, seed=3).render(2)
        assert f.image.shape == (height, width, 3) and len(f.boxes)


def test_make_synthetic_video_hard_writes_what_it_renders(tmp_path):
    info = make_synthetic_video(tmp_path / "hard.mkv", frames=12, people=5, seed=4, style="hard")
    rendered = list(render_hard_street(frames=12, people=5, seed=4))
    for got, want in zip(read_frames(info.path), rendered):
        assert np.array_equal(got, want.image)  # lossless
    gt = read_mot(info.gt_path)
    assert sorted(gt) == [f.index for f in rendered if len(f.boxes)]
    for f in rendered:
        assert np.allclose(gt[f.index][:, :4], f.boxes[:, :4]) and np.array_equal(gt[f.index][:, 5], f.boxes[:, 5])
    vis = [float(line.split(",")[8]) for line in info.gt_path.read_text().splitlines()]
    assert np.allclose(vis, np.concatenate([f.visibility for f in rendered]), atol=1e-3)
    assert info.boxes == len(vis) and info.people == 5 and info.frames == 12
    assert len(read_mot(info.det_path)) > 0
    with pytest.raises(FileExistsError):
        make_synthetic_video(tmp_path / "hard.mkv", frames=12, people=5, seed=4, style="hard")


def test_make_synthetic_video_refuses_an_unknown_style(tmp_path):
    with pytest.raises(ValueError, match="style"):
        make_synthetic_video(tmp_path / "v.mkv", style="glossy")
    assert list(tmp_path.iterdir()) == []


# -- the CLI -------------------------------------------------------------------------------------

def test_cli_synthetic_video_hard(tmp_path, capsys):
    video = tmp_path / "street.mkv"
    assert main(["make-data", "--synthetic-video", str(video), "--style", "hard", "--frames", "10"]) == 0
    printed = capsys.readouterr().out
    assert "video: " in printed and "10 frames" in printed and "hard style" in printed
    assert "street.gt.txt" in printed and "street.det.txt" in printed
    lines = (tmp_path / "street.gt.txt").read_text().splitlines()
    assert lines and all(len(line.split(",")) == 9 for line in lines)
    assert {float(line.split(",")[8]) for line in lines} != {1.0}  # visibilities, not write_mot's 1


def test_cli_synthetic_video_is_plain_by_default(tmp_path, capsys):
    assert main(["make-data", "--synthetic-video", str(tmp_path / "cli.mkv"), "--frames", "6"]) == 0
    assert "plain style" in capsys.readouterr().out
    made = make_synthetic_video(tmp_path / "api.mkv", frames=6)
    assert (tmp_path / "cli.gt.txt").read_bytes() == made.gt_path.read_bytes()


def test_cli_style_still_applies_to_root(tmp_path, monkeypatch, capsys):
    from torchreid_privacy.data import synthetic

    calls = []

    def fake(root, **kwargs):
        calls.append(kwargs)
        return Path(root) / "market1501_hard"

    monkeypatch.setattr(synthetic, "make_synthetic_market", fake)
    assert main(["make-data", "--root", str(tmp_path), "--style", "hard"]) == 0
    assert calls == [{"seed": 0, "style": "hard"}]
    assert "hard style" in capsys.readouterr().out


def test_cli_style_is_not_for_from_video(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["make-data", "--from-video", "v.mkv", "--output", "o", "--style", "hard"]) == 1
    assert "--style" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_make_data_synthetic_video_size(tmp_path, capsys):
    """``make-data --synthetic-video --size WxH`` writes frames of that size (the README's street is
    768x576); a malformed size is a usage error naming the flag, and --size only goes with a video."""
    from torchreid_privacy.video.io import probe

    path = tmp_path / "s.mkv"
    assert main(["make-data", "--synthetic-video", str(path), "--style", "hard", "--size", "96x64",
                 "--frames", "3", "--people", "2"]) == 0
    info = probe(str(path))
    assert (info.width, info.height) == (96, 64)
    for bad in ("96", "96x", "x64", "10x64", "96x64x2"):
        with pytest.raises(SystemExit) as e:
            main(["make-data", "--synthetic-video", str(tmp_path / "b.mkv"), "--size", bad])
        assert e.value.code == 2 and "--size" in capsys.readouterr().err
    assert main(["make-data", "--root", str(tmp_path / "d"), "--size", "96x64"]) == 1
    assert "--size: only with --synthetic-video" in capsys.readouterr().err
    assert not (tmp_path / "b.mkv").exists() and not (tmp_path / "d").exists()
