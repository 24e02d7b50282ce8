"""``anonymize --input VIDEO``: every pedestrian box replaced by its published P, the rest untouched.

Per frame, each detected box (clipped to the frame, widened to whole pixels: ``floor`` of the
top-left, ``ceil`` of the bottom-right, so no detected pixel stays visible) is cut out, resized
to the model's input size (PIL bilinear, as a folder's images are), anonymized (G, or the
conventional M of a baseline run), published through the run's channel exactly as a folder's P
file is (8-bit, ``PublishChannel.encode`` then ``decode``), resized back into its box and pasted.
Pixels outside every box are the decoded input's. Boxes of several frames go through the model
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
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from torchreid_privacy.publish import PublishChannel, to_uint8
from torchreid_privacy.sealing.payload import sidecar_path
from torchreid_privacy.utils.atomic import check_new_folder, move_into_place, new_folder_beside, write_new
from torchreid_privacy.utils.images import resize_rgb, to_batch01

from .detect import Detector, FileDetections, make_detector
from .io import WRITE_CODECS, VideoError, VideoInfo, VideoWriter, probe, read_frames
from .mot import TRACK, MotFormatError, pixel_boxes
from .sealed_crops import SealedCropsWriter, encode_png

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
MAX_PENDING_FRAMES = 16  # frames held while a batch of boxes fills (bounds memory on box-less stretches)


@dataclass(frozen=True)
class VideoReport:
    """What ``anonymize_video`` wrote."""

    output: Path
    frames: int
    boxes: int
    seconds: float
    sidecar: Optional[Path] = None
    crops_dir: Optional[Path] = None

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")

    def line(self) -> str:
        return f"frames {self.frames}, boxes replaced {self.boxes}, {self.fps:.1f} frames/s"


@dataclass
class _Frame:
    index: int
    rgb: np.ndarray  # the decoded input frame (never modified)
    boxes: np.ndarray  # (M, 4) int64 x1, y1, x2, y2 inside the frame
    tracks: np.ndarray  # (M,) int64 tracklet ids, -1 untracked


# ---------------------------------------------------------------------------------------- checks

def check_video_paths(inp: PathLike, out: PathLike, crops_dir: Optional[PathLike] = None,
                      sealed: bool = False) -> VideoInfo:
    """The input's size and rate; refuses, naming the flag, every output that cannot be written
    (before a model is loaded): an unsupported suffix, the input itself, an existing file."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in WRITE_CODECS:
        raise VideoError(f"--output: {out}: cannot write '{suffix}' videos; use one of "
                         f"{', '.join(sorted(WRITE_CODECS))}")
    if out.resolve() == Path(inp).resolve():
        raise ValueError(f"--output: {out} is the input video; choose a new file")
    for path in (out, sidecar_path(out)) if sealed else (out,):
        if path.exists() or path.is_symlink():
            raise FileExistsError(f"--output: {path} already exists; refusing to overwrite it")
    if crops_dir is not None:
        check_new_folder(crops_dir, "--crops")
    try:
        return probe(inp)
    except VideoError as exc:
        raise VideoError(f"--input: {exc}") from None


def video_detector(detections: Optional[PathLike] = None) -> Detector:
    """``make_detector``, its file errors named as ``--detections``'s."""
    try:
        return make_detector(str(detections) if detections else None)
    except MotFormatError as exc:
        raise ValueError(f"--detections: {exc}") from None


