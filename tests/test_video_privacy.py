"""anonymize --input VIDEO hides every person: privacy recall measured, tracks fill missed frames,
frames fail closed, and no box is dropped in silence."""
import json
import logging

import numpy as np
import pytest

from cli_run import run_cli as _cli
from torchreid_privacy.inference import load
from torchreid_privacy.publish import PublishChannel
from torchreid_privacy.video.detectors import DEFAULT_DETECTOR
from torchreid_privacy.video.anonymize import (anonymize_video, report_paths, video_detector,
                                               whole_frame_desensitizer)
from torchreid_privacy.video.io import read_frames
from torchreid_privacy.video.mot import read_mot
from torchreid_privacy.video.synthetic import make_synthetic_video
from torchreid_privacy.video.temporal import TemporalSettings

FRAMES, WIDTH, HEIGHT = 20, 320, 240
EXACT = TemporalSettings(max_gap=0, extend=0, margin=0.0)  # the boxes as given, nothing filled or widened
EXACT_FLAGS = ["--max-gap", "0", "--extend", "0", "--box-margin", "0"]
DEFAULT_RECALL_MIN = 0.95  # the goal; measured 1.000 on this 40-frame hard street (README: 0.989-0.999)


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    folder = tmp_path_factory.mktemp("street")
    info = make_synthetic_video(folder / "street.mkv", frames=FRAMES, width=WIDTH, height=HEIGHT, fps=10,
                                people=4, seed=5)
    return {"info": info, "frames": list(read_frames(info.path)), "gt": read_mot(info.gt_path), "dir": folder}


@pytest.fixture(scope="module")
def model(trained_run):
    return load(trained_run)


def _gt_lines(street):
    return [line for line in street["info"].gt_path.read_text().splitlines() if line.strip()]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(street, model, tmp_path, detector, name="out.mkv", **kw):
    kw.setdefault("ground_truth", street["info"].gt_path)
    return anonymize_video(street["info"].path, tmp_path / name, model, detector, PublishChannel("png"),
                           progress=False, **kw)


# ------------------------------------------------------------------------------------ privacy recall

def test_ground_truth_boxes_give_recall_one_and_the_report_files(street, model, tmp_path):
    report = _run(street, model, tmp_path, video_detector(street["info"].gt_path), temporal=EXACT)
    assert report.recall["people"] == street["info"].boxes and report.recall["recall"] == 1.0
    json_path, missed_path = report_paths(tmp_path / "out.mkv")
    saved = json.loads(json_path.read_text())
    assert saved["hidden"] == saved["people"] == street["info"].boxes and saved["missed_boxes"] == []
    assert missed_path.read_text().strip() == ""


def test_missed_people_are_counted_reported_and_written(street, model, tmp_path):
    lines = _gt_lines(street)
    kept = [line for line in lines if line.split(",")[1] != "1"]  # track 1 is never detected
    det = _write(tmp_path / "det.txt", kept)
    report = _run(street, model, tmp_path, video_detector(det), temporal=EXACT)
    missed = len(lines) - len(kept)
    assert missed > 0 and report.recall["missed"] == missed
    assert report.recall["recall"] == pytest.approx((len(lines) - missed) / len(lines))
    assert report.recall["worst_frame"]["hidden"] < report.recall["worst_frame"]["people"]
    written = read_mot(report.missed_path, evaluation=False)
    assert sum(len(b) for b in written.values()) == missed and all((b[:, 5] == 1).all() for b in written.values())


def test_temporal_filling_covers_the_frames_the_detector_missed(street, model, tmp_path):
    lines = _gt_lines(street)
    gappy = [line for line in lines if int(line.split(",")[0]) % 4 != 0]  # every 4th frame missed
    det = _write(tmp_path / "gappy.txt", gappy)
    without = _run(street, model, tmp_path, video_detector(det), name="a.mkv", temporal=EXACT)
    filled = _run(street, model, tmp_path, video_detector(det), name="b.mkv",
                  temporal=TemporalSettings(max_gap=2, extend=1, margin=0.0))
    assert without.recall["recall"] < 0.9 and filled.recall["recall"] > 0.97
    assert filled.counts["interpolated"] > 0 and filled.counts["extended"] > 0


