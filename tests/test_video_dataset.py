"""``make-data --from-video``: people tracked through a video become a Market-1501-layout ReID set.

The tracker is measured against the generated video's ground truth; the metric itself on
hand-made cases; the written set against the decoded video; every refusal writes nothing.
"""
import json
import re
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from torchreid_privacy.cli import main
from torchreid_privacy.video import to_dataset
from torchreid_privacy.video.detectors import DEFAULT_DETECTOR
from torchreid_privacy.video.io import VideoError, VideoWriter, read_frames
from torchreid_privacy.video.mot import read_mot, tracks_of
from torchreid_privacy.video.synthetic import make_synthetic_video
from torchreid_privacy.video.to_dataset import SPLIT_DIRS, video_to_dataset
from torchreid_privacy.video.tracklets import TrackLinker, evaluate_tracklets, link_video

MARKET = re.compile(r"([-\d]+)_c(\d)")  # torchreid's Market-1501 parser
NAME = re.compile(r"^(\d{4})_c(\d)s1_(\d{6})_(\d{2})\.jpg$")
FRAMES = 120


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    """A 120-frame 320x240 street video with 8 walkers, its gt.txt and noisy det.txt."""
    return make_synthetic_video(tmp_path_factory.mktemp("video") / "street.mkv", frames=FRAMES, people=8, seed=0)


@pytest.fixture(scope="module")
def decoded(street):
    return list(read_frames(street.path))


@pytest.fixture(scope="module")
def dataset(street, tmp_path_factory):
    out = tmp_path_factory.mktemp("made") / "street-reid"
    report = video_to_dataset(street.path, out, detections=street.det_path, ground_truth=street.gt_path,
                              every=2, progress=False)
    return report


def _files(root: Path):
    return {split: sorted(p.name for p in (root / folder).iterdir()) for split, folder in SPLIT_DIRS.items()}


def _folder_listing(folder: Path):
    return sorted(p.name for p in folder.iterdir())


# -- tracklets ---------------------------------------------------------------------------------

def test_tracklets_from_noisy_detections_follow_the_ground_truth(street):
    det, gt = read_mot(street.det_path), tracks_of(read_mot(street.gt_path))
    tracklets = link_video(((f, det.get(f, np.zeros((0, 6)))) for f in range(FRAMES)), fps=10)
    quality = evaluate_tracklets(tracklets, gt)
    assert quality["purity"] >= 0.9
    assert quality["coverage"] >= 0.8
    assert quality["precision"] >= 0.9
    assert quality["gt_tracks"] == street.people == 8
    assert quality["gt_boxes"] == street.boxes
    assert abs(quality["tracklets"] - 8) <= 2
    assert all(frames == sorted(frames) for frames in ([f for f, _ in t] for t in tracklets.values()))


def test_linker_keeps_rows_and_coordinates_and_numbers_tracklets_from_one():
    boxes = np.array([[10, 20, 50, 120, 0.9, -1], [200, 20, 240, 120, 0.8, -1]], dtype=float)
    linker = TrackLinker(fps=10)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # ByteTrack's deprecation warning is silenced where it is built
        TrackLinker(fps=10)
    first = linker.update(0, boxes)
    assert first.shape == (2, 6) and np.array_equal(first[:, :5], boxes[:, :5])
    ids = []
    for frame in range(1, 5):
        moved = boxes + [2 * frame, 0, 2 * frame, 0, 0, 0]
        out = linker.update(frame, moved[::-1])  # rows in another order: ids follow the people
        assert np.array_equal(out[:, :5], moved[::-1, :5])
        ids.append(out[::-1, 5].tolist())
    assert ids[-1] == ids[0] and sorted(ids[0]) == [1, 2]
    assert not np.shares_memory(out, moved)


def test_linker_accepts_empty_frames_and_refuses_going_back():
    linker = TrackLinker(fps=25)
    assert linker.update(0, np.zeros((0, 6))).shape == (0, 6)
    assert linker.lost_frames == 25
    with pytest.raises(ValueError, match="frame_index: must increase"):
        linker.update(0, np.zeros((0, 6)))
    with pytest.raises(ValueError, match="fps"):
        TrackLinker(fps=0)


