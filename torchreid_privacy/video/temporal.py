"""Temporal safety: a tracked person stays covered through the frames its detector missed.

Why: a detector that finds a person on 9 frames of 10 publishes that person raw on the tenth,
and one raw frame is enough to recognise someone. A track (a MOT file's ids, or the
:class:`.tracklets.TrackLinker`'s) knows where its person was before and after, so:

- **gaps** of at most ``max_gap`` frames between two of a track's boxes are filled with boxes
  interpolated linearly between them;
- **ends**: ``extend`` frames before a track's first box and after its last get a box carried on
  at the track's own velocity (the mean step over its last ``VELOCITY_SPAN`` boxes), since a
  detector usually finds a person some frames after they enter and loses them before they leave;
- **margin**: every box (detected or filled) grows by ``margin`` x its width on the left and right
  and ``margin`` x its height at the top and bottom, for loose or jittered boxes.

The defaults were chosen by measured privacy recall on the generated hard street (README,
"Video"). Filling works on a whole video's boxes: the anonymizer detects in a first pass and
writes in a second.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Dict, Tuple

import numpy as np

from .mot import CONF, TRACK

VELOCITY_SPAN = 5  # boxes of a track's end its velocity is averaged over
FILLED = -1.0  # the score column of a box made here (detections keep their own score)


@dataclass(frozen=True)
class TemporalSettings:
    """``--max-gap``, ``--extend`` (frames) and ``--box-margin`` (share of the box's side)."""

    max_gap: int = 12
    extend: int = 4
    margin: float = 0.1

    def __post_init__(self) -> None:
        for flag, value in (("--max-gap", self.max_gap), ("--extend", self.extend)):
            if int(value) != value or value < 0:
                raise ValueError(f"{flag}: must be an integer >= 0 (frames), got {value}")
        if not 0.0 <= self.margin <= 2.0:
            raise ValueError(f"--box-margin: must be in [0, 2] (share of the box's width/height), got {self.margin}")

    def as_dict(self) -> dict:
        return asdict(self)


def _tracks(boxes: Dict[int, np.ndarray]) -> Dict[int, Dict[int, np.ndarray]]:
    out: Dict[int, Dict[int, np.ndarray]] = {}
    for frame, arr in boxes.items():
        for row in np.asarray(arr).reshape(-1, 6):
            if row[TRACK] >= 0:
                out.setdefault(int(row[TRACK]), {})[int(frame)] = row[:4]
    return out


def _velocity(frames: list, track: Dict[int, np.ndarray], tail: bool) -> np.ndarray:
    """Mean per-frame step of the box corners over the track's last (or first) boxes."""
    ends = frames[-VELOCITY_SPAN:] if tail else frames[:VELOCITY_SPAN]
    if len(ends) < 2 or ends[-1] == ends[0]:
        return np.zeros(4)
    return (track[ends[-1]] - track[ends[0]]) / (ends[-1] - ends[0])


def fill_tracks(boxes: Dict[int, np.ndarray], frames: int,
                settings: TemporalSettings = TemporalSettings()) -> Tuple[Dict[int, np.ndarray], Dict[str, int]]:
    """``boxes`` (``{frame: (N, 6)}``, tracks in column 5) plus the filled boxes, every box widened
    by the margin; frames outside ``[0, frames)`` get none. Returns the boxes and the counts of
    boxes ``interpolated`` and ``extended``. Filled boxes score ``FILLED`` and keep their track."""
    added: Dict[int, list] = {}
    counts = {"interpolated": 0, "extended": 0}
    for tid, track in _tracks(boxes).items():
        seen = sorted(track)
        for a, b in zip(seen, seen[1:]):
            if 1 < b - a <= settings.max_gap + 1:
                for f in range(a + 1, b):
                    t = (f - a) / (b - a)
                    added.setdefault(f, []).append([*((1 - t) * track[a] + t * track[b]), FILLED, tid])
                    counts["interpolated"] += 1
        for tail, anchor, step in ((False, seen[0], -1), (True, seen[-1], 1)):
            v = _velocity(seen, track, tail)
            for k in range(1, settings.extend + 1):
                f = anchor + step * k
                if not 0 <= f < frames or f in track:
                    break
                added.setdefault(f, []).append([*(track[anchor] + v * step * k), FILLED, tid])
                counts["extended"] += 1
    out: Dict[int, np.ndarray] = {}
    for f in set(boxes) | set(added):
        if not 0 <= f < frames:
            continue
        rows = [np.asarray(boxes.get(f, np.zeros((0, 6))), dtype=np.float64).reshape(-1, 6)]
        if f in added:
            rows.append(np.asarray(added[f], dtype=np.float64).reshape(-1, 6))
        out[f] = widen(np.concatenate(rows), settings.margin)
    return out, counts


def widen(boxes: np.ndarray, margin: float) -> np.ndarray:
    """A copy of the ``(N, 6)`` boxes grown by ``margin`` x width on each side and x height top and bottom."""
    out = np.array(boxes, dtype=np.float64).reshape(-1, 6)
    if margin:
        dw = margin * (out[:, 2] - out[:, 0])
        dh = margin * (out[:, 3] - out[:, 1])
        out[:, 0] -= dw
        out[:, 2] += dw
        out[:, 1] -= dh
        out[:, 3] += dh
    return out


def is_filled(boxes: np.ndarray) -> np.ndarray:
    """Which rows :func:`fill_tracks` made (no detector saw them)."""
    return np.asarray(boxes).reshape(-1, 6)[:, CONF] == FILLED