def test_default_detector_hides_the_people_of_the_hard_street(trained_run, tmp_path):
    """The default detector (no download) through to the output video, on the hard street at a camera's size."""
    made = make_synthetic_video(tmp_path / "hard.mkv", frames=40, width=768, height=576, fps=10, people=8, seed=1,
                                style="hard")
    out = tmp_path / "default.mkv"
    rc, stdout, err = _cli(["anonymize", "--input", str(made.path), "--output", str(out),
                            "--checkpoint", trained_run, "--ground-truth", str(made.gt_path)])
    assert rc == 0, err
    assert len(list(read_frames(out))) == 40
    saved = json.loads(report_paths(out)[0].read_text())
    assert saved["detector"]["name"] == DEFAULT_DETECTOR and saved["people"] == made.boxes
    assert saved["recall"] >= DEFAULT_RECALL_MIN, saved["missed_boxes"][:5]
    assert f"privacy recall {saved['recall']:.3f}" in stdout


# ------------------------------------------------------------------------------------ fail closed

class _Failing:
    """A detector that raises on some frames and returns a NaN box on others."""

    name, has_tracks = "failing", False

    def __init__(self, raise_on, nan_on):
        self.raise_on, self.nan_on = set(raise_on), set(nan_on)

    def settings(self):
        return {}

    def __call__(self, index, rgb):
        if index in self.raise_on:
            raise RuntimeError("boom")
        if index in self.nan_on:
            return np.array([[np.nan, 0, 10, 10, 0.9, -1]])
        return np.zeros((0, 6))


def test_a_frame_whose_detector_fails_is_desensitized_whole(street, model, tmp_path, caplog):
    a, b = [f for f in sorted(street["gt"]) if len(street["gt"][f])][2:4]  # frames with people on them
    with caplog.at_level(logging.WARNING):
        report = _run(street, model, tmp_path, _Failing(raise_on=[a], nan_on=[b]), temporal=EXACT)
    frames = list(read_frames(tmp_path / "out.mkv"))
    whole = whole_frame_desensitizer(model)
    for f in range(FRAMES):
        if f in (a, b):
            assert np.array_equal(frames[f], whole(street["frames"][f])), f"frame {f} was not desensitized whole"
            for x1, y1, x2, y2 in street["gt"][f][:, :4].astype(int):
                assert np.abs(frames[f][y1:y2, x1:x2].astype(int) - street["frames"][f][y1:y2, x1:x2]).mean() > 8
        else:
            assert np.array_equal(frames[f], street["frames"][f]), f"frame {f} changed without a box"
    assert report.counts["detector_errors"] == 2 and report.frames_whole == 2
    assert report.recall["hidden"] == len(street["gt"][a]) + len(street["gt"][b]) > 0
    assert "the detector failed on 2 frame(s)" in caplog.text


def test_whole_frame_m_works_at_the_model_scale_on_any_frame_size(model):
    whole = whole_frame_desensitizer(model)
    rng = np.random.default_rng(0)
    for h, w in ((1, 1), (7, 300), (240, 320), (577, 769)):
        rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        out = whole(rgb)
        assert out.shape == rgb.shape and out.dtype == np.uint8
    big = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    assert np.abs(whole(big).astype(int) - big).mean() > 40  # noise-like detail is gone


def test_fail_closed_desensitizes_frames_whose_motion_has_no_box(street, model, tmp_path):
    report = _run(street, model, tmp_path, _Failing([], []), temporal=EXACT, fail_closed=True)
    with_people = [f for f, b in street["gt"].items() if len(b)]
    assert report.frames_whole >= 0.8 * len(with_people)
    assert report.recall["recall"] >= 0.8  # the first frames teach the background model


