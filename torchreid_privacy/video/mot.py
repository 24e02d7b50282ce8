"""MOTChallenge box files: ``det.txt`` (detections) and ``gt.txt`` (ground-truth tracks).

One box per line, comma-separated: ``frame, id, left, top, width, height, conf[, x, y, z]``
(det.txt: id -1, conf the detector's score; a tracker's result file: its track ids, x y z -1) or
``frame, id, left, top, width, height, flag, class, visibility`` (gt.txt: flag 0 = ignore in the
tracking metrics, class 1 = pedestrian, :data:`PERSON_CLASSES` the classes that are people).
Frames are 1-based in the file and 0-based here, as :func:`torchreid_privacy.video.io.read_frames`
counts them.

A line that cannot be used is never dropped quietly: :func:`read_mot` raises
:class:`MotFormatError` naming the file and line, or (``skip_bad_boxes``) skips it, lists it and
logs the count.
"""
from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple, Union

import numpy as np

log = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]
PEDESTRIAN = 1  # MOT17/MOT20 gt.txt class of a walking person
# MOT17/MOT20 gt.txt classes that are people: pedestrian, person on vehicle, static person,
# distractor, reflection (the others are vehicles, occluders and other non-persons)
PERSON_CLASSES = frozenset({1, 2, 7, 8, 12})
NO_CLASS = -1  # column 8 of a det.txt or tracker-result row (its x world coordinate), not a gt.txt class

# columns of the arrays this module returns
X1, Y1, X2, Y2, CONF, TRACK = range(6)
_COLUMNS = ("frame", "id", "left", "top", "width", "height", "conf", "class")


class MotFormatError(ValueError):
    """A MOT file line that cannot be parsed; the message names the file and line."""


