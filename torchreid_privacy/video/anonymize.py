"""``anonymize --input VIDEO``: every pedestrian box replaced by its published P, the rest untouched.

The first pass (:func:`.plan.plan_video`) decides what to hide: each frame's boxes, detected,
tracked, filled through missed frames and widened, or the whole frame where that failed. This
module is the second pass. Per frame, each planned box (clipped to the frame, widened to whole
pixels: ``floor`` of the top-left, ``ceil`` of the bottom-right, so no detected pixel stays
visible) is cut out, resized
to the model's input size (PIL bilinear, as a folder's images are), anonymized (G, or the
conventional M of a baseline run), published through the run's channel exactly as a folder's P
file is (8-bit, ``PublishChannel.encode`` then ``decode``), resized back into its box and pasted;
a frame planned whole gets the run's M over every pixel. Pixels outside every box are the decoded
input's. Boxes of several frames go through the model
as one batch. The video is written with the input's size and frame rate, codec by the output's
suffix (``video.io.WRITE_CODECS``: ``.mkv`` is lossless, so the untouched pixels stay exact).

Optional outputs, all published together with the video (or none of them):

- ``seal_key``: ``OUT.sealed`` (``video.sealed_crops``), each box's original crop as lossless PNG,
  AES-GCM sealed under the key, for ``recover --key-file``;
- ``crops_dir``: the published P crops themselves (the very files ``encode`` made) as a ReID image
  set for ``search --gallery``: ``{track:04d}_c1s1_{frame:06d}_{k:02d}{suffix}``, ``frame`` 0-based,
  ``k`` the box's number in its frame (as in the recovered ``frame{frame}_box{k}.png``), ``track``
  the MOT file's id when it carries ids (gt.txt), else ``TrackLinker``'s; -1 (written ``-001``:
  Market's junk id, left out by ``search``) for a box no tracklet holds.
"""
from __future__ import annotations

import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from torchreid_privacy.desensitize import resolve_desensitizer
from torchreid_privacy.publish import PublishChannel, to_uint8
from torchreid_privacy.sealing.payload import sidecar_path
from torchreid_privacy.utils.atomic import (check_new_folder, move_into_place, new_folder_beside, write_json,
                                            write_new)
from torchreid_privacy.utils.images import resize_rgb, to_batch01

from .detectors import Detector
from .io import WRITE_CODECS, VideoError, VideoInfo, VideoWriter, probe, read_frames
from .mot import write_mot
from .plan import VideoPlan, clip_boxes, plan_video, read_ground_truth, video_detector  # noqa: F401 (re-exported)
from .privacy_recall import PrivacyRecall, box_mask
from .sealed_crops import SealedCropsWriter, encode_png, video_digest
from .temporal import TemporalSettings

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
MAX_PENDING_FRAMES = 16  # frames held while a batch of boxes fills (bounds memory on box-less stretches)


@dataclass(frozen=True)
class VideoReport:
    """What ``anonymize_video`` wrote, and what it hid."""

    output: Path
    frames: int
    boxes: int
    seconds: float
    sidecar: Optional[Path] = None
    crops_dir: Optional[Path] = None
    counts: Dict[str, int] = field(default_factory=dict)  # the plan's (detected, filled, outside, whole frames)
    recall: Optional[dict] = None  # PrivacyRecall.report() with a ground truth
    recall_path: Optional[Path] = None
    missed_path: Optional[Path] = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    @property
    def frames_whole(self) -> int:
        return int(self.counts.get("frames_whole", 0))

    def line(self) -> str:
        return f"frames {self.frames}, boxes replaced {self.boxes}, {self.fps:.1f} frames/s"

    def lines(self) -> List[str]:
        """The report a user reads: what was replaced, filled, desensitized whole, skipped, hidden."""
        c = self.counts
        out = [self.line(),
               f"boxes: {c.get('boxes_detected', 0)} detected, {c.get('interpolated', 0)} interpolated and "
               f"{c.get('extended', 0)} extended by the tracks, {c.get('boxes_clipped', 0)} clipped to the frame, "
               f"{c.get('boxes_outside', 0)} wholly outside it (nothing to hide)"]
        if self.frames_whole:
            out.append(f"frames desensitized whole (fail closed): {self.frames_whole} "
                       f"({c.get('detector_errors', 0)} detector error(s), {c.get('anonymizer_errors', 0)} "
                       f"anonymizer error(s), the rest --fail-closed)")
        if self.recall is not None:
            from .privacy_recall import summary_line

            out.append(summary_line(self.recall) + f"; missed boxes in {self.missed_path}")
        return out


