"""The old home of the pedestrian detectors; they live in :mod:`torchreid_privacy.video.detectors` now.

Kept so that ``from torchreid_privacy.video.detect import HogDetector, FileDetections, make_detector,
Detector`` goes on working; new code imports from :mod:`.detectors` and builds detectors from a
spec with :func:`~.detectors.build_detector`.
"""
from __future__ import annotations

from typing import Any, Optional

from .detectors import Detector, FileDetections, HogDetector, build_detector

__all__ = ["Detector", "FileDetections", "HogDetector", "build_detector", "make_detector"]


def make_detector(detections: Optional[str] = None, **hog_kwargs: Any) -> Detector:
    """A MOT file's boxes when ``detections`` is given, else a :class:`HogDetector` with ``hog_kwargs``."""
    return FileDetections(detections) if detections else HogDetector(**hog_kwargs)