def _box(x, y=0.0):
    return np.array([x, y, x + 10.0, y + 20.0])


def test_evaluate_perfect_tracklets():
    gt = {1: {f: _box(f) for f in range(4)}, 2: {f: _box(100 + f) for f in range(4)}}
    tracklets = {7: [(f, _box(f)) for f in range(4)], 9: [(f, _box(100 + f)) for f in range(4)]}
    q = evaluate_tracklets(tracklets, gt)
    assert (q["purity"], q["precision"], q["coverage"], q["id_switches"]) == (1.0, 1.0, 1.0, 0)
    assert (q["tracklets"], q["gt_tracks"], q["boxes"], q["gt_boxes"]) == (2, 2, 8, 8)


def test_a_tracklet_mixing_two_people_has_purity_below_one():
    gt = {1: {f: _box(f) for f in range(4)}, 2: {f: _box(100 + f) for f in range(4)}}
    # tracklet 7 follows person 1 for three frames, then jumps to person 2; tracklet 9 follows person 2
    tracklets = {7: [(0, _box(0)), (1, _box(1)), (2, _box(2)), (3, _box(103))],
                 9: [(f, _box(100 + f)) for f in range(3)]}
    q = evaluate_tracklets(tracklets, gt)
    assert q["purity"] == pytest.approx(6 / 7)  # 3 of 4 in tracklet 7, 3 of 3 in tracklet 9
    assert q["coverage"] == pytest.approx(7 / 8)
    assert q["id_switches"] == 1  # person 2: tracklet 9 then 7


def test_missed_boxes_lower_coverage_and_stray_boxes_precision():
    gt = {1: {f: _box(f) for f in range(4)}}
    missed = {1: [(f, _box(f)) for f in range(3)]}  # frame 3 not found
    q = evaluate_tracklets(missed, gt)
    assert q["coverage"] == pytest.approx(3 / 4) and q["precision"] == q["purity"] == 1.0
    stray = {1: [(f, _box(f)) for f in range(4)] + [(4, _box(50))]}  # a box where nobody is
    q = evaluate_tracklets(stray, gt)
    assert q["precision"] == pytest.approx(4 / 5) and q["unmatched_boxes"] == 1
    assert q["purity"] == q["coverage"] == 1.0  # a stray box mixes no identities
    shifted = {1: [(f, _box(f + 8)) for f in range(4)]}  # IoU 0.11 < 0.5: no match
    assert evaluate_tracklets(shifted, gt)["coverage"] == 0.0
    assert evaluate_tracklets(shifted, gt, iou=0.1)["coverage"] == 1.0


# -- the written dataset -----------------------------------------------------------------------

def test_layout_names_and_split(dataset):
    root = dataset.output
    assert _folder_listing(root) == ["bounding_box_test", "bounding_box_train", "boxes.txt", "dataset.json", "query"]
    files = _files(root)
    pids = {}
    for split, names in files.items():
        assert names, split
        for name in names:
            assert NAME.match(name), name
            pid, cam = map(int, MARKET.search(name).groups())
            assert pid >= 1 and cam in (1, 2)
        pids[split] = {int(MARKET.search(n).group(1)) for n in names}
    assert not pids["train"] & (pids["query"] | pids["gallery"])
    assert pids["query"] == pids["gallery"]
    assert sorted(pids["train"] | pids["query"]) == list(range(1, len(pids["train"] | pids["query"]) + 1))


def test_every_query_has_a_match_on_another_camera_and_cameras_are_time_segments(dataset):
    files = _files(dataset.output)
    gallery = {tuple(map(int, MARKET.search(n).groups())) for n in files["gallery"]}
    per_camera = {}
    for name in files["query"]:
        pid, cam = map(int, MARKET.search(name).groups())
        assert any(p == pid and c != cam for p, c in gallery), name
        per_camera[pid, cam] = per_camera.get((pid, cam), 0) + 1
    assert set(per_camera.values()) == {1}  # one query per identity and camera
    frames = {}
    for name in [n for names in files.values() for n in names]:
        pid, cam, frame, _ = map(int, NAME.match(name).groups())
        frames.setdefault(pid, {}).setdefault(cam, []).append(frame)
        assert frame % 2 == 0  # every=2
    for pid, cams in frames.items():
        assert max(cams[1]) < min(cams[2]), pid


