"""``onnx:FILE``: a YOLO-family detector exported to ONNX (YOLOv8/YOLO11 layout), run by onnxruntime.

Why: the strongest small-person detectors are YOLO models, and their users export them to
ONNX (``yolo export format=onnx``); onnxruntime runs that file without the training framework.
The frame is letterboxed to the model's input size (aspect kept, grey 114 padding), and the
output, ``1 x (4 + classes) x N`` (or its transpose ``1 x N x (4 + classes)``): box centre, size
in input pixels, then one score per class, is cut to class 0 (COCO's person), suppressed (NMS)
and mapped back through the letterbox into frame pixels.
"""
from __future__ import annotations

import ast
from typing import Any, Dict, Optional, Tuple

import numpy as np

from torchreid_privacy.registry import DETECTORS

from .base import (FLAG, check_options, first_line, frame_size, make_boxes, nms, no_boxes, require_arg,
                   threshold_or)

DEFAULT_SIZE = 640  # input side of a model exported with a dynamic size
PAD_VALUE = 114  # the letterbox grey YOLO models are trained with
PERSON = 0  # COCO class index of "person" in YOLO's 80-class head


def letterbox(rgb: np.ndarray, size: Tuple[int, int]) -> Tuple[np.ndarray, float, Tuple[float, float]]:
    """``rgb`` resized into ``size`` = (width, height) keeping its aspect, padded with grey.

    Returns the ``(1, 3, H, W)`` float32 input in [0, 1], the scale and the (left, top) offset:
    a frame point ``p`` is at ``p * scale + offset`` in the input.
    """
    import cv2

    h, w = rgb.shape[:2]
    tw, th = size
    scale = min(tw / w, th / h)
    nw, nh = max(1, int(round(w * scale))), max(1, int(round(h * scale)))
    left, top = (tw - nw) // 2, (th - nh) // 2
    canvas = np.full((th, tw, 3), PAD_VALUE, dtype=np.uint8)
    canvas[top:top + nh, left:left + nw] = cv2.resize(np.ascontiguousarray(rgb), (nw, nh),
                                                      interpolation=cv2.INTER_LINEAR)
    x = canvas.astype(np.float32).transpose(2, 0, 1)[None] / np.float32(255.0)
    return np.ascontiguousarray(x), scale, (float(left), float(top))


class OnnxYoloDetector:
    """A YOLO ONNX file; ``threshold``: smallest person score kept; ``nms_iou``: suppression overlap.

    ``classes``: number of classes of the head (default: the file's ``names`` metadata, as
    Ultralytics writes it, else inferred as the smaller output axis minus 4).

    Usage::

        det = OnnxYoloDetector("yolo11n.onnx")
        boxes = det(0, rgb)
    """

    def __init__(self, path: str, threshold: float = 0.25, nms_iou: float = 0.45, device: str = "cpu",
                 classes: Optional[int] = None) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise ValueError(f"{FLAG} onnx:{path}: needs onnxruntime: pip install onnxruntime "
                             "(or the package's [export] extra)") from None
        self.path, self.threshold, self.nms_iou = str(path), float(threshold), float(nms_iou)
        self.name = f"onnx:{self.path}"
        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        try:
            self.session = ort.InferenceSession(self.path, providers=providers)
        except Exception as exc:  # missing file, not a protobuf, an invalid graph
            raise ValueError(f"{FLAG} onnx:{self.path}: not a readable ONNX model "
                             f"({type(exc).__name__}: {first_line(exc)})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4:
            raise ValueError(f"{FLAG} onnx:{self.path}: expected one image input (1 x 3 x H x W), got "
                             f"{[(i.name, i.shape) for i in inputs]}")
        self.input_name = inputs[0].name
        h, w = inputs[0].shape[2:]
        self.size = (w if isinstance(w, int) and w > 0 else DEFAULT_SIZE,
                     h if isinstance(h, int) and h > 0 else DEFAULT_SIZE)
        declared = outputs[0].shape
        if declared is not None and len(declared) != 3:
            raise ValueError(f"{FLAG} onnx:{self.path}: expected a 1 x (4 + classes) x N output (YOLOv8/11), got "
                             f"rank {len(declared)} {declared}")
        self.classes = classes if classes is not None else _classes_from_metadata(self.session)

    def settings(self) -> Dict[str, Any]:
        return {"file": self.path, "threshold": self.threshold, "nms_iou": self.nms_iou,
                "input_size": list(self.size), "classes": self.classes}

    def _rows(self, out: np.ndarray) -> np.ndarray:
        """The ``(N, 4 + classes)`` rows of a ``1 x C x N`` or ``1 x N x C`` output."""
        if out.ndim != 3 or out.shape[0] != 1:
            raise ValueError(f"{FLAG} onnx:{self.path}: expected a 1 x (4 + classes) x N output, got {out.shape}")
        _, a, b = out.shape
        if self.classes is not None:
            channels_first = a == 4 + self.classes
        else:
            channels_first = a <= b
        rows = out[0].T if channels_first else out[0]
        if rows.shape[1] < 5:
            raise ValueError(f"{FLAG} onnx:{self.path}: an output row needs 4 box values and class scores, got "
                             f"{rows.shape[1]} values")
        return rows

    def __call__(self, frame_index: int, rgb: np.ndarray) -> np.ndarray:
        width, height = frame_size(rgb)
        x, scale, (left, top) = letterbox(rgb, self.size)
        out = np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float64)
        rows = self._rows(out)
        scores = rows[:, 4 + PERSON]
        keep = (scores >= self.threshold) & np.isfinite(rows[:, :5]).all(axis=1)
        rows, scores = rows[keep], scores[keep]
        if not len(rows):
            return no_boxes()
        cx, cy, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
        xyxy = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
        xyxy = (xyxy - [left, top, left, top]) / scale
        kept = nms(xyxy, scores, self.threshold, self.nms_iou)
        return make_boxes(xyxy[kept], scores[kept], width, height)


def _classes_from_metadata(session) -> Optional[int]:
    """The class count of an Ultralytics export (its ``names`` metadata: ``{0: 'person', ...}``)."""
    try:
        names = session.get_modelmeta().custom_metadata_map.get("names")
        return len(ast.literal_eval(names)) if names else None
    except (ValueError, SyntaxError, TypeError):
        return None



@DETECTORS.register("onnx")
def onnx_yolo(arg: Optional[str], *, threshold: Optional[float] = None, device: str = "cpu",
              **options: Any) -> OnnxYoloDetector:
    """``onnx:FILE``: ``threshold`` default 0.25; ``options``: :class:`OnnxYoloDetector`'s."""
    path = require_arg("onnx", arg, "FILE.onnx")
    check_options("onnx", OnnxYoloDetector, options, reserved=("path", "threshold", "device"))
    return OnnxYoloDetector(path, threshold=threshold_or(threshold, 0.25), device=device, **options)
