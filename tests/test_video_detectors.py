"""Pedestrian detectors (``torchreid_privacy.video.detectors``): the registry-driven output contract,
each detector's behaviour on frames where the answer is known, and every refusal naming its flag.

A newly registered detector is run by ``test_contract`` automatically; it fails until an argument
for it is added to ``SPECS`` below.
"""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from torchreid_privacy.registry import ALL_REGISTRIES, DETECTORS
from torchreid_privacy.video.detectors import (DEFAULT_DETECTOR, Detector, FileDetections, HogDetector,
                                               MotionDetector, UnionDetector, box_iou, build_detector,
                                               letterbox, merge_boxes, parse_spec, person_boxes)

SMALL_TORCHVISION = "ssdlite320_mobilenet_v3_large"  # the fastest torchvision detector to build and run


# ------------------------------------------------------------------------------------ fixtures

def _textured(h, w, seed):
    """Smooth random texture: something for HOG gradients and background subtraction to see."""
    import cv2

    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1, 3), dtype=np.uint8)
    return cv2.resize(noise, (w, h), interpolation=cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def det_txt(tmp_path_factory):
    """A det.txt whose frame 1 has a box inside, one reaching outside and one wholly outside 320x240."""
    path = tmp_path_factory.mktemp("mot") / "det.txt"
    path.write_text("1,-1,10,20,30,60,0.9,-1,-1,-1\n"
                    "1,-1,300,200,50,80,0.8,-1,-1,-1\n"
                    "1,-1,400,300,20,40,0.7,-1,-1,-1\n"
                    "3,-1,50,50,20,40,0.6,-1,-1,-1\n")
    return str(path)


def _yolo_graph(path, rows, layout="channels_first", size=(64, 64), rank=3):
    """An ONNX file standing in for a YOLO export: input ``images`` 1x3xHxW, output the constant ``rows``.

    ``rows``: (N, 4 + classes) cx, cy, w, h (input pixels), class scores. The output depends on
    the input (plus 0 * its mean) so that onnxruntime runs a real graph on it.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rows = np.asarray(rows, dtype=np.float32)
    out = rows.T[None] if layout == "channels_first" else rows[None]
    if rank == 2:
        out = out[0]
    nodes = [
        helper.make_node("Constant", [], ["rows"], value=numpy_helper.from_array(out, "rows")),
        helper.make_node("ReduceMean", ["images"], ["mean"], keepdims=0),
        helper.make_node("Constant", [], ["zero"], value=numpy_helper.from_array(np.zeros((), np.float32), "zero")),
        helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
        helper.make_node("Add", ["rows", "nothing"], ["output0"]),
    ]
    graph = helper.make_graph(nodes, "yolo_stub",
                              [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size[1], size[0]])],
                              [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(out.shape))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return str(path)


# a person box in a 100x50 frame and where the 64x64 letterbox puts it (scale 0.64, 16 px grey on top)
FRAME_BOX = np.array([10.0, 5.0, 40.0, 45.0])
INPUT_BOX = FRAME_BOX * 0.64 + [0, 16, 0, 16]


def _cxcywh(xyxy):
    x1, y1, x2, y2 = xyxy
    return [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]


YOLO_ROWS = [
    _cxcywh(INPUT_BOX) + [0.9, 0.05],                      # the person
    _cxcywh(INPUT_BOX + [1, 1, 1, 1]) + [0.8, 0.05],       # the same person again: suppressed by NMS
    _cxcywh([40, 20, 60, 40]) + [0.1, 0.95],               # another class: not a person
    [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0],
]


@pytest.fixture(scope="module")
def yolo_onnx(tmp_path_factory):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return _yolo_graph(tmp_path_factory.mktemp("onnx") / "yolo.onnx", YOLO_ROWS)


@pytest.fixture(scope="module")
def torchvision_weights(tmp_path_factory):
    """Random weights of a small torchvision detector, saved as ``--detector-weights`` expects."""
    import torch
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.get_model(SMALL_TORCHVISION, weights=None, weights_backbone=None, num_classes=91)
    path = tmp_path_factory.mktemp("tv") / "ssdlite.pt"
    torch.save(net.state_dict(), path)
    return str(path)


# name -> (spec, build_detector keywords), from the fixtures named in NEEDS; a registered detector
# missing here fails test_contract
NEEDS = {"file": ("det_txt",), "onnx": ("yolo_onnx",), "torchvision": ("torchvision_weights",)}
SPECS = {
    "hog": lambda fx: ("hog", {}),
    "motion": lambda fx: ("motion", {}),
    "file": lambda fx: (f"file:{fx['det_txt']}", {}),
    "onnx": lambda fx: (f"onnx:{fx['yolo_onnx']}", {}),
    "torchvision": lambda fx: (f"torchvision:{SMALL_TORCHVISION}", {"weights": fx["torchvision_weights"],
                                                                     "threshold": 0.0}),
}


def _check_contract(boxes, width, height):
    assert isinstance(boxes, np.ndarray) and boxes.dtype == np.float64
    assert boxes.ndim == 2 and boxes.shape[1] == 6, boxes.shape
    assert np.isfinite(boxes).all()
    x1, y1, x2, y2, score, track = boxes.T
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= width).all() and (y2 <= height).all()
    assert (x2 > x1).all() and (y2 > y1).all()
    assert ((score >= 0) & (score <= 1)).all()
    assert ((track == -1) | ((track >= 0) & (track == np.round(track)))).all()


@pytest.mark.parametrize("name", DETECTORS.names())
def test_contract(name, request):
    """Every registered detector: (N, 6) finite boxes inside the frame on a 240x320 and a 1x1 frame."""
    if name not in SPECS:
        pytest.fail(f"detector '{name}' is registered but has no test argument: add it to SPECS in "
                    f"{os.path.basename(__file__)} (with a fixture for what its ARG needs)")
    spec, kwargs = SPECS[name]({k: request.getfixturevalue(k) for k in NEEDS.get(name, ())})
    detector = build_detector(spec, **kwargs)
    assert isinstance(detector, Detector)
    assert isinstance(detector.name, str) and detector.name
    json.dumps(detector.settings())
    frames = [_textured(240, 320, seed) for seed in range(3)]
    frames[2][60:180, 100:150] = _textured(120, 50, 9)  # something moved in
    if hasattr(detector, "prime"):
        detector.prime(frames[:2])
    for index, frame in enumerate(frames):
        _check_contract(detector(index, frame), 320, 240)
    _check_contract(detector(3, np.zeros((1, 1, 3), np.uint8)), 1, 1)


def test_detectors_registry_is_listed_and_builtin():
    assert ALL_REGISTRIES["detectors"] is DETECTORS
    assert {"hog", "motion", "file", "onnx", "torchvision"} <= set(DETECTORS.names())
    assert DEFAULT_DETECTOR == "motion+hog"


# ------------------------------------------------------------------------------------- the spec

def test_spec_grammar():
    assert parse_spec("motion+hog") == [("motion", None), ("hog", None)]
    assert parse_spec("hog+file:/p/det.txt") == [("hog", None), ("file", "/p/det.txt")]
    assert parse_spec("torchvision:fasterrcnn_resnet50_fpn_v2") == [("torchvision", "fasterrcnn_resnet50_fpn_v2")]
    # a '+' inside a path stays in the path; one before a registered name starts a new part
    assert parse_spec("file:/p/a+b.txt+motion") == [("file", "/p/a+b.txt"), ("motion", None)]
    assert parse_spec("onnx:C:/models/yolo.onnx") == [("onnx", "C:/models/yolo.onnx")]


@pytest.mark.parametrize("spec, match", [
    ("hgo", r"--detector: unknown detector 'hgo' \(registered: file, hog, motion, onnx, torchvision"),
    ("motion+hgo", "--detector: unknown detector 'hgo'.*did you mean 'hog'"),
    ("", "--detector: empty detector spec"),
    ("hog+", "--detector: 'hog\\+' has an empty part"),
    ("+hog", "--detector: '\\+hog' has an empty part"),
    ("file", "--detector: 'file' needs an argument: file:det.txt"),
    ("file:", "--detector: 'file' needs an argument"),
    ("onnx", "--detector: 'onnx' needs an argument"),
    ("torchvision", "--detector: 'torchvision' needs an argument"),
    ("hog:3", "--detector: 'hog' takes no argument, got 'hog:3'"),
    ("motion:x", "--detector: 'motion' takes no argument"),
    ("hog+hog", "--detector: 'hog\\+hog' names hog twice"),
    ("torchvision:no_such_net", "--detector: torchvision has no detection model 'no_such_net'.*fasterrcnn"),
])
def test_bad_spec_is_refused_naming_the_flag(spec, match):
    with pytest.raises(ValueError, match=match) as info:
        build_detector(spec)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("kwargs, match", [
    ({"threshold": 1.5}, r"--detector-threshold: .* in \[0, 1\], got 1.5"),
    ({"threshold": -0.1}, "--detector-threshold"),
    ({"threshold": float("nan")}, "--detector-threshold"),
    ({"weights": "w.pt"}, "--detector-weights: no detector of 'motion\\+hog' takes it \\(only torchvision\\)"),
    ({"hog": {"min_hieght": 30}}, "--detector: 'hog' has no option min_hieght .*min_height"),
    ({"hog": {"min_score": 0.3}}, "--detector: 'hog' has no option min_score"),
    ({"onnx": {"classes": 2}}, "--detector: options given for 'onnx', which 'motion\\+hog' does not name"),
    ({"motion": 0.5}, "--detector: the options of 'motion' must be a dict"),
    ({"motion": {"scale": 0}}, "--detector: motion option scale must be in \\(0, 1\\]"),
    ({"hog": {"win_stride": 12}}, "--detector: hog option win_stride must be a multiple of 8"),
])
def test_bad_settings_are_refused_naming_the_flag(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_detector("motion+hog", **kwargs)


def test_threshold_on_a_spec_without_one_is_refused(det_txt):
    with pytest.raises(ValueError, match="--detector-threshold: no detector of 'file:.*' takes it"):
        build_detector(f"file:{det_txt}", threshold=0.5)
    assert build_detector(f"file:{det_txt}+hog", threshold=0.6).parts[1].min_score == pytest.approx(0.6)


def test_options_reach_their_detector_and_settings_are_json():
    det = build_detector("motion+hog", hog={"min_height": 60}, motion={"learning_rate": 0.004}, threshold=0.7)
    assert isinstance(det, UnionDetector) and det.name == "motion+hog"
    motion, hog = det.parts
    assert hog.min_height == pytest.approx(60) and hog.min_score == pytest.approx(0.7)
    assert motion.learning_rate == pytest.approx(0.004) and motion.min_score == pytest.approx(0.7)
    settings = json.loads(json.dumps(det.settings()))
    assert settings["parts"]["hog"]["min_height"] == pytest.approx(60)
    assert build_detector("hog").name == "hog"  # one part: the detector itself, not a union of one


def test_old_imports_keep_working(det_txt):
    from torchreid_privacy.video.detect import Detector as OldDetector
    from torchreid_privacy.video.detect import FileDetections as OldFile
    from torchreid_privacy.video.detect import HogDetector as OldHog
    from torchreid_privacy.video.detect import make_detector

    assert OldDetector is Detector and OldFile is FileDetections and OldHog is HogDetector
    assert isinstance(make_detector(det_txt), FileDetections)
    hog = make_detector(None, min_score=0.6, upscale=1.5)
    assert isinstance(hog, HogDetector) and hog.upscale == pytest.approx(1.5)


# ------------------------------------------------------------------------------------------ hog

HOG_SIZES_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    from torchreid_privacy.video.detectors import HogDetector
    sizes = json.loads(sys.argv[1])
    out = {}
    for min_height in (None, 40):
        hog = HogDetector(min_height=min_height, min_score=0.05)
        for w, h in sizes:
            frame = np.random.default_rng(w * 1000 + h).integers(0, 256, (h, w, 3), dtype=np.uint8)
            boxes = hog(0, frame)
            assert boxes.shape[1:] == (6,) and np.isfinite(boxes).all()
            assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all() and (boxes[:, :2] >= 0).all()
            out[f"{min_height}:{w}x{h}"] = len(boxes)
    print(json.dumps(out))
""")