def read_mot(path: PathLike, *, evaluation: bool = True, skip_bad_boxes: bool = False,
             skipped: Optional[list] = None) -> Dict[int, np.ndarray]:
    """Boxes per 0-based frame: ``{frame: float array (N, 6) of x1, y1, x2, y2, conf, track}``.

    Which gt.txt rows are kept depends on what the boxes are for:

    - ``evaluation=True`` (tracking metrics, ground-truth tracklets): the benchmark's own rule,
      only rows with a non-zero flag and class 1 (pedestrian);
    - ``evaluation=False`` (anonymizing): every row of a person class (:data:`PERSON_CLASSES`),
      whatever its flag. The flag only says whether the benchmark scores a tracker on the box: a
      static person (class 7), a person on a vehicle (2), a distractor (8) or a reflection (12) is
      still a person whose pixels must be hidden, as is a pedestrian flagged 0. Rows of other
      classes (cars, occluders, ...) are left out, and counted in a log line.

    det.txt rows (id -1, or fewer than 8 columns) and tracker-result rows (column 8 is -1, the x
    world coordinate, not a class) are always kept, with their own confidence; a gt.txt row's
    confidence is 1. A row's track is its id, -1 for a detection. Boxes keep file order within a
    frame.

    A line that cannot be used (too few columns, a value that is not a number, NaN or infinite,
    a frame that is not a positive integer, a width or height <= 0, bytes that are not UTF-8)
    raises :class:`MotFormatError` ``"{path}:{line}: what is wrong"``. With ``skip_bad_boxes``
    such lines are skipped instead: each message is appended to ``skipped`` (when given) and one
    warning logs their count.
    """
    p = Path(path)
    if not p.is_file():
        raise MotFormatError(f"{p}: no such MOT box file")
    rows: List[Tuple[int, float, float, float, float, float, int]] = []
    bad: List[str] = []
    other_classes = 0
    with open(p, "rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            try:
                row = _parse_line(raw, lineno == 1)
            except _BadRow as exc:
                message = f"{p}:{lineno}: {exc}"
                if not skip_bad_boxes:
                    raise MotFormatError(message) from None
                bad.append(message)
                continue
            if row is None:  # blank or comment
                continue
            frame, track, x1, y1, x2, y2, conf, cls = row
            if cls is not None:  # a gt.txt row: conf is its flag
                if evaluation:
                    keep = conf != 0 and cls == PEDESTRIAN
                else:
                    keep = cls in PERSON_CLASSES
                    other_classes += cls not in PERSON_CLASSES
                if not keep:
                    continue
                conf = 1.0
            rows.append((frame, x1, y1, x2, y2, conf, track))
    if skipped is not None:
        skipped.extend(bad)
    if bad:
        log.warning("%s: skipped %d bad box line(s); the first: %s", p, len(bad), bad[0])
    if other_classes:
        log.info("%s: left out %d box(es) of classes that are not people (vehicles, occluders, ...)", p, other_classes)
    out: Dict[int, list] = {}
    for frame, *box in rows:
        out.setdefault(frame, []).append(box)
    return {f: np.asarray(b, dtype=np.float64).reshape(-1, 6) for f, b in sorted(out.items())}


class _BadRow(Exception):
    """Why a line cannot be used (``read_mot`` adds the file and line)."""


def _parse_line(raw: bytes, first: bool):
    """``(frame0, track, x1, y1, x2, y2, conf, cls)`` of one line (``conf`` a gt.txt row's flag,
    ``cls`` None for a detection), or None for a blank or comment line; :class:`_BadRow` saying
    what is wrong."""
    try:
        text = raw.decode("utf-8-sig" if first else "utf-8").strip()
    except UnicodeDecodeError as exc:
        raise _BadRow(f"not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte {exc.start + 1} of the line)") from None
    if not text or text.startswith("#"):
        return None
    parts = [v.strip() for v in text.replace(";", ",").split(",")]
    if len(parts) < 6:
        raise _BadRow(f"expected at least 6 comma-separated values (frame, id, left, top, width, height, ...), "
                      f"got {len(parts)}")
    values = [_number(v, i) for i, v in enumerate(parts)]
    gt = len(values) >= 8 and values[1] >= 0 and values[7] != NO_CLASS  # NaN compares False: checked below
    used = 8 if gt else min(len(values), 7)  # a detection's x, y, z (and a gt row's visibility) are not used
    for i in range(used):
        if not math.isfinite(values[i]):
            name = "flag" if gt and i == 6 else _COLUMNS[i]
            raise _BadRow(f"{name} (column {i + 1}) is {parts[i]!r}, not a finite number")
    frame, track, left, top, w, h = values[:6]
    if frame < 1 or frame != int(frame):
        raise _BadRow(f"frame (column 1) must be a positive integer (1-based), got {parts[0]!r}")
    if track != int(track):
        raise _BadRow(f"id (column 2) must be an integer (-1 for a detection), got {parts[1]!r}")
    if w <= 0 or h <= 0:
        raise _BadRow(f"width and height (columns 5, 6) must be positive, got {parts[4]!r}, {parts[5]!r}")
    x2, y2 = left + w, top + h
    if not (math.isfinite(x2) and math.isfinite(y2)):
        raise _BadRow(f"the box's right or bottom edge is not a finite number (left {parts[2]!r} + width "
                      f"{parts[4]!r}, top {parts[3]!r} + height {parts[5]!r})")
    conf = values[6] if len(values) > 6 else 1.0  # a gt.txt row's flag
    cls = None
    if gt:
        if values[7] != int(values[7]):
            raise _BadRow(f"class (column 8) must be an integer, got {parts[7]!r}")
        cls = int(values[7])
    return int(frame) - 1, (int(track) if track >= 0 else -1), left, top, x2, y2, conf, cls


def _number(text: str, column: int) -> float:
    name = _COLUMNS[column] if column < len(_COLUMNS) else "value"
    if not text:
        raise _BadRow(f"{name} (column {column + 1}) is empty")
    try:
        return float(text)
    except ValueError:
        raise _BadRow(f"{name} (column {column + 1}) is not a number: {text[:40]!r}") from None


def write_mot(path: PathLike, boxes: Dict[int, np.ndarray], gt: bool = False) -> Path:
    """Write ``{frame: (N, 6) boxes}`` as det.txt (``gt=False``: a box's track, if any, is kept as
    its id, :func:`read_mot` reads it back) or gt.txt lines; never overwrites. A box that is not
    finite raises ValueError (nothing written): the file could not be read back."""
    from torchreid_privacy.utils.atomic import write_new

    lines = []
    for frame in sorted(boxes):
        arr = np.asarray(boxes[frame], dtype=np.float64).reshape(-1, 6)
        if not np.isfinite(arr).all():
            raise ValueError(f"{path}: frame {frame} has a box that is not finite: {arr.tolist()}")
        for x1, y1, x2, y2, conf, track in arr:
            head = f"{frame + 1},{int(track)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f}"
            lines.append(f"{head},1,{PEDESTRIAN},1" if gt else f"{head},{conf:.4f},-1,-1,-1")
    return write_new(path, ("\n".join(lines) + "\n").encode("utf-8"))


def pixel_boxes(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(N, 4)`` int64 whole-pixel boxes covering the ``(N, 4+)`` float boxes, clipped to the frame.

    The top-left is floored and the bottom-right ceiled, so no pixel a detector boxed is left out:
    what ``anonymize`` replaces and ``make-data`` crops. A box outside the frame becomes empty.
    A NaN or infinite coordinate raises ValueError (it has no pixel to cover, and casting it
    would give an arbitrary integer).
    """
    b = np.asarray(boxes, dtype=np.float64)
    if b.ndim != 2 or b.shape[1] < 4:
        raise ValueError(f"boxes must be an (N, 4+) array of x1, y1, x2, y2, got shape {b.shape}")
    b = b[:, :4]
    bad = ~np.isfinite(b).all(axis=1)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise ValueError(f"{int(bad.sum())} box(es) with a coordinate that is not a finite number, e.g. box {i}: "
                         f"{b[i].tolist()}")
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