# ------------------------------------------------------------------------------------ no silent drop

def test_nan_in_detections_is_refused_naming_file_and_line(street, trained_run, tmp_path, caplog):
    lines = _gt_lines(street)
    bad = _write(tmp_path / "det.txt", lines[:3] + ["5,-1,nan,10,20,40,0.9,-1,-1,-1"] + lines[3:])
    rc, _, err = _cli(["anonymize", "--input", str(street["info"].path), "--output", str(tmp_path / "o.mkv"),
                       "--checkpoint", trained_run, "--detections", str(bad)])
    assert rc == 1 and f"--detections: {bad}:4:" in err and not (tmp_path / "o.mkv").exists()
    with caplog.at_level(logging.WARNING):
        rc, out, err = _cli(["anonymize", "--input", str(street["info"].path), "--output", str(tmp_path / "o.mkv"),
                             "--checkpoint", trained_run, "--detections", str(bad), "--skip-bad-boxes"])
    assert rc == 0, err
    assert f"{bad}: skipped 1 bad box line(s)" in caplog.text and f"{bad}:4:" in caplog.text


def test_boxes_outside_the_frame_are_clipped_or_counted(street, model, tmp_path, caplog):
    lines = _gt_lines(street)
    moved = []
    for line in lines:
        f, t, x, y, w, h, *rest = line.split(",")
        moved.append(",".join([f, t, str(float(x) - 1000), y, w, h, *rest]))  # wholly outside
    partly = ["1,-1,-20,-20,60,80,0.9,-1,-1,-1"]
    det = _write(tmp_path / "det.txt", moved + partly)
    with caplog.at_level(logging.WARNING):
        report = _run(street, model, tmp_path, video_detector(det), temporal=EXACT)
    assert report.counts["boxes_outside"] == len(moved) and report.boxes == 1  # the partly outside one, clipped
    assert f"{len(moved)} box(es) lie wholly outside" in caplog.text
    first = list(read_frames(tmp_path / "out.mkv"))[0]
    assert np.abs(first[:60, :40].astype(int) - street["frames"][0][:60, :40]).mean() > 8
    assert f"{len(moved)} wholly outside" in "\n".join(report.lines())


def test_static_people_and_ignored_rows_are_anonymized(street, model, tmp_path):
    """MOT17 marks static people class 7 and some rows flag 0: all are people whose pixels must go."""
    rows = []
    for k, line in enumerate(_gt_lines(street)):
        f, t, x, y, w, h, flag, cls, vis = line.split(",")
        rows.append(",".join([f, t, x, y, w, h, "0" if k % 3 == 0 else flag, "7" if k % 3 == 1 else cls, vis]))
    gt = _write(tmp_path / "gt.txt", rows)
    report = _run(street, model, tmp_path, video_detector(gt), temporal=EXACT, ground_truth=gt)
    assert report.boxes == street["info"].boxes and report.recall["recall"] == 1.0