def test_crops_are_the_frame_regions(dataset, decoded):
    boxes = read_mot(dataset.output / "boxes.txt")
    by_name = {}
    for frame, rows in boxes.items():
        for x1, y1, x2, y2, _, pid in rows:
            by_name[int(pid), frame] = tuple(int(round(v)) for v in (x1, y1, x2, y2))
    paths = sorted(p for folder in SPLIT_DIRS.values() for p in (dataset.output / folder).iterdir())
    assert len(by_name) == len(paths) == dataset.counts["boxes_kept"]
    h, w = decoded[0].shape[:2]
    for path in paths[::7]:
        pid, _, frame, _ = map(int, NAME.match(path.name).groups())
        x1, y1, x2, y2 = by_name[pid, frame]
        assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h and y2 - y1 >= 64
        crop = np.asarray(Image.open(path).convert("RGB"), dtype=np.float64)
        region = decoded[frame][y1:y2, x1:x2].astype(np.float64)
        assert crop.shape == region.shape
        error = np.abs(crop - region).mean()
        assert error < 3.0, path.name  # JPEG quality 95, 4:4:4
        if x2 < w:  # and the region one pixel to the right is further off
            shifted = decoded[frame][y1:y2, x1 + 1:x2 + 1].astype(np.float64)
            assert error < np.abs(crop - shifted).mean(), path.name


def test_dataset_json_counts_match_the_files(dataset, street):
    record = json.loads((dataset.output / "dataset.json").read_text())
    assert record == json.loads(dataset.json_path.read_text())
    files = _files(dataset.output)
    counts = record["counts"]
    assert counts == dataset.counts
    for split, names in files.items():
        assert counts[f"{split}_images"] == len(names)
        assert counts[f"{split}_identities"] == len({n[:4] for n in names})
    assert counts["boxes_kept"] == sum(map(len, files.values()))
    assert counts["frames_read"] == FRAMES == record["source"]["frames"]
    assert counts["boxes_detected"] == sum(map(len, read_mot(street.det_path).values()))
    assert counts["tracklets_found"] == counts["tracklets_kept"] + counts["tracklets_dropped"]
    assert counts["tracklets_kept"] == len(record["identities"]) == counts["train_identities"] + counts[
        "query_identities"]
    assert record["source"] | {"video": None} == {"video": None, "width": 320, "height": 240, "fps": 10.0,
                                                  "frames": FRAMES, "frames_stated": record["source"]["frames_stated"]}
    assert Path(record["source"]["video"]) == Path(street.path).absolute()
    assert record["detector"]["name"] == f"file:{street.det_path}"
    assert record["detector"]["settings"]["file"] == str(street.det_path)
    assert record["settings"] == {"every": 2, "min_height": 64, "min_images": 8, "segments": 2, "test_ratio": 0.5,
                                  "seed": 0, "ground_truth": str(Path(street.gt_path).absolute())}
    tracking = record["tracking"]
    assert tracking["purity"] >= 0.9 and tracking["coverage"] >= 0.8
    recall = tracking["privacy_recall"]  # the noisy det.txt misses 5% of the boxes and jitters the rest
    assert recall["people"] == sum(map(len, read_mot(street.gt_path, evaluation=False).values()))
    assert 0.6 <= recall["recall"] < 1.0 and recall["hidden"] + recall["missed"] == recall["people"]
    assert tracking["tracklets"] == counts["tracklets_kept"]
    for ident in record["identities"]:
        folders = ("train",) if ident["split"] == "train" else ("query", "gallery")
        assert sum(n.startswith(f"{ident['pid']:04d}_") for f in folders for n in files[f]) == ident["images"]


