"""``hog``: OpenCV's HOG people detector over a scale pyramid that reaches people ~40 px tall.

Why HOG: it ships inside OpenCV (the Dalal-Triggs SVM is compiled in), so nothing is downloaded
at run time. Its window is 64 x 128 px (a person ~100 px tall inside it), so smaller people are
found only on upscaled copies of the frame: the pyramid is anchored at ``upscale`` (the frame
itself), steps up by ``pyramid_scale`` to ``128 / min_height`` and down until the frame no
longer holds a window.

Why its own pyramid instead of ``detectMultiScale``: one ``HOGDescriptor.detect`` per level with
no grouping, then one non-maximum suppression over all levels. ``detectMultiScale``'s grouping
needs several hits per person, so a fine 1.05 step; a 1.2 step with a slightly negative SVM margin
(``min_score`` 0.4) catches the people between levels. On the generated hard street (768x576,
2 cores) that is ~4x faster at upscale 1 than the old ``detectMultiScale`` pass and finds more
people 90-250 px tall; the levels run on ``threads`` threads (OpenCV releases the GIL), ~2x more.
The upscaled levels cost most: ``min_height=40`` is ~13x slower than ``min_height=None``.

Why the size guard: OpenCV crashes natively (heap corruption, segfault) on some images smaller
than the window, e.g. 1x1, 16x16, 200x10 (sizes of at least 64 x 128 never did, with any
padding), so a level smaller than the window is never handed to it; a frame too small for every
level has no box.
"""
from __future__ import annotations

import math
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from torchreid_privacy.registry import DETECTORS

from .base import check_options, frame_size, make_boxes, nms, no_boxes, positive, refuse_arg, threshold_or

WINDOW = (64, 128)  # OpenCV's default people detector: width, height in pixels


def _opencv():
    try:
        import cv2
    except ImportError as exc:  # pragma: no cover - a dependency of the package
        raise RuntimeError(f"the HOG detector needs OpenCV ({exc}); or pass --detector file:det.txt") from None
    if not hasattr(cv2, "HOGDescriptor"):
        raise RuntimeError(f"OpenCV {cv2.__version__} has no HOGDescriptor (OpenCV 5 wheels dropped it): "
                           "install 'opencv-python-headless<5', or pass --detector file:det.txt")
    return cv2