def test_hog_never_hands_opencv_a_frame_smaller_than_its_window():
    """OpenCV aborts (``free(): invalid next size``) or segfaults on images smaller than the 64x128
    window; probed in a subprocess, so a native crash fails this test instead of killing pytest.
    Sizes around the window (padding included) and frames the pyramid upscales to about it."""
    sizes = [(1, 1), (16, 16), (200, 10), (10, 200), (63, 127), (64, 128), (65, 129), (63, 128), (64, 127),
             (66, 130), (72, 136), (80, 144), (20, 40), (18, 36), (19, 39), (21, 41), (100, 30), (300, 128)]
    run = subprocess.run([sys.executable, "-c", HOG_SIZES_SCRIPT, json.dumps(sizes)], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, f"HOG crashed (rc {run.returncode}): {run.stderr[-2000:]}"
    found = json.loads(run.stdout)
    # too small for a window at every level: no box, no call into OpenCV
    for key in ("None:1x1", "None:16x16", "None:200x10", "None:63x127", "40:1x1", "40:16x16", "40:200x10"):
        assert found[key] == 0, key


def test_hog_pyramid_levels():
    hog = HogDetector(min_height=40, pyramid_scale=1.2)
    levels = hog.levels(768, 576)
    assert levels[0] >= 128 / 40 and levels[0] / 1.2 < 128 / 40  # reaches 40 px boxes, not far beyond
    assert any(abs(s - 1.0) < 1e-9 for s in levels)  # anchored at the frame itself
    assert 576 * levels[-1] >= 128 and 576 * levels[-1] / 1.2 < 128  # down to the largest person
    assert max(HogDetector(min_height=None).levels(768, 576)) == pytest.approx(1.0)
    assert HogDetector(min_height=None).levels(63, 127) == [] and HogDetector(min_height=None).levels(64, 128) == [1.0]
    assert HogDetector(min_height=40).levels(17, 35) == [] and len(HogDetector(min_height=40).levels(20, 40)) == 1


def test_hog_pyramid_finds_a_50px_person_that_upscale_1_misses():
    """On the generated hard street, the far walker (~55 px tall) is found with ``min_height=40``;
    the frame at upscale 1 (no level finer than the 128-px window) has no box on them."""
    from torchreid_privacy.video.synthetic import HardStreet

    street = HardStreet(frames=150, width=768, height=576)
    pyramid, plain = HogDetector(min_height=40), HogDetector(min_height=None)
    found, checked = 0, 0
    for t in (30, 50, 60):
        frame = street.render(t)
        small = [(b, v) for b, v in zip(frame.boxes, frame.visibility) if 40 <= b[3] - b[1] < 64 and v > 0.7]
        assert small, f"frame {t} of the hard street has no visible 40-64 px person any more"
        box = min(small, key=lambda bv: bv[0][3] - bv[0][1])[0][:4]
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        x0, y0 = max(0, cx - 100), max(0, cy - 100)
        crop = np.ascontiguousarray(frame.image[y0:y0 + 200, x0:x0 + 200])
        person = (box - [x0, y0, x0, y0])[None]
        with_pyramid, without = pyramid(t, crop), plain(t, crop)
        checked += 1
        found += int(len(with_pyramid) > 0 and box_iou(person, with_pyramid).max() >= 0.4)
        assert not len(without) or box_iou(person, without).max() < 0.2
    assert found >= 2, f"the pyramid found the small person in {found} of {checked} frames"


# --------------------------------------------------------------------------------------- motion

def _walk(frames=40, stop=15, speed=8, size=(36, 80), seed=0, start_x=-30, noise=2.0):
    """A textured person walking right over a textured street, standing still from frame ``stop``."""
    rng = np.random.default_rng(seed)
    bg = _textured(240, 320, seed)
    person = _textured(size[1], size[0], seed + 100) // 2 + 100
    out, boxes = [], []
    for t in range(frames):
        x = start_x + speed * min(t, stop)
        img = bg.astype(np.float64)
        x1, x2 = max(0, x), min(320, x + size[0])
        if x2 > x1:
            img[120:120 + size[1], x1:x2] = person[:, x1 - x:x2 - x]
        img += rng.normal(0, noise, img.shape)
        out.append(np.clip(img, 0, 255).astype(np.uint8))
        boxes.append([x1, 120, x2, 120 + size[1]])
    return out, np.asarray(boxes, dtype=np.float64)


def test_motion_follows_a_walker_and_keeps_them_after_they_stop():
    frames, truth = _walk(frames=40, stop=15)
    motion = build_detector("motion")
    best = []
    for t, frame in enumerate(frames):
        boxes = motion(t, frame)
        _check_contract(boxes, 320, 240)
        best.append(box_iou(truth[t][None], boxes).max() if len(boxes) else 0.0)
    best = np.asarray(best)
    assert (best[6:15] >= 0.5).all(), best[:15].round(2)  # walking, wholly inside the frame
    assert (best[15:40] >= 0.5).sum() >= 20, best[15:].round(2)  # standing still: still foreground


def test_motion_splits_people_walking_side_by_side():
    """Two people side by side make one blob 0.9x as wide as tall: two boxes, one per person."""
    def last_boxes(size):
        frames, truth = _walk(frames=16, stop=16, speed=10, size=size, start_x=-80, seed=1)
        motion = build_detector("motion", motion={"pad": 0.0})
        for t, frame in enumerate(frames):
            boxes = motion(t, frame)
        return boxes, truth[-1]

    boxes, (x1, y1, x2, y2) = last_boxes((72, 80))
    two = np.array([[x1, y1, x1 + 36, y2], [x1 + 36, y1, x2, y2]], dtype=np.float64)
    assert len(boxes) == 2, boxes
    assert (box_iou(two, boxes).max(axis=1) >= 0.5).all(), boxes
    boxes, one = last_boxes((36, 80))
    assert len(boxes) == 1 and box_iou(one[None], boxes).max() >= 0.5, boxes


def test_motion_prime_keeps_people_of_the_first_frame_foreground():
    """A person standing in frame 0 who walks away: unprimed, frame 0 is the background (no box);
    primed from a median of frames across the video, they are boxed in frame 0."""
    frames, truth = _walk(frames=30, stop=30, speed=9, start_x=20, seed=2)
    primed, unprimed = MotionDetector(), MotionDetector()
    primed.prime(frames[::3])
    boxes = primed(0, frames[0])
    assert len(boxes) and box_iou(truth[0][None], boxes).max() >= 0.5
    assert len(unprimed(0, frames[0])) == 0


def test_motion_restarts_on_a_new_frame_size():
    motion = MotionDetector()
    motion(0, _textured(240, 320, 0))
    motion(1, _textured(120, 160, 0))
    assert motion.resets == 1


# ---------------------------------------------------------------------------------------- union

class _Fixed:
    """A stub detector returning the same boxes on every frame."""

    def __init__(self, name, boxes, has_tracks=False):
        self.name, self.has_tracks, self.primed = name, has_tracks, None
        self.boxes = np.asarray(boxes, dtype=np.float64)

    def settings(self):
        return {}

    def prime(self, frames):
        self.primed = len(frames)

    def __call__(self, frame_index, rgb):
        return self.boxes.reshape(-1, 6).copy()


def test_union_merges_overlaps_into_the_enclosing_box_and_keeps_the_rest():
    a = _Fixed("a", [[10, 10, 50, 110, 0.6, -1], [200, 10, 240, 110, 0.9, -1]])
    b = _Fixed("b", [[14, 4, 54, 104, 0.8, 7], [100, 100, 120, 140, 0.5, 8]], has_tracks=True)
    union = UnionDetector([a, b], name="a+b")
    out = union(0, np.zeros((240, 320, 3), np.uint8))
    assert len(out) == 3
    merged = out[np.argmin(out[:, 0])]
    np.testing.assert_allclose(merged, [10, 4, 54, 110, 0.8, 7])  # enclosing box, max score, the track id
    assert any(np.allclose(r, [200, 10, 240, 110, 0.9, -1]) for r in out)
    assert any(np.allclose(r, [100, 100, 120, 140, 0.5, 8]) for r in out)
    assert not union.has_tracks  # a's boxes come without ids
    union.prime([np.zeros((4, 4, 3), np.uint8)] * 3)
    assert a.primed == 3 and b.primed == 3


def test_union_matches_one_box_per_detector_and_respects_the_iou():
    # two people b separates, overlapping a's one wide box: only the better match merges
    wide = [[0, 0, 100, 100, 0.5, -1]]
    two = [[0, 0, 80, 100, 0.7, -1], [60, 0, 100, 100, 0.6, -1]]
    out = merge_boxes([np.asarray(wide), np.asarray(two)], iou=0.5)
    assert len(out) == 2
    assert not len(merge_boxes([np.zeros((0, 6)), np.zeros((0, 6))]))
    apart = merge_boxes([np.asarray([[0, 0, 10, 10, 0.5, -1]]), np.asarray([[5, 0, 15, 10, 0.5, -1]])], iou=0.5)
    assert len(apart) == 2  # IoU 1/3 < 0.5


def test_union_built_from_a_spec(det_txt):
    det = build_detector(f"hog+file:{det_txt}")
    assert isinstance(det, UnionDetector) and det.name == f"hog+file:{det_txt}"
    out = det(0, np.zeros((240, 320, 3), np.uint8))
    assert len(out) == 2 and det.outside == 1


# ----------------------------------------------------------------------------------------- file

def test_file_boxes_are_clipped_and_outside_ones_counted(det_txt, tmp_path):
    det = build_detector(f"file:{det_txt}")
    assert isinstance(det, FileDetections) and det.path == det_txt and not det.has_tracks and det.last_frame == 2
    frame = np.zeros((240, 320, 3), np.uint8)
    out = det(0, frame)
    np.testing.assert_allclose(out[:, :4], [[10, 20, 40, 80], [300, 200, 320, 240]])
    assert det.outside == 1 and det.outside_frames == [0]
    assert len(det(1, frame)) == 0 and len(det(2, frame)) == 1
    assert det.outside == 1

    gt = tmp_path / "gt.txt"
    gt.write_text("1,4,10,20,30,60,1,1,1\n2,4,12,20,30,60,0,7,1\n")
    tracked = build_detector(f"file:{gt}")
    assert tracked.has_tracks and tracked(1, frame)[0, 5] == 4  # a flag-0 static person is still a person

    empty = tmp_path / "empty.txt"
    empty.write_text("# no boxes\n")
    with pytest.raises(ValueError, match="holds no box"):
        build_detector(f"file:{empty}")


def test_file_bad_rows_refused_or_skipped(tmp_path):
    from torchreid_privacy.video.mot import MotFormatError

    bad = tmp_path / "bad.txt"
    bad.write_text("1,-1,10,20,30,60,0.9,-1,-1,-1\n2,-1,nan,20,30,60,0.9,-1,-1,-1\n")
    with pytest.raises(MotFormatError, match=f"{bad.name}:2"):
        build_detector(f"file:{bad}")
    det = build_detector(f"file:{bad}", skip_bad_boxes=True)
    assert len(det.skipped) == 1 and sorted(det.boxes) == [0]


# ---------------------------------------------------------------------------------- torchvision

def test_person_boxes_keep_the_person_class_above_the_threshold_only():
    boxes = np.array([[0, 0, 10, 20], [5, 5, 50, 60], [-5, 10, 400, 30], [1, 1, 2, 2]], dtype=np.float64)
    out = person_boxes(boxes, labels=np.array([1, 3, 1, 1]), scores=np.array([0.9, 0.99, 0.6, 0.2]),
                       threshold=0.5, width=320, height=240)
    np.testing.assert_allclose(out, [[0, 0, 10, 20, 0.9, -1], [0, 10, 320, 30, 0.6, -1]])


def test_torchvision_detector_from_a_weights_file(torchvision_weights, monkeypatch):
    import torch

    det = build_detector(f"torchvision:{SMALL_TORCHVISION}", weights=torchvision_weights, threshold=0.0)
    assert det.name == f"torchvision:{SMALL_TORCHVISION}" and not det.net.training
    frame = _textured(240, 320, 5)
    out = det(0, frame)
    _check_contract(out, 320, 240)
    # the model's raw output, person (1) and other classes: only the people come back, in frame pixels
    fake = {"boxes": torch.tensor([[10.0, 20.0, 50.0, 120.0], [0.0, 0.0, 30.0, 30.0], [300.0, 200.0, 400.0, 300.0]]),
            "labels": torch.tensor([1, 62, 1]), "scores": torch.tensor([0.9, 0.95, 0.7])}
    monkeypatch.setattr(det, "net", lambda images: [fake])
    np.testing.assert_allclose(det(1, frame), [[10, 20, 50, 120, 0.9, -1], [300, 200, 320, 240, 0.7, -1]])


def test_torchvision_bad_weights_are_refused_naming_the_flag(tmp_path, torchvision_weights):
    import torch

    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    other = tmp_path / "other.pt"
    torch.save({"conv.weight": torch.zeros(3, 3)}, other)
    for path, match in ((garbage, "not a state dict saved with torch.save"), (tmp_path / "missing.pt", "no such file"),
                        (other, f"not weights of torchvision's {SMALL_TORCHVISION}")):
        with pytest.raises(ValueError, match=f"--detector-weights: {path}: {match}") as info:
            build_detector(f"torchvision:{SMALL_TORCHVISION}", weights=str(path))
        assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="--detector-weights: one weights file for several detectors"):
        build_detector(f"torchvision:{SMALL_TORCHVISION}+torchvision:fcos_resnet50_fpn", weights=torchvision_weights)