def anonymizer(model) -> Callable[[torch.Tensor], torch.Tensor]:
    """The model's ``anonymize`` ([0,1] -> P): G, or M for a baseline run; refused with neither."""
    if getattr(model, "generator", None) is None and not getattr(model, "desensitizer", None):
        raise ValueError("--checkpoint: the run has neither a generator G nor a desensitizer M; nothing to "
                         "anonymize the boxes with")
    return model.anonymize


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(keep, xyxy)``: which of the ``(N, 4+)`` boxes cover a pixel once clipped to the frame, and
    those as ``(M, 4)`` int64 whole-pixel boxes (top-left floored, bottom-right ceiled)."""
    xyxy = pixel_boxes(boxes, width, height)
    keep = (xyxy[:, 2:] > xyxy[:, :2]).all(axis=1)
    return keep, xyxy[keep]


def crop_name(track: int, frame: int, k: int, suffix: str) -> str:
    """A P crop's Market-style name: the tracklet as person id, camera 1, the frame, the box's ``k``."""
    return f"{int(track):04d}_c1s1_{int(frame):06d}_{int(k):02d}{suffix}"


# ---------------------------------------------------------------------------------------- frames

def _tracker(detector: Detector, fps: float) -> Callable[[int, np.ndarray], np.ndarray]:
    """Track ids per box: the MOT file's own (gt.txt) when it has them, else ``TrackLinker``'s."""
    if isinstance(detector, FileDetections) and any((b[:, TRACK] >= 0).any() for b in detector.boxes.values()):
        return lambda index, boxes: boxes[:, TRACK]
    from .tracklets import TrackLinker

    linker = TrackLinker(float(fps))
    return lambda index, boxes: linker.update(index, boxes)[:, TRACK]


def _frames(inp: PathLike, detector: Detector, info: VideoInfo,
            track: Optional[Callable[[int, np.ndarray], np.ndarray]]) -> Iterator[_Frame]:
    for index, rgb in enumerate(read_frames(inp)):
        det = np.asarray(detector(index, rgb), dtype=np.float64).reshape(-1, 6)
        keep, boxes = clip_boxes(det, info.width, info.height)
        tracks = np.full(len(det), -1, dtype=np.int64) if track is None else np.asarray(track(index, det))
        yield _Frame(index, rgb, boxes, tracks[keep].astype(np.int64))


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


# ---------------------------------------------------------------------------------------- outputs

class _Outputs:
    """The video, its sealed sidecar and the crops folder: written aside, published together."""

    def __init__(self, out: Path, info: VideoInfo, seal_key: Optional[bytes], crops_dir: Optional[Path],
                 channel: PublishChannel) -> None:
        self.channel, self.crops_dir = channel, crops_dir
        self.sealer = self.crops_tmp = self.writer = None
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

    def publish(self) -> None:
        """Crops folder, then sidecar, then video (no P video without its payload); undone on failure."""
        crops = sidecar = None
        try:
            if self.crops_tmp is not None:
                crops, self.crops_tmp = move_into_place(self.crops_tmp, self.crops_dir, "--crops"), None
            if self.sealer is not None:
                self.sealer.finish(self.writer.frames)
                sidecar, self.sealer = self.sealer.publish(), None
            writer, self.writer = self.writer, None
            writer.close(keep=True)
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
                    crops_dir: Optional[PathLike] = None) -> VideoReport:
    """Write ``out``: ``inp`` with every box ``detector`` finds replaced by ``model``'s published P.

    ``model``: a ``PrivacyModel`` (``anonymize``, ``height``, ``width``); ``batch_size``: boxes per
    forward pass. With ``seal_key`` also ``out.sealed``, with ``crops_dir`` the P crops (module
    docstring). Nothing is left behind on failure; an existing file is never replaced.
    """
    if batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {batch_size}")
    out, crops_dir = Path(out), None if crops_dir is None else Path(crops_dir)
    info = check_video_paths(inp, out, crops_dir, sealed=seal_key is not None)
    fn = anonymizer(model)
    track = _tracker(detector, info.fps) if crops_dir is not None else None
    start, boxes = time.perf_counter(), 0
    outputs = _Outputs(out, info, seal_key, crops_dir, channel)
    try:
        with tqdm(total=info.frames or None, desc="anonymize", unit="frame", disable=None, dynamic_ncols=True) as bar:
            for chunk in _chunks(_frames(inp, detector, info, track), batch_size):
                published = iter(_published(chunk, fn, model.height, model.width, channel, batch_size, device))
                for frame in chunk:
                    outputs.write(frame, [next(published) for _ in frame.boxes])
                    boxes += len(frame.boxes)
                bar.update(len(chunk))
        frames = outputs.writer.frames
        _warn_unused(detector, frames)
        sidecar = outputs.sealer.path if outputs.sealer is not None else None
        outputs.publish()
    except BaseException:
        outputs.discard()
        raise
    return VideoReport(out, frames, boxes, time.perf_counter() - start, sidecar, crops_dir)


def _warn_unused(detector: Detector, frames: int) -> None:
    """A detections file with boxes past the video's end is likely another video's."""
    if isinstance(detector, FileDetections) and detector.boxes and max(detector.boxes) >= frames:
        late = sum(len(b) for f, b in detector.boxes.items() if f >= frames)
        log.warning("--detections: %s has %d box(es) on frames past the video's last (%d frames): is it this "
                    "video's file?", detector.path, late, frames)
