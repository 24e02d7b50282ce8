"""Pedestrian detectors, registered by name in ``DETECTORS`` and built from a ``--detector`` spec.

- :mod:`.base`: the :class:`Detector` protocol and the helpers that keep its output contract;
- :mod:`.hog`: ``hog``, OpenCV's HOG people detector over a pyramid down to ~40 px people;
- :mod:`.motion`: ``motion``, background subtraction for fixed cameras;
- :mod:`.torchvision_models`: ``torchvision:NAME``, a COCO detector of torchvision (person boxes);
- :mod:`.onnx_yolo`: ``onnx:FILE``, a YOLOv8/11 model exported to ONNX, run by onnxruntime;
- :mod:`.mot_file`: ``file:PATH``, the boxes of a MOT det.txt / gt.txt;
- :mod:`.union`: ``A+B``, the union of several detectors' boxes;
- :mod:`.build`: :func:`build_detector` and :data:`DEFAULT_DETECTOR`.

A new detector is one module with ``@DETECTORS.register("name")`` on its factory (see
:mod:`.build`); the registry-driven tests then run it automatically.

Usage::

    from torchreid_privacy.video.detectors import build_detector
    detector = build_detector("motion+hog")
"""
from .base import Detector, box_iou, clip_boxes, no_boxes
from .build import DEFAULT_DETECTOR, DEFAULT_OPTIONS, build_detector, parse_spec
from .hog import HogDetector
from .mot_file import FileDetections
from .motion import MotionDetector
from .onnx_yolo import OnnxYoloDetector, letterbox
from .torchvision_models import TorchvisionDetector, detection_models, person_boxes
from .union import UnionDetector, merge_boxes

__all__ = ["DEFAULT_DETECTOR", "DEFAULT_OPTIONS", "Detector", "FileDetections", "HogDetector", "MotionDetector", "OnnxYoloDetector",
           "TorchvisionDetector", "UnionDetector", "box_iou", "build_detector", "clip_boxes", "detection_models",
           "letterbox", "merge_boxes", "no_boxes", "parse_spec", "person_boxes"]