@dataclass
class _Frame:
    index: int
    rgb: np.ndarray  # the decoded input frame (never modified)
    boxes: np.ndarray  # (M, 4) int64 x1, y1, x2, y2 inside the frame
    tracks: np.ndarray  # (M,) int64 tracklet ids, -1 untracked
    whole: Optional[str] = None  # why the whole frame is desensitized (fail closed), or None


# ---------------------------------------------------------------------------------------- checks

def report_paths(out: PathLike) -> Tuple[Path, Path]:
    """Where a run with ``--ground-truth`` writes its privacy-recall report and its missed boxes."""
    out = Path(out)
    return out.with_name(out.name + ".recall.json"), out.with_name(out.name + ".missed.txt")


def check_video_paths(inp: PathLike, out: PathLike, crops_dir: Optional[PathLike] = None,
                      sealed: bool = False, recall: bool = False) -> VideoInfo:
    """The input's size and rate; refuses, naming the flag, every output that cannot be written
    (before a model is loaded): an unsupported suffix, the input itself, an existing file."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in WRITE_CODECS:
        raise VideoError(f"--output: {out}: cannot write '{suffix}' videos; use one of "
                         f"{', '.join(sorted(WRITE_CODECS))}")
    if out.resolve() == Path(inp).resolve():
        raise ValueError(f"--output: {out} is the input video; choose a new file")
    paths = [out] + ([sidecar_path(out)] if sealed else []) + (list(report_paths(out)) if recall else [])
    for path in paths:
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"--output: {path} already exists; refusing to overwrite it")
    if crops_dir is not None:
        crops = check_new_folder(crops_dir, "--crops").resolve()
        for path in paths:  # the video, its sidecar, the recall reports
            target = path.resolve()
            if target == crops or crops in target.parents:
                raise ValueError(f"--crops: {crops_dir} would hold {path} (--output); the crops folder is written "
                                 "whole and holds only crops: choose a crops folder apart from the video")
            if target in crops.parents:
                raise ValueError(f"--crops: {crops_dir} is inside {path} (--output), a file; choose a crops "
                                 "folder apart from the video")
    try:
        return probe(inp)
    except VideoError as exc:
        raise VideoError(f"--input: {exc}") from None


def anonymizer(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's ``anonymize`` ([0,1] -> P): G, or M for a baseline run; refused with neither."""
    if getattr(model, "generator", None) is None and not getattr(model, "desensitizer", None):
        raise ValueError("--checkpoint: the run has neither a generator G nor a desensitizer M; nothing to "
                         "anonymize the boxes with")
    return model.anonymize


def crop_name(track: int, frame: int, k: int, suffix: str) -> str:
    """A P crop's Market-style name: the tracklet as person id, camera 1, the frame, the box's ``k``."""
    return f"{int(track):04d}_c1s1_{int(frame):06d}_{int(k):02d}{suffix}"


# ---------------------------------------------------------------------------------------- frames

def _frames(inp: PathLike, plan: VideoPlan) -> Iterator[_Frame]:
    for index, rgb in enumerate(read_frames(inp)):
        p = plan[index]
        yield _Frame(index, rgb, p.boxes, p.tracks, p.whole)


def _chunks(frames: Iterator[_Frame], batch_size: int) -> Iterator[List[_Frame]]:
    """Consecutive frames holding at least ``batch_size`` boxes (or ``MAX_PENDING_FRAMES`` frames)."""
    chunk: List[_Frame] = []
    boxes = 0
    for frame in frames:
        chunk.append(frame)
        boxes += len(frame.boxes)
        if boxes >= batch_size or len(chunk) >= MAX_PENDING_FRAMES:
            yield chunk
            chunk, boxes = [], 0
    if chunk:
        yield chunk


def _published(chunk: List[_Frame], fn: Callable[[torch.Tensor], torch.Tensor], height: int, width: int,
               channel: PublishChannel, batch_size: int, device: str) -> List[bytes]:
    """The published P file of every box of ``chunk``, in frame then box order."""
    crops = [resize_rgb(f.rgb[y1:y2, x1:x2], height, width) for f in chunk for x1, y1, x2, y2 in f.boxes]
    out: List[bytes] = []
    for i in range(0, len(crops), batch_size):
        with torch.no_grad():
            out.extend(channel.encode(a) for a in to_uint8(fn(to_batch01(crops[i:i + batch_size], device))))
    return out


def _pasted(frame: _Frame, published: List[bytes], channel: PublishChannel) -> np.ndarray:
    """The frame with each box replaced by its published P, resized back to the box."""
    out = frame.rgb.copy()
    for (x1, y1, x2, y2), data in zip(frame.boxes, published):
        out[y1:y2, x1:x2] = resize_rgb(channel.decode(data), int(y2 - y1), int(x2 - x1))
    return out


