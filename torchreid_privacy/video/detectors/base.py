"""What a pedestrian detector is, and the small helpers every detector shares.

Why a protocol and not a base class: a detector is anything with a ``name``, ``settings()`` and
``__call__(frame_index, rgb)``; a lambda wrapped in a tiny class, a MOT file or a CNN all fit,
and a plugin needs nothing from this package to be one. The helpers keep the output contract
(``(N, 6)`` float64 ``x1, y1, x2, y2, score, track`` inside the frame) and the error messages
(each names the command-line flag the value came from) the same for every detector.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Protocol, Sequence, Tuple, runtime_checkable

import numpy as np

from ..tracklets import box_iou  # noqa: F401 (one IoU for tracks, unions and tests)

FLAG = "--detector"
WEIGHTS_FLAG = "--detector-weights"
THRESHOLD_FLAG = "--detector-threshold"
COLUMNS = 6  # x1, y1, x2, y2, score, track


@runtime_checkable
class Detector(Protocol):
    """``detector(frame_index, rgb)`` -> float64 ``(N, 6)``: ``x1, y1, x2, y2, score, track`` in frame pixels.

    ``score`` is in [0, 1]; ``track`` is -1 unless the source has ids. Frames come in increasing
    index order, each once. A detector may also have ``prime(frames)``: a sample of the video's
    frames, given before the first call (e.g. to initialise a background model).
    """

    name: str

    def settings(self) -> Dict[str, Any]:
        ...

    def __call__(self, frame_index: int, rgb: np.ndarray) -> np.ndarray:
        ...


def no_boxes() -> np.ndarray:
    return np.zeros((0, COLUMNS), dtype=np.float64)


def frame_size(rgb: np.ndarray) -> Tuple[int, int]:
    """``(width, height)`` of an ``H x W x 3`` frame; refuses anything else (the caller fails closed)."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"a detector needs an H x W x 3 RGB frame, got {getattr(rgb, 'shape', type(rgb))}")
    return int(rgb.shape[1]), int(rgb.shape[0])


def clip_boxes(boxes: np.ndarray, width: int, height: int) -> Tuple[np.ndarray, int]:
    """``(kept, outside)``: boxes clipped to the frame, and how many had no area left inside it.

    Clipping never drops a box that still covers part of a pixel: it is the anonymizer's to hide.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, COLUMNS).copy()
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, width)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, height)
    inside = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    return boxes[inside], int((~inside).sum())


def make_boxes(xyxy: np.ndarray, scores: np.ndarray, width: int, height: int,
               tracks: Optional[np.ndarray] = None) -> np.ndarray:
    """The ``(N, 6)`` output from corner boxes and scores, clipped to the frame (empty boxes dropped:
    a detector's own box outside the frame is an artefact of its window or padding, not a person)."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.clip(np.asarray(scores, dtype=np.float64).reshape(-1), 0.0, 1.0)
    tracks = -np.ones(len(xyxy)) if tracks is None else np.asarray(tracks, dtype=np.float64).reshape(-1)
    return clip_boxes(np.concatenate([xyxy, scores[:, None], tracks[:, None]], axis=1), width, height)[0]


def nms(xyxy: np.ndarray, scores: np.ndarray, min_score: float, iou: float) -> np.ndarray:
    """Indices kept by OpenCV's non-maximum suppression (boxes below ``min_score`` dropped)."""
    import cv2

    if len(xyxy) == 0:
        return np.zeros(0, dtype=np.int64)
    rects = [[float(x1), float(y1), float(x2 - x1), float(y2 - y1)] for x1, y1, x2, y2 in np.asarray(xyxy)[:, :4]]
    keep = cv2.dnn.NMSBoxes(rects, [float(s) for s in scores], float(min_score), float(iou))
    return np.asarray(keep, dtype=np.int64).reshape(-1)


# ------------------------------------------------------------------ spec arguments and values

def refuse_arg(name: str, arg: Optional[str]) -> None:
    """``NAME:ARG`` given to a detector that takes no argument."""
    if arg is not None:
        raise ValueError(f"{FLAG}: '{name}' takes no argument, got '{name}:{arg}'")


def require_arg(name: str, arg: Optional[str], what: str) -> str:
    """The ``ARG`` of ``NAME:ARG``; refused when missing or empty."""
    if not arg:
        raise ValueError(f"{FLAG}: '{name}' needs an argument: {name}:{what}")
    return arg


def threshold_or(threshold: Optional[float], default: float) -> float:
    """``--detector-threshold`` checked (a score in [0, 1]), or the detector's own default."""
    if threshold is None:
        return float(default)
    value = float(threshold)
    if not 0.0 <= value <= 1.0 or math.isnan(value):
        raise ValueError(f"{THRESHOLD_FLAG}: a detector score threshold is in [0, 1], got {threshold}")
    return value


def check_options(name: str, target: Any, options: Dict[str, Any], reserved: Sequence[str] = ()) -> None:
    """Options for detector ``name`` must be keyword arguments of ``target`` (its class), other than
    ``reserved`` (those set from a flag, e.g. the score threshold from ``--detector-threshold``)."""
    import inspect

    params = inspect.signature(target).parameters
    known = [k for k, p in params.items() if k not in reserved and k != "self"
             and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{FLAG}: '{name}' has no option {', '.join(unknown)} (its options: {', '.join(known)})")


def positive(name: str, option: str, value: float, *, allow_zero: bool = False) -> float:
    """A detector option that must be a positive finite number (``ValueError`` naming ``--detector``)."""
    v = float(value)
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        raise ValueError(f"{FLAG}: {name} option {option} must be {'>= 0' if allow_zero else '> 0'}, got {value}")
    return v


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (error messages stay one line)."""
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else ""


def forward_prime(parts: Sequence[Any], frames: Sequence[np.ndarray]) -> None:
    for part in parts:
        prime = getattr(part, "prime", None)
        if callable(prime):
            prime(frames)
