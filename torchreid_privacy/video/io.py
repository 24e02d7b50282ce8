"""Video frames in and out through PyAV (FFmpeg ships in its wheel: no system install).

Why PyAV rather than OpenCV's VideoCapture/VideoWriter: it reports the stream's exact frame
rate, writes H.264 and lossless FFV1 from the wheel alone, and lets us choose the pixel
format, so an anonymized video keeps the input's size and rate exactly.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np

from torchreid_privacy.utils.atomic import link_into_place, new_temp, sweep_stale

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]

# suffix -> (codec, pixel format, codec options); H.264 at a near-transparent CRF for the
# usual containers, lossless FFV1 in Matroska (pixels outside the boxes stay exactly equal)
WRITE_CODECS = {
    ".mp4": ("libx264", "yuv420p", {"crf": "12", "preset": "veryfast"}),
    ".mov": ("libx264", "yuv420p", {"crf": "12", "preset": "veryfast"}),
    ".mkv": ("ffv1", "bgr0", {}),
    ".avi": ("mjpeg", "yuvj444p", {"q:v": "2"}),
}
VIDEO_SUFFIXES = frozenset(WRITE_CODECS) | {".webm", ".m4v", ".mpg", ".mpeg", ".ts"}


class VideoError(ValueError):
    """A video that cannot be opened, decoded or written; the message names the file."""


def is_video(path: PathLike) -> bool:
    """Whether ``path`` is a file whose suffix names a video container."""
    p = Path(path)
    return p.suffix.lower() in VIDEO_SUFFIXES and not p.is_dir()


@dataclass(frozen=True)
class VideoInfo:
    path: str
    width: int
    height: int
    fps: Fraction
    frames: int  # as the container states it; 0 when it does not (count by reading)


def _open(path: PathLike):
    import av

    p = Path(path)
    if not p.is_file():
        raise VideoError(f"{p}: no such video file")
    try:
        container = av.open(str(p))
    except Exception as exc:  # PyAV raises InvalidDataError, FileNotFoundError, ... per FFmpeg error
        raise VideoError(f"{p}: cannot be opened as a video ({exc.__class__.__name__}: {exc})") from None
    if not container.streams.video:
        container.close()
        raise VideoError(f"{p}: has no video stream")
    return container


def probe(path: PathLike) -> VideoInfo:
    """Size, frame rate and stated frame count of ``path``'s first video stream."""
    with _open(path) as container:
        stream = container.streams.video[0]
        # a file cut inside its header opens with a stream that has no codec parameters (PyAV then
        # has no width attribute at all, or a zero size)
        width, height = getattr(stream, "width", 0) or 0, getattr(stream, "height", 0) or 0
        if width <= 0 or height <= 0:
            raise VideoError(f"{path}: its video stream has no frame size (a damaged or cut file)")
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        return VideoInfo(str(path), int(width), int(height), Fraction(rate), int(stream.frames or 0))