def whole_frame_desensitizer(model) -> Callable[[np.ndarray], np.ndarray]:
    """Frame -> the run's conventional M over every pixel (mosaic 24 for a run without one): what a
    frame that fails closed becomes.

    M works at the model's scale: its block size or blur radius is set for a person filling the
    model's ``height`` rows, so the frame is first brought to that height (aspect kept), desensitized,
    and brought back (bilinear). People in the frame are smaller than it, so they are hidden at least
    as strongly as a crop's M hides its person. Any frame size works, down to 1 x 1.
    """
    if getattr(model, "desensitizer", None):
        fn = model.conventional
    else:
        fn = resolve_desensitizer("mosaic", {})
    height = int(getattr(model, "height", 256))

    def whole(rgb: np.ndarray) -> np.ndarray:
        h, w = rgb.shape[:2]
        small_h = max(1, min(h, height))
        small = resize_rgb(rgb, small_h, max(1, round(w * small_h / h)))
        with torch.no_grad():
            m = to_uint8(fn(to_batch01([small], "cpu")))[0]
        return resize_rgb(np.ascontiguousarray(m), h, w)

    return whole


# ---------------------------------------------------------------------------------------- outputs

class _Outputs:
    """The video, its sealed sidecar and the crops folder: written aside, published together."""

    def __init__(self, out: Path, info: VideoInfo, seal_key: Optional[bytes], crops_dir: Optional[Path],
                 channel: PublishChannel) -> None:
        self.channel, self.crops_dir = channel, crops_dir
        self.sealer = self.crops_tmp = self.writer = None
        self.size = (info.width, info.height)
        try:
            if seal_key is not None:
                self.sealer = SealedCropsWriter(out, seal_key, info.width, info.height, info.fps)
            if crops_dir is not None:
                self.crops_tmp = new_folder_beside(crops_dir)
            self.writer = VideoWriter(out, info.width, info.height, info.fps)
        except BaseException:
            self.discard()
            raise

    def write(self, frame: _Frame, published: List[bytes]) -> None:
        for k, ((x1, y1, x2, y2), data, track) in enumerate(zip(frame.boxes, published, frame.tracks)):
            if self.sealer is not None:
                self.sealer.add(frame.index, k, (x1, y1, x2, y2), encode_png(frame.rgb[y1:y2, x1:x2]))
            if self.crops_tmp is not None:
                write_new(self.crops_tmp / crop_name(track, frame.index, k, self.channel.suffix), data)
        self.writer.write(_pasted(frame, published, self.channel))

    def write_whole(self, frame: _Frame, desensitized: np.ndarray) -> None:
        """A frame that failed closed: M over every pixel; its sealed record is the whole original frame."""
        if self.sealer is not None:
            self.sealer.add(frame.index, 0, (0, 0, *self.size), encode_png(frame.rgb))
        self.writer.write(desensitized)

    def publish(self) -> None:
        """Crops folder, then the video finished under its temporary name, the sidecar bound to its
        digest and linked, then the video linked (no P video without its payload); undone on failure."""
        crops = sidecar = None
        try:
            if self.crops_tmp is not None:
                crops, self.crops_tmp = move_into_place(self.crops_tmp, self.crops_dir, "--crops"), None
            finished = self.writer.finish()  # complete, still under its temporary name
            if self.sealer is not None:
                self.sealer.finish(self.writer.frames, video_digest(finished))
                sidecar, self.sealer = self.sealer.publish(), None
            writer, self.writer = self.writer, None
            writer.close(keep=True)  # links the finished file into place
        except BaseException:
            if sidecar is not None:
                sidecar.unlink(missing_ok=True)
            if crops is not None:
                shutil.rmtree(crops, ignore_errors=True)
            self.discard()
            raise

    def discard(self) -> None:
        writer, sealer, crops_tmp = self.writer, self.sealer, self.crops_tmp
        self.writer = self.sealer = self.crops_tmp = None
        if writer is not None:
            writer.close(keep=False)
        if sealer is not None:
            sealer.discard()
        if crops_tmp is not None:
            shutil.rmtree(crops_tmp, ignore_errors=True)