def test_torchvision_without_weights_and_network_says_to_pass_weights(monkeypatch):
    import urllib.error

    import torchvision

    real = torchvision.models.get_model

    def offline(name, **config):
        if config.get("weights") is not None:
            raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")
        return real(name, **config)

    monkeypatch.setattr(torchvision.models, "get_model", offline)
    with pytest.raises(ValueError, match="--detector torchvision:.*could not get torchvision's pretrained weights"
                                         ".*pass --detector-weights FILE"):
        build_detector(f"torchvision:{SMALL_TORCHVISION}")


# ----------------------------------------------------------------------------------------- onnx

def test_letterbox_keeps_the_aspect_and_pads_grey():
    x, scale, (left, top) = letterbox(np.full((50, 100, 3), 255, np.uint8), (64, 64))
    assert x.shape == (1, 3, 64, 64) and x.dtype == np.float32
    assert scale == pytest.approx(0.64) and (left, top) == (0, 16)
    assert x[0, :, 0, 0] == pytest.approx(114 / 255) and x[0, :, 32, 32] == pytest.approx(1.0)


@pytest.mark.parametrize("layout", ["channels_first", "channels_last"])
def test_onnx_boxes_come_back_through_the_letterbox(tmp_path, layout):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    path = _yolo_graph(tmp_path / f"{layout}.onnx", YOLO_ROWS, layout=layout)
    det = build_detector(f"onnx:{path}")
    assert det.size == (64, 64) and det.name == f"onnx:{path}"
    out = det(0, np.zeros((50, 100, 3), np.uint8))
    assert out.shape == (1, 6)
    np.testing.assert_allclose(out[0, :4], FRAME_BOX, atol=0.01)
    assert out[0, 4] == pytest.approx(0.9) and out[0, 5] == -1
    assert len(build_detector(f"onnx:{path}", threshold=0.95)(0, np.zeros((50, 100, 3), np.uint8))) == 0


