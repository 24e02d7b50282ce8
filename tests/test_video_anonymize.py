"""anonymize --input VIDEO (boxes through the run's G, the rest untouched), its sealed sidecar and
recover --input VIDEO (the original crops, byte-exact), and --crops (a ReID set for search)."""
import hashlib
import io
import json
import re
import secrets
import shutil

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from cli_run import run_cli as _cli
from torchreid_privacy.inference import load
from torchreid_privacy.publish import PublishChannel
from torchreid_privacy.sealing.keys import read_key_file, write_key_file
from torchreid_privacy.sealing.payload import AuthenticationFailed, SealError
from torchreid_privacy.search.query import parse_labels
from torchreid_privacy.video.anonymize import anonymize_video, clip_boxes, video_detector
from torchreid_privacy.video.io import VideoWriter, probe, read_frames
from torchreid_privacy.video.mot import read_mot
from torchreid_privacy.video.sealed_crops import encode_png, recover_video_crops
from torchreid_privacy.video.synthetic import make_synthetic_video
from torchreid_privacy.video.temporal import TemporalSettings

FRAMES, WIDTH, HEIGHT, FPS = 24, 320, 240, 10
CHANGED = 8.0  # mean |P - O| inside every box, 8-bit levels (measured >= 34 with the tiny run)
MP4_MEAN, MP4_P99 = 2.5, 24  # H.264 CRF 12 outside boxes + 4 px: measured 1.4 and 13 (a plain re-encode: 1.8, 25)
EXACT = ["--max-gap", "0", "--extend", "0", "--box-margin", "0"]  # the gt boxes exactly: nothing filled or widened
CROP_NAME = re.compile(r"^(-?\d+)_c1s1_(\d{6})_(\d{2})\.jpg$")


@pytest.fixture(scope="module")
def street(tmp_path_factory):
    folder = tmp_path_factory.mktemp("video")
    info = make_synthetic_video(folder / "street.mkv", frames=FRAMES, width=WIDTH, height=HEIGHT, fps=FPS,
                                people=5, seed=3)
    frames = list(read_frames(info.path))
    gt = read_mot(info.gt_path)
    boxes = {f: b[:, :4].astype(int) for f, b in gt.items()}  # integer boxes inside the frame already
    key = folder / "secret.key"
    write_key_file(str(key))
    return {"info": info, "frames": frames, "gt": gt, "boxes": boxes, "key": key, "dir": folder}


@pytest.fixture(scope="module")
def anonymized(street, trained_run):
    """One lossless run through the CLI: gt boxes, sealed originals, P crops."""
    out, crops = street["dir"] / "anon.mkv", street["dir"] / "crops"
    rc, stdout, err = _cli(["anonymize", "--input", str(street["info"].path), "--output", str(out),
                            "--checkpoint", trained_run, "--detections", str(street["info"].gt_path), *EXACT,
                            "--seal-key", str(street["key"]), "--crops", str(crops)])
    assert rc == 0, err
    return {"video": out, "crops": crops, "stdout": stdout, "frames": list(read_frames(out))}


@pytest.fixture(scope="module")
def anonymized_mp4(street, trained_run):
    out = street["dir"] / "anon.mp4"
    rc, _, err = _cli(["anonymize", "--input", str(street["info"].path), "--output", str(out),
                       "--checkpoint", trained_run, "--detections", str(street["info"].gt_path), *EXACT])
    assert rc == 0, err
    return {"video": out, "frames": list(read_frames(out))}


@pytest.fixture(scope="module")
def recovered(street, anonymized):
    out = street["dir"] / "originals"
    rc, stdout, err = _cli(["recover", "--input", str(anonymized["video"]), "--key-file", str(street["key"]),
                            "--output", str(out)])
    assert rc == 0, err
    return out, stdout


def _box_list(street):
    return [(f, k, tuple(b)) for f, arr in sorted(street["boxes"].items()) for k, b in enumerate(arr)]


def _outside(street, frame, margin=0):
    mask = np.zeros((HEIGHT, WIDTH), bool)
    for x1, y1, x2, y2 in street["boxes"].get(frame, []):
        mask[y1:y2, x1:x2] = True
    return ~(ndimage.binary_dilation(mask, iterations=margin) if margin else mask)