def anonymize_video(inp: PathLike, out: PathLike, model, detector: Detector, channel: PublishChannel, *,
                    batch_size: int = 32, device: str = "cpu", seal_key: Optional[bytes] = None,
                    crops_dir: Optional[PathLike] = None, temporal: TemporalSettings = TemporalSettings(),
                    fail_closed: bool = False, ground_truth: Optional[PathLike] = None,
                    progress: bool = True) -> VideoReport:
    """Write ``out``: ``inp`` with every person ``detector`` finds replaced by ``model``'s published P.

    Two passes over the video: :func:`.plan.plan_video` detects, tracks and fills the boxes
    (``temporal``; ``fail_closed`` adds whole frames whose moving area is uncovered), then each
    frame is written with its boxes through G (M for a baseline run) and the channel, or, for a
    frame that failed closed, with M over every pixel. ``model``: a ``PrivacyModel``;
    ``batch_size``: boxes per forward pass. With ``seal_key`` also ``out.sealed``, with
    ``crops_dir`` the P crops (module docstring), with ``ground_truth`` (a MOT gt.txt) the privacy
    recall of the output, written to ``out.recall.json`` with the missed boxes in ``out.missed.txt``.
    Nothing is left behind on failure; an existing file is never replaced.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {batch_size}")
    out, crops_dir = Path(out), None if crops_dir is None else Path(crops_dir)
    info = check_video_paths(inp, out, crops_dir, sealed=seal_key is not None, recall=ground_truth is not None)
    fn = anonymizer(model)
    truth = read_ground_truth(ground_truth) if ground_truth is not None else None
    start = time.perf_counter()
    plan = plan_video(inp, info, detector, temporal, fail_closed=fail_closed, progress=progress)
    _warn_unused(detector, plan.frames)
    recall = PrivacyRecall(truth, info.width, info.height) if truth is not None else None
    whole = whole_frame_desensitizer(model)
    anonymizer_errors = whole_frames = boxes = 0
    outputs = _Outputs(out, info, seal_key, crops_dir, channel)
    try:
        with tqdm(total=plan.frames, desc="anonymize", unit="frame", disable=None if progress else True,
                  dynamic_ncols=True) as bar:
            for chunk in _chunks(_frames(inp, plan), batch_size):
                try:
                    published = iter(_published([f for f in chunk if not f.whole], fn, model.height, model.width,
                                                channel, batch_size, device))
                except Exception as exc:  # G failed on these boxes: their frames fail closed, never raw
                    anonymizer_errors += 1
                    log.warning("the anonymizer failed on frames %d-%d (%s: %s); each desensitized whole",
                                chunk[0].index, chunk[-1].index, type(exc).__name__, exc)
                    for frame in chunk:
                        frame.whole = frame.whole or f"anonymizer error ({type(exc).__name__})"
                    published = iter(())
                for frame in chunk:
                    if frame.whole:
                        outputs.write_whole(frame, whole(frame.rgb))
                        whole_frames += 1
                    else:
                        outputs.write(frame, [next(published) for _ in frame.boxes])
                        boxes += len(frame.boxes)
                    if recall is not None:
                        # what the output anonymized: its pasted boxes, or all of the frame
                        recall.add(frame.index, box_mask(frame.boxes, info.height, info.width, bool(frame.whole)))
                bar.update(len(chunk))
        frames = outputs.writer.frames
        if frames != plan.frames:
            raise VideoError(f"--input: {inp} decoded {frames} frame(s) on the second pass and {plan.frames} on "
                             "the first; is the file being written to?")
        sidecar = outputs.sealer.path if outputs.sealer is not None else None
        outputs.publish()
    except BaseException:
        outputs.discard()
        raise
    counts = dict(plan.counts, anonymizer_errors=anonymizer_errors, frames_whole=whole_frames)
    report = VideoReport(out, frames, boxes, time.perf_counter() - start, sidecar, crops_dir, counts)
    if recall is not None:
        report = _write_recall(report, recall, detector, temporal)
    return report


def _write_recall(report: VideoReport, recall: PrivacyRecall, detector: Detector,
                  temporal: TemporalSettings) -> VideoReport:
    """``OUT.recall.json`` (the summary, settings and missed boxes) and ``OUT.missed.txt`` (MOT gt form)."""
    from dataclasses import replace

    summary = recall.report()
    json_path, missed_path = report_paths(report.output)
    write_mot(missed_path, recall.missed_boxes(), gt=True)
    write_json(json_path, {"video": str(report.output), "detector": {"name": detector.name,
                                                                    "settings": detector.settings()},
                           "temporal": temporal.as_dict(), "counts": report.counts, **summary})
    return replace(report, recall=summary, recall_path=json_path, missed_path=missed_path)


def _warn_unused(detector: Detector, frames: int) -> None:
    """A detections file naming frames past the video's end is likely another video's, or the video is cut."""
    last = getattr(detector, "last_frame", None)
    if last is not None and last >= frames:
        late = sum(len(b) for f, b in detector.boxes.items() if f >= frames)
        log.warning("--detections: %s names %d frame(s) but the video decoded %d; %d box(es) on the missing "
                    "frames were not used: is it this video's file, or is the video cut short?",
                    detector.path, last + 1, frames, late)