@pytest.mark.parametrize("device, available, expected", [
    ("cuda", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CUDAExecutionProvider", "CPUExecutionProvider"]),
    ("cuda:1", ["CPUExecutionProvider"], ["CPUExecutionProvider"]),  # asked for, not in this build
    ("cpu", ["CUDAExecutionProvider", "CPUExecutionProvider"], ["CPUExecutionProvider"]),
])
def test_onnx_providers_follow_the_device(tmp_path, monkeypatch, device, available, expected):
    """The CUDA provider branch, run on a CPU: the build's providers forced, the session's request recorded."""
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    path = _yolo_graph(tmp_path / "yolo.onnx", YOLO_ROWS)
    asked = []
    real = ort.InferenceSession

    def session(model, providers=None, **kw):
        asked.append(list(providers))
        return real(model, providers=["CPUExecutionProvider"], **kw)  # this machine has only the CPU one

    monkeypatch.setattr(ort, "get_available_providers", lambda: available)
    monkeypatch.setattr(ort, "InferenceSession", session)
    det = build_detector(f"onnx:{path}", device=device)
    assert asked == [expected] and len(det(0, np.zeros((50, 100, 3), np.uint8))) == 1


def test_onnx_bad_files_are_refused_naming_the_flag_and_file(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    text = tmp_path / "model.onnx"
    text.write_text("not a model")
    with pytest.raises(ValueError, match=f"--detector onnx:{text}: not a readable ONNX model"):
        build_detector(f"onnx:{text}")
    with pytest.raises(ValueError, match="--detector onnx:.*missing.onnx: not a readable ONNX model"):
        build_detector(f"onnx:{tmp_path / 'missing.onnx'}")
    flat = _yolo_graph(tmp_path / "flat.onnx", YOLO_ROWS, rank=2)
    with pytest.raises(ValueError, match=f"--detector onnx:{flat}: expected a 1 x \\(4 \\+ classes\\) x N output"):
        build_detector(f"onnx:{flat}")


def test_onnx_without_onnxruntime_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as when it is not installed
    with pytest.raises(ValueError, match="--detector onnx:.*pip install onnxruntime"):
        build_detector(f"onnx:{tmp_path / 'm.onnx'}")