def test_split_is_reproducible_and_follows_the_seed(street, dataset, tmp_path):
    again = video_to_dataset(street.path, tmp_path / "again", detections=street.det_path, every=2, progress=False)
    assert _files(again.output) == _files(dataset.output)
    other = video_to_dataset(street.path, tmp_path / "other", detections=street.det_path, every=2, seed=3,
                             test_ratio=0.3, progress=False)
    n = other.counts["tracklets_kept"]
    assert other.counts["query_identities"] == round(0.3 * n)
    assert other.counts["train_identities"] + other.counts["query_identities"] == n


def test_an_existing_empty_output_folder_is_used(street, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    report = video_to_dataset(street.path, out, detections=street.det_path, segments=3, min_images=12,
                              progress=False)
    cams = {int(MARKET.search(p.name).group(2)) for p in (out / "query").iterdir()}
    assert report.output == out and cams == {1, 2, 3}
    assert _folder_listing(tmp_path) == ["empty"]


def test_default_detector_builds_the_set_and_reports_its_privacy_recall(street, tmp_path):
    report = video_to_dataset(street.path, tmp_path / "default", ground_truth=street.gt_path, progress=False)
    record = json.loads(report.json_path.read_text())
    assert record["detector"]["name"] == DEFAULT_DETECTOR and record["counts"]["boxes_detected"] > 0
    assert record["tracking"]["privacy_recall"]["recall"] >= 0.9
    assert report.counts["tracklets_kept"] >= 2


# -- the CLI -----------------------------------------------------------------------------------

def test_cli_synthetic_video_then_dataset(tmp_path, capsys):
    video = tmp_path / "clip.mkv"
    assert main(["make-data", "--synthetic-video", str(video), "--frames", "60", "--people", "4",
                 "--seed", "2"]) == 0
    printed = capsys.readouterr().out
    for name in ("clip.mkv", "clip.gt.txt", "clip.det.txt"):
        assert name in printed
    out = tmp_path / "clip-reid"
    assert main(["make-data", "--from-video", str(video), "--output", str(out), "--detections",
                 str(tmp_path / "clip.det.txt"), "--ground-truth", str(tmp_path / "clip.gt.txt"),
                 "--min-images", "4", "--every", "3"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"purity \d\.\d{3}, coverage \d\.\d{3}", printed)
    assert str(out / "dataset.json") in printed
    record = json.loads((out / "dataset.json").read_text())
    assert record["settings"]["every"] == 3 and record["settings"]["min_images"] == 4
    assert _folder_listing(tmp_path) == ["clip-reid", "clip.det.txt", "clip.gt.txt", "clip.mkv"]


@pytest.mark.parametrize("argv,message", [
    (["--root", "r", "--frames", "3"], "--frames: only with --synthetic-video"),
    (["--synthetic-video", "v.mkv", "--detections", "d.txt"], "--detections: only with --from-video"),
    (["--from-video", "v.mkv", "--ids", "3"], "--ids: only with --root"),
    (["--from-video", "v.mkv"], "--output: required with --from-video"),
])
def test_cli_refuses_flags_of_another_mode(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["make-data", *argv]) == 1
    assert message in capsys.readouterr().err
    assert _folder_listing(tmp_path) == []


@pytest.mark.parametrize("argv", [[], ["--root", "r", "--from-video", "v.mkv"]])
def test_cli_needs_exactly_one_mode(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["make-data", *argv])
    assert exc.value.code == 2
    assert "--root" in capsys.readouterr().err


# -- refusals: each writes nothing -------------------------------------------------------------

@pytest.mark.parametrize("kwargs,message", [
    ({"every": 0}, "--every"), ({"segments": 1}, "--segments"), ({"segments": 10}, "--segments"),
    ({"test_ratio": 0.0}, "--test-ratio"), ({"test_ratio": 1.0}, "--test-ratio"),
    ({"min_height": 0}, "--min-height"),
    ({"min_images": 3}, r"--min-images: must be an integer >= 2 x --segments = 4"),
    ({"segments": 3, "min_images": 5}, "--min-images"),
])
def test_bad_settings_are_refused(street, tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        video_to_dataset(street.path, tmp_path / "out", detections=street.det_path, progress=False, **kwargs)
    assert _folder_listing(tmp_path) == []


def test_an_existing_output_is_never_overwritten(street, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=f"--output: {re.escape(str(out))} already exists and is not an empty folder"):
        video_to_dataset(street.path, out, detections=street.det_path, progress=False)
    assert _folder_listing(out) == ["keep.txt"] and (out / "keep.txt").read_text() == "mine"
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(FileExistsError, match=f"--output: {re.escape(str(a_file))} already exists and is not an empty folder"):
        video_to_dataset(street.path, a_file, detections=street.det_path, progress=False)
    with pytest.raises(ValueError, match=f"--output: .*{re.escape(str(a_file))} is a file, not a folder"):
        video_to_dataset(street.path, a_file / "sub", detections=street.det_path, progress=False)
    assert _folder_listing(tmp_path) == ["file", "out"] and a_file.read_text() == "x"


def test_an_unreadable_video_is_refused(tmp_path):
    fake = tmp_path / "fake.mkv"
    fake.write_text("not a video")
    with pytest.raises(VideoError, match=re.escape(str(fake))):
        video_to_dataset(fake, tmp_path / "out", progress=False)
    with pytest.raises(VideoError, match="missing.mkv: no such video file"):
        video_to_dataset(tmp_path / "missing.mkv", tmp_path / "out", progress=False)
    assert _folder_listing(tmp_path) == ["fake.mkv"]


def test_a_video_without_people_is_refused(tmp_path):
    empty = tmp_path / "wall.mkv"
    wall = np.full((120, 160, 3), 128, dtype=np.uint8)
    wall[40:80] = 90
    with VideoWriter(empty, 160, 120, Fraction(10)) as writer:
        for _ in range(8):
            writer.write(wall)
    with pytest.raises(ValueError, match=rf"no person detected in {re.escape(str(empty))} \(detector motion\+hog.*"
                                         r"pass --detections"):
        video_to_dataset(empty, tmp_path / "out", progress=False)
    assert _folder_listing(tmp_path) == ["wall.mkv"]


def test_detections_of_another_video_are_refused(street, tmp_path):
    elsewhere = tmp_path / "late.det.txt"
    elsewhere.write_text("500,-1,10,10,30,80,0.9,-1,-1,-1\n")  # frame 500 of a 120-frame video
    with pytest.raises(ValueError, match="no person detected .*file:.*none of its boxes falls"):
        video_to_dataset(street.path, tmp_path / "out", detections=elsewhere, progress=False)
    assert _folder_listing(tmp_path) == ["late.det.txt"]


def test_detections_outside_the_frame_are_counted_and_warned(street, tmp_path, caplog):
    det = tmp_path / "det.txt"
    det.write_text(street.det_path.read_text() + "3,-1,900,10,30,80,0.9,-1,-1,-1\n")  # x 900 in a 320-wide frame
    with caplog.at_level("WARNING"):
        report = video_to_dataset(street.path, tmp_path / "out", detections=det, every=2, progress=False)
    assert report.counts["boxes_outside"] == 1 and "1 box(es) lie wholly outside the 320x240 frame" in caplog.text


def test_too_few_tracklets_are_refused(street, tmp_path):
    with pytest.raises(ValueError, match="too few tracklets .*--min-images 500"):
        video_to_dataset(street.path, tmp_path / "out", detections=street.det_path, min_images=500, progress=False)
    with pytest.raises(ValueError, match="--ground-truth: .*holds no track id"):
        video_to_dataset(street.path, tmp_path / "out", detections=street.det_path,
                         ground_truth=street.det_path, progress=False)
    assert _folder_listing(tmp_path) == []


def test_a_run_failing_while_writing_leaves_nothing(street, tmp_path, monkeypatch):
    calls = []

    def failing_jpeg(rgb):
        calls.append(1)
        if len(calls) > 20:
            raise OSError("disk full")
        return b"jpeg"

    monkeypatch.setattr(to_dataset, "_jpeg", failing_jpeg)
    with pytest.raises(OSError, match="disk full"):
        video_to_dataset(street.path, tmp_path / "out", detections=street.det_path, progress=False)
    assert _folder_listing(tmp_path) == []
    assert _folder_listing(Path(street.path).parent) == ["street.det.txt", "street.gt.txt", "street.mkv"]