def _inside_change(street, frames):
    return [np.abs(street["frames"][f][y1:y2, x1:x2].astype(int) - frames[f][y1:y2, x1:x2]).mean()
            for f, _, (x1, y1, x2, y2) in _box_list(street)]


# ------------------------------------------------------------------------------------ the video

@pytest.mark.parametrize("which", ["anonymized", "anonymized_mp4"])
def test_same_frame_count_size_and_rate(street, which, request):
    result = request.getfixturevalue(which)
    src, out = probe(street["info"].path), probe(result["video"])
    assert (out.width, out.height, out.fps) == (src.width, src.height, src.fps) == (WIDTH, HEIGHT, FPS)
    assert len(result["frames"]) == len(street["frames"]) == FRAMES


def test_every_box_replaced_and_mkv_keeps_every_other_pixel(street, anonymized):
    changes = _inside_change(street, anonymized["frames"])
    assert len(changes) == street["info"].boxes > 2 * FRAMES  # several people per frame
    assert min(changes) > CHANGED
    for f, (o, p) in enumerate(zip(street["frames"], anonymized["frames"])):
        outside = _outside(street, f)
        assert np.array_equal(o[outside], p[outside]), f"frame {f}: a pixel outside every box changed"


def test_mp4_replaces_boxes_and_keeps_the_rest_within_codec_loss(street, anonymized_mp4):
    assert min(_inside_change(street, anonymized_mp4["frames"])) > CHANGED
    diffs = np.concatenate([np.abs(o.astype(int) - p)[_outside(street, f, margin=4)]
                            for f, (o, p) in enumerate(zip(street["frames"], anonymized_mp4["frames"]))])
    assert diffs.mean() < MP4_MEAN and np.percentile(diffs, 99) <= MP4_P99


def test_cli_reports_frames_boxes_and_speed(street, anonymized):
    out = anonymized["stdout"]
    assert f"frames {FRAMES}, boxes replaced {street['info'].boxes}," in out and "frames/s" in out
    assert f"{anonymized['video']}.sealed" in out


def test_pasted_pixels_are_the_published_crop_resized_into_its_box(street, anonymized):
    """What is pasted is P as its published file decodes (JPEG), not G's raw output."""
    checked = 0
    for f, k, (x1, y1, x2, y2) in _box_list(street):
        later = street["boxes"][f][k + 1:]
        if any(a < x2 and x1 < c and b < y2 and y1 < d for a, b, c, d in later):
            continue  # a later box is pasted over part of it
        track = int(street["gt"][f][k, 5])
        with Image.open(anonymized["crops"] / f"{track:04d}_c1s1_{f:06d}_{k:02d}.jpg") as im:
            expected = np.asarray(im.convert("RGB").resize((x2 - x1, y2 - y1), Image.BILINEAR))
        assert np.array_equal(anonymized["frames"][f][y1:y2, x1:x2], expected)
        checked += 1
    assert checked >= 10


def test_boxes_are_clipped_to_whole_pixels_inside_the_frame():
    boxes = np.array([[10.4, 20.6, 30.2, 60.0, 1, -1],  # fractional: widened to whole pixels
                      [-5.0, 100.0, 12.0, 300.0, 1, -1],  # reaching outside: clipped
                      [400.0, 10.0, 420.0, 50.0, 1, -1],  # wholly outside: dropped
                      [50.0, 50.0, 50.5, 50.0, 1, -1]])  # empty: dropped
    keep, xyxy = clip_boxes(boxes, WIDTH, HEIGHT)
    assert keep.tolist() == [True, True, False, False]
    assert xyxy.tolist() == [[10, 20, 31, 60], [0, 100, 12, 240]] and xyxy.dtype == np.int64


# ------------------------------------------------------------------------------------ sealed recovery

