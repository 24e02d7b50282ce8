"""MOTChallenge box files: ``det.txt`` (detections) and ``gt.txt`` (ground-truth tracks).

One box per line, comma-separated: ``frame, id, left, top, width, height, conf[, x, y, z]``
(det.txt: id -1, conf the detector's score) or ``frame, id, left, top, width, height, flag,
class, visibility`` (gt.txt: flag 0 = ignore, class 1 = pedestrian). Frames are 1-based in
the file and 0-based here, as :func:`torchreid_privacy.video.io.read_frames` counts them.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterable, Union

import numpy as np

PathLike = Union[str, os.PathLike]
PEDESTRIAN = 1  # MOT17/MOT20 gt.txt class of a walking person

# columns of the arrays this module returns
X1, Y1, X2, Y2, CONF, TRACK = range(6)


class MotFormatError(ValueError):
    """A MOT file line that cannot be parsed; the message names the file and line."""


def read_mot(path: PathLike) -> Dict[int, np.ndarray]:
    """Boxes per 0-based frame: ``{frame: float array (N, 6) of x1, y1, x2, y2, conf, track}``.

    gt.txt rows with flag 0 or a class other than pedestrian are dropped; a det.txt row's
    track is -1. Boxes are kept in file order within a frame.
    """
    p = Path(path)
    if not p.is_file():
        raise MotFormatError(f"{p}: no such MOT box file")
    rows = []
    with open(p, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            parts = [v.strip() for v in text.replace(";", ",").split(",")]
            if len(parts) < 6:
                raise MotFormatError(f"{p}:{lineno}: expected at least 6 comma-separated values "
                                     f"(frame, id, left, top, width, height, ...), got {len(parts)}")
            try:
                values = [float(v) for v in parts]
            except ValueError:
                raise MotFormatError(f"{p}:{lineno}: not a number in '{text[:60]}'") from None
            frame, track, left, top, w, h = values[:6]
            if frame < 1 or frame != int(frame):
                raise MotFormatError(f"{p}:{lineno}: frame must be a positive integer (1-based), got {parts[0]}")
            if w <= 0 or h <= 0:
                raise MotFormatError(f"{p}:{lineno}: width and height must be positive, got {parts[4]}, {parts[5]}")
            conf = values[6] if len(values) > 6 else 1.0
            if track >= 0 and len(values) >= 8:  # gt.txt: flag, class
                if values[6] == 0 or int(values[7]) != PEDESTRIAN:
                    continue
                conf = 1.0
            rows.append((int(frame) - 1, left, top, left + w, top + h, conf, track if track >= 0 else -1))
    out: Dict[int, list] = {}
    for frame, *box in rows:
        out.setdefault(frame, []).append(box)
    return {f: np.asarray(b, dtype=np.float64).reshape(-1, 6) for f, b in sorted(out.items())}


def write_mot(path: PathLike, boxes: Dict[int, np.ndarray], gt: bool = False) -> Path:
    """Write ``{frame: (N, 6) boxes}`` as det.txt (``gt=False``) or gt.txt lines; never overwrites."""
    from torchreid_privacy.utils.atomic import write_new

    lines = []
    for frame in sorted(boxes):
        for x1, y1, x2, y2, conf, track in np.asarray(boxes[frame]).reshape(-1, 6):
            head = f"{frame + 1},{int(track)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f}"
            lines.append(f"{head},1,{PEDESTRIAN},1" if gt else f"{head},{conf:.4f},-1,-1,-1")
    return write_new(path, ("\n".join(lines) + "\n").encode("utf-8"))


def pixel_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(N, 4)`` int64 whole-pixel boxes covering the ``(N, 4+)`` float boxes, clipped to the frame.

    The top-left is floored and the bottom-right ceiled, so no pixel a detector boxed is left out:
    what ``anonymize`` replaces and ``make-data`` crops. A box outside the frame becomes empty.
    """
    b = np.asarray(boxes, dtype=np.float64)[:, :4]
    top_left = np.clip(np.floor(b[:, :2]), 0, [width, height])
    bottom_right = np.clip(np.ceil(b[:, 2:]), 0, [width, height])
    return np.concatenate([top_left, bottom_right], axis=1).astype(np.int64)


def tracks_of(boxes: Dict[int, np.ndarray]) -> Dict[int, Dict[int, np.ndarray]]:
    """``{track: {frame: xyxy}}`` of boxes that carry a track id (gt.txt)."""
    out: Dict[int, Dict[int, np.ndarray]] = {}
    for frame, arr in boxes.items():
        for row in arr:
            if row[TRACK] >= 0:
                out.setdefault(int(row[TRACK]), {})[frame] = row[:4].copy()
    return out


def count_boxes(boxes: Iterable[np.ndarray]) -> int:
    return int(sum(len(b) for b in boxes))
