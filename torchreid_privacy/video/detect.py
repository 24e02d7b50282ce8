"""Pedestrian boxes per frame: OpenCV's HOG people detector, or the boxes of a MOT file.

Why HOG: it ships inside OpenCV (Dalal-Triggs SVM weights compiled in), so nothing is
downloaded at run time. It finds upright people of at least ~128 px height (the frame is
upscaled for smaller ones) and is weaker than a CNN detector: users with better detections
pass them as a MOTChallenge ``det.txt`` (``--detections``).
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import numpy as np

from .mot import read_mot

Detector = Callable[[int, np.ndarray], np.ndarray]  # (frame index, RGB frame) -> (N, 6) boxes


class HogDetector:
    """OpenCV's default people detector with non-maximum suppression.

    Returns float ``(N, 6)`` arrays of ``x1, y1, x2, y2, score, -1`` in frame pixels; ``score``
    is the SVM margin squashed to (0, 1) so that the tracker's thresholds apply unchanged.
    """

    name = "opencv-hog"

    def __init__(self, min_score: float = 0.5, upscale: float = 1.0, nms_iou: float = 0.4,
                 win_stride: int = 8, pyramid_scale: float = 1.05) -> None:
        try:
            import cv2
        except ImportError as exc:  # pragma: no cover - a dependency of the package
            raise RuntimeError(f"the HOG detector needs OpenCV ({exc}); or pass --detections FILE") from None
        if not hasattr(cv2, "HOGDescriptor"):
            raise RuntimeError(f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 wheels dropped it): "
                               "install 'opencv-python-headless<5', or pass --detections det.txt")
        if not 0.0 <= min_score < 1.0:
            raise ValueError(f"min_score: must be in [0, 1), got {min_score}")
        if upscale <= 0:
            raise ValueError(f"upscale: must be > 0, got {upscale}")
        self._cv2 = cv2
        self._hog = cv2.HOGDescriptor()
        self._hog.setSVMDetector(cv2.HOGDescriptor_getDefaultPeopleDetector())
        self.min_score, self.upscale, self.nms_iou = float(min_score), float(upscale), float(nms_iou)
        self.win_stride, self.pyramid_scale = int(win_stride), float(pyramid_scale)

    def settings(self) -> Dict[str, float]:
        return {"min_score": self.min_score, "upscale": self.upscale, "nms_iou": self.nms_iou,
                "win_stride": self.win_stride, "pyramid_scale": self.pyramid_scale}

    def __call__(self, frame_index: int, rgb: np.ndarray) -> np.ndarray:
        cv2 = self._cv2
        img = rgb if self.upscale == 1.0 else cv2.resize(rgb, None, fx=self.upscale, fy=self.upscale,
                                                         interpolation=cv2.INTER_LINEAR)
        gray = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)
        rects, weights = self._hog.detectMultiScale(gray, winStride=(self.win_stride, self.win_stride),
                                                    padding=(8, 8), scale=self.pyramid_scale)
        if len(rects) == 0:
            return np.zeros((0, 6))
        weights = np.asarray(weights, dtype=np.float64).reshape(-1)
        scores = 1.0 / (1.0 + np.exp(-weights))  # SVM margin 0 -> 0.5
        keep = cv2.dnn.NMSBoxes([list(map(int, r)) for r in rects], scores.tolist(), self.min_score, self.nms_iou)
        keep = np.asarray(keep, dtype=np.int64).reshape(-1)
        if keep.size == 0:
            return np.zeros((0, 6))
        r = np.asarray(rects, dtype=np.float64)[keep] / self.upscale
        h, w = rgb.shape[:2]
        x1, y1 = np.clip(r[:, 0], 0, w), np.clip(r[:, 1], 0, h)
        x2, y2 = np.clip(r[:, 0] + r[:, 2], 0, w), np.clip(r[:, 1] + r[:, 3], 0, h)
        return np.stack([x1, y1, x2, y2, scores[keep], -np.ones(len(keep))], axis=1)


class FileDetections:
    """The boxes of a MOTChallenge det.txt / gt.txt file, looked up by frame index."""

    name = "mot-file"

    def __init__(self, path: str) -> None:
        self.path = str(path)
        self.boxes = read_mot(path)
        if not self.boxes:
            raise ValueError(f"--detections: {path} holds no box")

    def settings(self) -> Dict[str, str]:
        return {"file": self.path}

    def __call__(self, frame_index: int, rgb: Optional[np.ndarray] = None) -> np.ndarray:
        boxes = self.boxes.get(frame_index)
        if boxes is None:
            return np.zeros((0, 6))
        if rgb is not None:  # boxes reaching outside the frame are clipped to it
            h, w = rgb.shape[:2]
            boxes = boxes.copy()
            boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
            boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
            boxes = boxes[(boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)]
        return boxes


def make_detector(detections: Optional[str] = None, **hog_kwargs) -> Detector:
    """A MOT file's boxes when ``detections`` is given, else the HOG detector."""
    return FileDetections(detections) if detections else HogDetector(**hog_kwargs)