def test_recovery_gives_back_every_original_crop_exactly(street, recovered):
    out, stdout = recovered
    listing = json.loads((out / "boxes.json").read_text())
    entries = listing["crops"]
    assert [(e["frame"], e["k"], tuple(e["box"])) for e in entries] == _box_list(street)
    assert sorted(p.name for p in out.iterdir()) == sorted([e["file"] for e in entries] + ["boxes.json"])
    for e in entries:
        x1, y1, x2, y2 = e["box"]
        region = street["frames"][e["frame"]][y1:y2, x1:x2]
        data = (out / e["file"]).read_bytes()
        assert e["file"] == f"frame{e['frame']:06d}_box{e['k']:02d}.png"
        assert data == encode_png(region)  # the sealed bytes themselves
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), region)
    assert f"restored {len(entries)} original crop(s)" in stdout


@pytest.fixture
def copy_of(anonymized, tmp_path):
    """A copy of the anonymized video and its sidecar, free to damage."""
    video = tmp_path / anonymized["video"].name
    shutil.copy(anonymized["video"], video)
    shutil.copy(f"{anonymized['video']}.sealed", f"{video}.sealed")
    return video


def test_wrong_key_is_refused_and_nothing_written(copy_of, tmp_path):
    wrong = tmp_path / "wrong.key"
    write_key_file(str(wrong), secrets.token_bytes(32))
    rc, _, err = _cli(["recover", "--input", str(copy_of), "--key-file", str(wrong), "--output", str(tmp_path / "o")])
    assert rc == 1 and "authentication failed (wrong key" in err and f"{copy_of}.sealed" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