def read_frames(path: PathLike) -> Iterator[np.ndarray]:
    """Every frame of ``path`` in order, as ``H x W x 3`` uint8 RGB.

    A damaged file never ends quietly: a decoding error raises :class:`VideoError` naming the file
    and how many frames decoded before it; a stream that yields no frame at all (an empty video,
    a file cut after its header) raises :class:`VideoError` when the iteration ends; fewer frames
    than the container states (a file cut short) logs a warning naming both counts.
    """
    with _open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stated, decoded = int(stream.frames or 0), 0
        implied = 0 if stated else _frames_from_duration(container, stream)
        try:
            for frame in container.decode(stream):
                rgb = frame.to_ndarray(format="rgb24")
                decoded += 1
                yield rgb
        except Exception as exc:
            if exc.__class__.__module__.startswith("av"):
                raise VideoError(f"{path}: decoding failed after {decoded} frame(s)"
                                 f"{f' of the {stated} it states' if stated else ''} ({exc})") from None
            raise
    if decoded == 0:
        why = f"its container states {stated}: a damaged file" if stated else "an empty video, or a file cut short"
        raise VideoError(f"{path}: decoded no frame ({why})")
    if 0 < stated and decoded < stated:
        log.warning("%s: decoded %d frame(s), but its container states %d: the file is likely cut short",
                    path, decoded, stated)
    elif implied and decoded + max(1, implied // 100) < implied:  # a little slack: a duration is not a count
        log.warning("%s: decoded %d frame(s), but its container's duration implies about %d: the file is likely "
                    "cut short", path, decoded, implied)


def _frames_from_duration(container, stream) -> int:
    """The frame count a container that states none implies by its duration and rate (Matroska keeps
    its duration in the header, so a cut file still tells its full length); 0 when unknown."""
    rate = stream.average_rate or stream.guessed_rate
    if not container.duration or not rate or container.duration <= 0:
        return 0
    import av

    return int(round(container.duration / av.time_base * float(rate)))


class VideoWriter:
    """Writes RGB frames to a new video at ``path``: same size and rate, codec by suffix.

    The file is written under a temporary name in the same folder and linked into place when
    closed without error: a crash leaves no half-written video, and an existing file is never
    replaced (:class:`FileExistsError` naming it).
    """

    def __init__(self, path: PathLike, width: int, height: int, fps: Fraction) -> None:
        import av

        self.path = Path(path)
        suffix = self.path.suffix.lower()
        if suffix not in WRITE_CODECS:
            raise VideoError(f"{self.path}: cannot write '{suffix}' videos; use one of "
                             f"{', '.join(sorted(WRITE_CODECS))}")
        if self.path.exists():
            raise FileExistsError(f"{self.path}: already exists; refusing to overwrite it")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.path)  # what a killed writer of this same file left
        codec, pix_fmt, options = WRITE_CODECS[suffix]
        if pix_fmt == "yuv420p" and (width % 2 or height % 2):
            pix_fmt = "yuv444p"  # 4:2:0 needs even sides
        fd, tmp = new_temp(str(self.path), suffix=suffix)  # the suffix tells FFmpeg the container
        os.close(fd)
        self._tmp = Path(tmp)
        self.width, self.height = int(width), int(height)
        self.frames = 0
        self._container = None
        self._finished = False
        self._av = av
        try:
            self._container = av.open(str(self._tmp), mode="w")
            self._stream = self._container.add_stream(codec, rate=Fraction(fps))
            self._stream.width, self._stream.height, self._stream.pix_fmt = self.width, self.height, pix_fmt
            self._stream.options = dict(options)
        except BaseException:
            self.close(keep=False)
            raise

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self.height, self.width, 3) or rgb.dtype != np.uint8:
            raise VideoError(f"{self.path}: frame {self.frames} is {rgb.shape} {rgb.dtype}, expected "
                             f"({self.height}, {self.width}, 3) uint8")
        frame = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def finish(self) -> Path:
        """Flush the encoder and close the file, still under its temporary name (returned): a finished
        video that can be read (e.g. digested for its sealed sidecar) before :meth:`close` links it
        into place. A failed flush discards it."""
        container, self._container = self._container, None
        if container is None:
            raise VideoError(f"{self.path}: already closed")
        try:
            try:
                for packet in self._stream.encode():
                    container.mux(packet)
            finally:
                container.close()
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
        self._finished = True
        return self._tmp

    def close(self, keep: bool = True) -> Optional[Path]:
        """Flush and link the video into place (``keep``), or discard it; returns the path kept.

        The temporary file is gone afterwards whatever happens (a failed flush discards it)."""
        if keep and self._container is not None:
            self.finish()
        container, self._container = self._container, None
        if container is not None:  # discarded before it was finished
            try:
                container.close()
            except BaseException:
                self._tmp.unlink(missing_ok=True)
                raise
        if not keep or not self._finished:
            self._tmp.unlink(missing_ok=True)
            return None
        return link_into_place(self._tmp, self.path)  # fails if the path appeared meanwhile

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(keep=exc_type is None)