def test_a_video_with_no_frame_is_refused_and_leaves_nothing(street, model, tmp_path):
    empty = tmp_path / "empty.mkv"
    empty.write_bytes(street["info"].path.read_bytes()[:1000])  # a cut file: the header, no frame
    out = tmp_path / "o.mkv"
    with pytest.raises(ValueError, match="decoded no frame"):
        anonymize_video(empty, out, model, video_detector(street["info"].gt_path), PublishChannel("png"),
                        progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty.mkv"]


def test_detections_past_the_video_warn_with_both_counts(street, model, tmp_path, caplog):
    det = _write(tmp_path / "det.txt", _gt_lines(street) + [f"{FRAMES + 30},-1,10,10,20,40,0.9,-1,-1,-1"])
    with caplog.at_level(logging.WARNING):
        _run(street, model, tmp_path, video_detector(det), temporal=EXACT)
    assert f"names {FRAMES + 30} frame(s) but the video decoded {FRAMES}" in caplog.text


# ------------------------------------------------------------------------------------ each detector kind, end to end

def test_a_torchvision_detector_from_a_weights_file_runs_the_whole_path(street, trained_run, tmp_path):
    torch = pytest.importorskip("torch")
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model("ssdlite320_mobilenet_v3_large", weights=None, weights_backbone=None,
                                       num_classes=91)
    weights = tmp_path / "ssdlite.pt"
    torch.save(net.state_dict(), weights)
    out = tmp_path / "tv.mkv"
    rc, stdout, err = _cli(["anonymize", "--input", str(street["info"].path), "--output", str(out),
                            "--checkpoint", trained_run, "--detector", "torchvision:ssdlite320_mobilenet_v3_large",
                            "--detector-weights", str(weights), "--detector-threshold", "0.0",
                            "--ground-truth", str(street["info"].gt_path)])
    assert rc == 0, err
    assert "people found by torchvision:ssdlite320_mobilenet_v3_large" in stdout
    saved = json.loads(report_paths(out)[0].read_text())
    assert saved["detector"]["name"] == "torchvision:ssdlite320_mobilenet_v3_large" and saved["people"] > 0
    assert len(list(read_frames(out))) == FRAMES


def test_an_onnx_yolo_detector_runs_the_whole_path_and_its_box_is_replaced(street, trained_run, tmp_path):
    pytest.importorskip("onnxruntime")
    from test_video_detectors import _yolo_graph

    # one person box the stub graph always outputs: x 40..120, y 50..210 of the 320x240 frame, letterboxed
    # into 64x64 (scale 0.2, 8 px of grey on top)
    box = np.array([40, 50, 120, 210]) * 0.2 + [0, 8, 0, 8]
    row = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2, box[2] - box[0], box[3] - box[1], 0.9, 0.05]
    graph = _yolo_graph(tmp_path / "yolo.onnx", [row] + [[0, 0, 0, 0, 0, 0]] * 7)  # YOLO's 1 x (4+2) x 8
    out = tmp_path / "yolo.mkv"
    rc, stdout, err = _cli(["anonymize", "--input", str(street["info"].path), "--output", str(out),
                            "--checkpoint", trained_run, "--detector", f"onnx:{graph}", *EXACT_FLAGS])
    assert rc == 0, err
    frames = list(read_frames(out))
    for f in (0, FRAMES - 1):
        inside = np.abs(frames[f][50:210, 40:120].astype(int) - street["frames"][f][50:210, 40:120]).mean()
        outside = np.abs(frames[f][:, 200:].astype(int) - street["frames"][f][:, 200:]).max()
        assert inside > 8 and outside == 0, (f, inside, outside)


@pytest.mark.parametrize("output, crops", [("cr/a.mkv", "cr"), ("cr/sub/a.mkv", "cr"), ("a.mkv", "a.mkv/crops")])
def test_a_crops_folder_holding_the_output_is_refused_before_any_work(street, trained_run, tmp_path, output, crops):
    rc, _, err = _cli(["anonymize", "--input", str(street["info"].path), "--output", str(tmp_path / output),
                       "--checkpoint", trained_run, "--crops", str(tmp_path / crops)])
    assert rc == 1 and "--crops: " in err and "apart from the video" in err, err
    assert list(tmp_path.iterdir()) == []


def test_bench_video_scores_the_plan_as_anonymize_hides_it(tmp_path):
    """bench video's rows: recall of the first pass's boxes (what the second pass replaces), and their price."""
    from torchreid_privacy.bench import video as bench_video

    out = tmp_path / "video.json"
    assert bench_video.main(["--width", "320", "--height", "240", "--frames", "16", "--people", "4",
                             "--detectors", "file:{det}", "--output", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    filled, none = rows  # the temporal defaults, then none
    assert none["temporal"] == {"max_gap": 0, "extend": 0, "margin": 0.0}
    assert filled["recall"] >= none["recall"] and filled["people"] == none["people"] > 0
    assert 0 < none["pixels_anonymized"] < filled["pixels_anonymized"] < 1