class HogDetector:
    """OpenCV's default people detector on a scale pyramid, with non-maximum suppression.

    ``min_height``: smallest box height to find (px; ``None``: no upscaled levels beyond
    ``upscale``); the largest level is ``max(upscale, 128 / min_height)``. ``min_score``: the SVM
    margin squashed by a logistic (margin 0 -> 0.5) must reach it. ``win_stride``: window step in
    pixels of each level; ``pyramid_scale``: ratio between levels; ``nms_iou``: suppression overlap;
    ``threads``: levels searched at once (0: one per CPU core, at most 4).

    Usage::

        hog = HogDetector(min_height=40)
        boxes = hog(0, rgb)          # (N, 6) x1, y1, x2, y2, score, -1
    """

    name = "hog"

    def __init__(self, min_score: float = 0.4, upscale: float = 1.0, nms_iou: float = 0.3, win_stride: int = 8,
                 pyramid_scale: float = 1.2, min_height: Optional[float] = 40.0, padding: int = 8,
                 threads: int = 0) -> None:
        cv2 = _opencv()
        if not 0.0 <= float(min_score) < 1.0:
            raise ValueError(f"--detector-threshold: the HOG score threshold is in [0, 1), got {min_score}")
        positive("hog", "upscale", upscale)
        if not 0.0 < float(nms_iou) <= 1.0:
            raise ValueError(f"--detector: hog option nms_iou must be in (0, 1], got {nms_iou}")
        if int(win_stride) != win_stride or win_stride < 8 or win_stride % 8:
            raise ValueError(f"--detector: hog option win_stride must be a multiple of 8 (the HOG cell), "
                             f"got {win_stride}")
        if not float(pyramid_scale) > 1.0:
            raise ValueError(f"--detector: hog option pyramid_scale must be > 1, got {pyramid_scale}")
        if min_height is not None:
            positive("hog", "min_height", min_height)
        if int(padding) != padding or padding < 0 or padding % 8:
            raise ValueError(f"--detector: hog option padding must be a multiple of 8 >= 0, got {padding}")
        if int(threads) != threads or threads < 0:
            raise ValueError(f"--detector: hog option threads must be an integer >= 0, got {threads}")
        self._cv2 = cv2
        self.threads = int(threads) or min(4, os.cpu_count() or 1)
        self._local = threading.local()  # one HOGDescriptor per thread
        self._pool: Optional[ThreadPoolExecutor] = None
        self.min_score, self.upscale, self.nms_iou = float(min_score), float(upscale), float(nms_iou)
        self.win_stride, self.pyramid_scale, self.padding = int(win_stride), float(pyramid_scale), int(padding)
        self.min_height = None if min_height is None else float(min_height)
        # the SVM margin a window needs: logit(min_score), bounded so that 0 does not mean "every window"
        self._margin = max(-4.0, math.log(self.min_score / (1.0 - self.min_score))) if self.min_score > 0 else -4.0

    def settings(self) -> Dict[str, Any]:
        return {"min_score": self.min_score, "upscale": self.upscale, "min_height": self.min_height,
                "nms_iou": self.nms_iou, "win_stride": self.win_stride, "pyramid_scale": self.pyramid_scale,
                "padding": self.padding, "threads": self.threads}

    def levels(self, width: int, height: int) -> List[float]:
        """The scale factors searched on a ``width x height`` frame, largest first (none if too small).

        Anchored at ``upscale`` (the frame itself by default, never resampled there) and stepping by
        ``pyramid_scale`` up to ``128 / min_height`` and down until the frame no longer holds a window.
        """
        top = self.upscale if self.min_height is None else max(self.upscale, WINDOW[1] / self.min_height)
        up = math.ceil(math.log(top / self.upscale) / math.log(self.pyramid_scale) - 1e-6)
        out: List[float] = []
        k = up
        while True:
            s = self.upscale * self.pyramid_scale ** k
            if round(width * s) < WINDOW[0] or round(height * s) < WINDOW[1]:
                return out
            out.append(s)
            k -= 1

    def _descriptor(self):
        hog = getattr(self._local, "hog", None)
        if hog is None:
            hog = self._local.hog = self._cv2.HOGDescriptor()
            hog.setSVMDetector(self._cv2.HOGDescriptor_getDefaultPeopleDetector())
        return hog

    def _level(self, gray: np.ndarray, scale: float) -> Optional[Tuple[np.ndarray, np.ndarray]]:
        """Windows found on ``gray`` resized by ``scale``: frame-pixel corner boxes and SVM margins."""
        cv2 = self._cv2
        height, width = gray.shape
        size = (int(round(width * scale)), int(round(height * scale)))
        if size[0] < WINDOW[0] or size[1] < WINDOW[1]:  # the guard, at the exact size handed to OpenCV
            return None
        img = gray if size == (width, height) else cv2.resize(
            gray, size, interpolation=cv2.INTER_LINEAR if scale > 1 else cv2.INTER_AREA)
        found, weights = self._descriptor().detect(img, hitThreshold=self._margin, winStride=(self.win_stride,) * 2,
                                                   padding=(self.padding,) * 2)
        if not len(found):
            return None
        sx, sy = size[0] / width, size[1] / height
        xy = np.asarray(found, dtype=np.float64).reshape(-1, 2)
        return (np.concatenate([xy / [sx, sy], (xy + WINDOW) / [sx, sy]], axis=1),
                np.asarray(weights, dtype=np.float64).reshape(-1))

    def __call__(self, frame_index: int, rgb: np.ndarray) -> np.ndarray:
        width, height = frame_size(rgb)
        levels = self.levels(width, height)
        if not levels:  # smaller than one window at the largest level: OpenCV would crash
            return no_boxes()
        gray = self._cv2.cvtColor(np.ascontiguousarray(rgb), self._cv2.COLOR_RGB2GRAY)
        if self.threads > 1 and len(levels) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="hog")
            found = list(self._pool.map(lambda s: self._level(gray, s), levels))  # largest (slowest) first
        else:
            found = [self._level(gray, s) for s in levels]
        found = [f for f in found if f is not None]
        if not found:
            return no_boxes()
        xyxy = np.concatenate([f[0] for f in found])
        scores = 1.0 / (1.0 + np.exp(-np.concatenate([f[1] for f in found])))
        keep = nms(xyxy, scores, self.min_score, self.nms_iou)
        return make_boxes(xyxy[keep], scores[keep], width, height)


@DETECTORS.register("hog")
def hog(arg: Optional[str], *, threshold: Optional[float] = None, **options: Any) -> HogDetector:
    """``hog``: ``threshold`` is the score threshold (default 0.4); ``options``: :class:`HogDetector`'s."""
    refuse_arg("hog", arg)
    check_options("hog", HogDetector, options, reserved=("min_score",))
    score = threshold_or(threshold, 0.4)
    return HogDetector(min_score=min(score, 0.999), **options)
