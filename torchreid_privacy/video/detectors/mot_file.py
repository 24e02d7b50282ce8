"""``file:PATH``: the boxes of a MOTChallenge ``det.txt`` / ``gt.txt``, looked up by frame.

Why: users with a better detector (or ground truth) than the built-in ones run it offline and
hand its boxes over; ``--detections FILE`` is an alias of ``--detector file:FILE``. Boxes reaching
outside the frame are clipped and kept; boxes with no pixel inside it are counted (``outside``,
``outside_frames``) for the pipeline to report: boxes made for another resolution hide nothing.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from ..mot import TRACK, MotFormatError, read_mot
from torchreid_privacy.registry import DETECTORS

from .base import clip_boxes, frame_size, no_boxes, require_arg


class FileDetections:
    """The boxes of a MOT file (``read_mot(path, evaluation=False)``: every person-like row).

    ``skip_bad_boxes``: rows with NaN/inf or empty boxes are skipped and listed in ``skipped``
    instead of refusing the file. Parse errors are :class:`~torchreid_privacy.video.mot.MotFormatError`
    naming ``file:line``; the caller names its flag (``--detector`` or ``--detections``).

    Usage::

        det = FileDetections("det.txt")
        boxes = det(0, rgb)          # frame 1 of the file, clipped to the frame
        det.outside, det.outside_frames
    """

    def __init__(self, path: str, skip_bad_boxes: bool = False) -> None:
        self.path = str(path)
        self.name = f"file:{self.path}"
        self.skip_bad_boxes = bool(skip_bad_boxes)
        self.skipped: List[str] = []
        self.boxes: Dict[int, np.ndarray] = read_mot(self.path, evaluation=False, skip_bad_boxes=self.skip_bad_boxes,
                                                     skipped=self.skipped)
        if not any(len(b) for b in self.boxes.values()):
            raise MotFormatError(f"{self.path}: holds no box")
        self.has_tracks = any(bool((b[:, TRACK] >= 0).any()) for b in self.boxes.values())
        self.last_frame = max(self.boxes)
        self.outside = 0  # boxes with no pixel inside their frame
        self.outside_frames: List[int] = []  # the frames that had such boxes, in call order

    def settings(self) -> Dict[str, Any]:
        return {"file": self.path, "skip_bad_boxes": self.skip_bad_boxes, "skipped": len(self.skipped)}

    def __call__(self, frame_index: int, rgb: Optional[np.ndarray] = None) -> np.ndarray:
        boxes = self.boxes.get(int(frame_index))
        if boxes is None:
            return no_boxes()
        if rgb is None:  # no frame to clip to (a look-up of the file alone)
            return boxes.copy()
        width, height = frame_size(rgb)
        kept, outside = clip_boxes(boxes, width, height)
        if outside:
            self.outside += outside
            self.outside_frames.append(int(frame_index))
        return kept


@DETECTORS.register("file")
def mot_file(arg: Optional[str], *, skip_bad_boxes: bool = False) -> FileDetections:
    """``file:PATH``: every box of the file (no threshold: what its detector boxed is hidden)."""
    return FileDetections(require_arg("file", arg, "det.txt"), skip_bad_boxes=skip_bad_boxes)