@pytest.mark.parametrize("where, why", [(100, "crop record 0"), (-60, "footer"), (None, "truncated")])
def test_tampered_sidecar_is_refused_and_nothing_written(copy_of, street, tmp_path, where, why):
    side = copy_of.with_name(copy_of.name + ".sealed")
    data = bytearray(side.read_bytes())
    if where is None:
        data = data[:len(data) // 2]
    else:
        data[where] ^= 0x01
    side.write_bytes(bytes(data))
    with pytest.raises(AuthenticationFailed, match=re.escape(str(side)) + ".*" + why):
        recover_video_crops(copy_of, read_key_file(str(street["key"])), tmp_path / "o")
    assert not (tmp_path / "o").exists() and not list(tmp_path.glob(".o-*"))


def test_missing_sidecar_is_refused(copy_of, street, tmp_path):
    copy_of.with_name(copy_of.name + ".sealed").unlink()
    rc, _, err = _cli(["recover", "--input", str(copy_of), "--key-file", str(street["key"]),
                       "--output", str(tmp_path / "o")])
    assert rc == 1 and f"{copy_of}.sealed: missing" in err and not (tmp_path / "o").exists()


def test_sidecar_of_another_video_is_refused(anonymized, street, tmp_path):
    key = read_key_file(str(street["key"]))
    renamed = tmp_path / "other.mkv"  # the same video under another name
    shutil.copy(anonymized["video"], renamed)
    shutil.copy(f"{anonymized['video']}.sealed", f"{renamed}.sealed")
    with pytest.raises(SealError, match=r"other\.mkv\.sealed: seals the crops of anon\.mkv"):
        recover_video_crops(renamed, key, tmp_path / "o1")
    short = tmp_path / "short" / "anon.mkv"  # the same name, size and rate, fewer frames
    with VideoWriter(short, WIDTH, HEIGHT, FPS) as writer:
        for frame in anonymized["frames"][:10]:
            writer.write(frame)
    shutil.copy(f"{anonymized['video']}.sealed", f"{short}.sealed")
    with pytest.raises(SealError, match=rf"seals the crops of anon\.mkv \({FRAMES} frames.*10 frames"):
        recover_video_crops(short, key, tmp_path / "o2")
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()


def test_anonymize_binds_the_sidecar_to_the_videos_content(anonymized, street, tmp_path):
    """The same name, size, rate and frame count, one pixel changed (lossless re-encode): refused."""
    side = f"{anonymized['video']}.sealed"
    with open(side, "rb") as f:
        assert f.read(5)[4] == 2  # version 2: the footer holds the video's digest
    changed = tmp_path / "changed" / "anon.mkv"
    frames = [f.copy() for f in anonymized["frames"]]
    frames[FRAMES // 2][HEIGHT // 2, WIDTH // 2, 0] ^= 1
    with VideoWriter(changed, WIDTH, HEIGHT, FPS) as writer:
        for frame in frames:
            writer.write(frame)
    shutil.copy(side, f"{changed}.sealed")
    with pytest.raises(SealError, match=r"anon\.mkv\.sealed: belongs to another video, or the video was changed"):
        recover_video_crops(changed, read_key_file(str(street["key"])), tmp_path / "o")
    assert not (tmp_path / "o").exists()


def test_recover_a_video_needs_the_key_file(anonymized, tmp_path):
    rc, _, err = _cli(["recover", "--input", str(anonymized["video"]), "--output", str(tmp_path / "o")])
    assert rc == 1 and "--key-file: required" in err and f"{anonymized['video']}.sealed" in err


# ------------------------------------------------------------------------------------ refusals

def test_existing_output_is_never_overwritten(street, anonymized, trained_run, tmp_path):
    before = hashlib.sha256(anonymized["video"].read_bytes()).hexdigest()
    src = str(street["info"].path)
    common = ["--checkpoint", trained_run, "--detections", str(street["info"].gt_path)]
    rc, _, err = _cli(["anonymize", "--input", src, "--output", str(anonymized["video"]), *common])
    assert rc == 1 and f"--output: {anonymized['video']} already exists" in err
    assert hashlib.sha256(anonymized["video"].read_bytes()).hexdigest() == before
    rc, _, err = _cli(["anonymize", "--input", src, "--output", src, *common])
    assert rc == 1 and "is the input video" in err
    sidecar_only = tmp_path / "x.mkv"
    sidecar_only.with_name("x.mkv.sealed").write_bytes(b"keep")
    rc, _, err = _cli(["anonymize", "--input", src, "--output", str(sidecar_only), "--seal-key", str(street["key"]),
                       *common])
    assert rc == 1 and "x.mkv.sealed already exists" in err and not sidecar_only.exists()


@pytest.mark.parametrize("extra, culprit", [
    (["--output", "{tmp}/out.webm"], "--output: .*out.webm: cannot write '.webm'"),
    (["--output", "{tmp}/out.mkv", "--onnx", "g.onnx"], "--onnx: not supported with a video"),
    (["--output", "{tmp}/out.mkv", "--neutral-names"], "--neutral-names: not supported with a video"),
    (["--output", "{tmp}/out.mkv", "--detections", "{tmp}/bad.txt"], "--detections: .*bad.txt:1"),
    (["--output", "{tmp}/out.mkv", "--crops", "{tmp}/full"], "--crops: .*full already exists"),
])
def test_bad_arguments_are_refused_naming_the_culprit(street, trained_run, tmp_path, extra, culprit):
    (tmp_path / "bad.txt").write_text("1,2,three\n")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.jpg").write_bytes(b"x")
    argv = ["anonymize", "--input", str(street["info"].path), "--checkpoint", trained_run]
    rc, _, err = _cli(argv + [a.format(tmp=tmp_path) for a in extra])
    assert rc == 1 and re.search(culprit, err), err
    assert not (tmp_path / "out.mkv").exists() and not list(tmp_path.glob(".*"))


def test_unreadable_video_and_folder_only_flags(trained_run, tmp_path):
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video")
    rc, _, err = _cli(["anonymize", "--input", str(fake), "--output", str(tmp_path / "o.mkv"),
                       "--checkpoint", trained_run])
    assert rc == 1 and f"--input: {fake}: cannot be opened as a video" in err
    (tmp_path / "photos").mkdir()
    rc, _, err = _cli(["anonymize", "--input", str(tmp_path / "photos"), "--output", str(tmp_path / "p"),
                       "--checkpoint", trained_run, "--crops", str(tmp_path / "c")])
    assert rc == 1 and "--crops: only for a video --input" in err


def test_baseline_run_pastes_m_and_a_run_with_neither_g_nor_m_is_refused(street, trained_run, tmp_path):
    model = load(trained_run)
    model.generator = None  # a baseline run: P is the conventional M (mosaic)
    detector = video_detector(street["info"].gt_path)
    report = anonymize_video(street["info"].path, tmp_path / "m.mkv", model, detector, PublishChannel("png"),
                             temporal=TemporalSettings(max_gap=0, extend=0, margin=0.0))
    assert (report.frames, report.boxes) == (FRAMES, street["info"].boxes)
    assert min(_inside_change(street, list(read_frames(tmp_path / "m.mkv")))) > 1.0  # mosaic keeps the mean colour
    model.desensitizer = ""
    with pytest.raises(ValueError, match="--checkpoint: the run has neither a generator G nor a desensitizer M"):
        anonymize_video(street["info"].path, tmp_path / "n.mkv", model, detector, PublishChannel("png"))
    assert not (tmp_path / "n.mkv").exists()


# ------------------------------------------------------------------------------------ --crops

def test_crops_one_published_p_per_box_named_for_search(street, anonymized):
    names = sorted(p.name for p in anonymized["crops"].iterdir())
    parsed = {(int(m.group(2)), int(m.group(3))): int(m.group(1)) for m in map(CROP_NAME.match, names)}
    expected = {(f, k): int(street["gt"][f][k, 5]) for f, k, _ in _box_list(street)}
    assert parsed == expected  # one crop per replaced box, its track the gt.txt id
    dataset, pids, camids = parse_labels(names)
    assert dataset == "market1501" and set(pids) == set(expected.values()) and set(camids) == {1}
    with Image.open(anonymized["crops"] / names[0]) as im:
        assert im.format == "JPEG" and im.size == (32, 64)  # the model's input size, as folder P


def test_search_reads_the_crops_as_a_gallery(anonymized, trained_run, tmp_path):
    queries = tmp_path / "query"
    queries.mkdir()
    for name in sorted(p.name for p in anonymized["crops"].iterdir())[::10]:
        shutil.copy(anonymized["crops"] / name, queries / name.replace("_c1s1_", "_c2s1_"))  # another camera
    rc, out, err = _cli(["search", "--checkpoint", trained_run, "--query", str(queries), "--gallery",
                         str(anonymized["crops"]), "--gallery-protected", "--output", str(tmp_path / "s"), "--no-png",
                         "--no-cache"])
    assert rc == 0, err
    ranks = json.loads((tmp_path / "s" / "ranks.json").read_text())
    # the names carried identities and cameras, and each query is a copy of a gallery crop (another camera):
    # its own file ranks first
    assert ranks["metrics"] is not None and ranks["metrics"]["R1"] == pytest.approx(1.0), out


def test_crops_are_what_folder_anonymize_publishes_for_the_same_originals(street, anonymized, recovered,
                                                                         trained_run, tmp_path):
    """The recovered originals through the image-folder path give the --crops files again (same
    resize, G and channel; batches differ, so pixels within 2 levels rather than bytes)."""
    originals, _ = recovered
    entries = json.loads((originals / "boxes.json").read_text())["crops"][::9]
    folder = tmp_path / "originals"
    folder.mkdir()
    for e in entries:
        shutil.copy(originals / e["file"], folder / e["file"])
    rc, _, err = _cli(["anonymize", "--input", str(folder), "--output", str(tmp_path / "p"),
                       "--checkpoint", trained_run])
    assert rc == 0, err
    for e in entries:
        track = int(street["gt"][e["frame"]][e["k"], 5])
        video_p = np.asarray(Image.open(anonymized["crops"] / f"{track:04d}_c1s1_{e['frame']:06d}_{e['k']:02d}.jpg"))
        folder_p = np.asarray(Image.open(tmp_path / "p" / e["file"].replace(".png", ".jpg")))
        diff = np.abs(video_p.astype(int) - folder_p)
        assert diff.max() <= 2 and diff.mean() < 0.5, e["file"]


def test_crops_from_detections_take_tracklet_ids(street, trained_run, tmp_path):
    crops = tmp_path / "crops"
    rc, out, err = _cli(["anonymize", "--input", str(street["info"].path), "--output", str(tmp_path / "d.mkv"),
                         "--checkpoint", trained_run, "--detections", str(street["info"].det_path),
                         "--crops", str(crops), "--format", "png"])
    assert rc == 0, err
    names = [p.name for p in crops.iterdir()]
    tracks = [int(n.split("_")[0]) for n in names]
    replaced = int(re.search(r"boxes replaced (\d+)", out).group(1))
    assert all(n.endswith(".png") for n in names) and len(names) == replaced > FRAMES
    assert len({t for t in tracks if t >= 1}) >= 3 and all(t >= 1 or t == -1 for t in tracks)
