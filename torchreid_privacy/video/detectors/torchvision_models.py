"""``torchvision:NAME``: a COCO detector of ``torchvision.models.detection``, its person boxes only.

Why: CNN detectors find people HOG and background subtraction miss (small, occluded, standing
still, moving camera), and torchvision ships several with one API (Faster R-CNN, RetinaNet,
FCOS, SSD). Their weights come from ``--detector-weights FILE`` (a state dict saved with
``torch.save``) or from torchvision's own weights API, which downloads into torch's cache: on a
machine without network that fails, and the error says to pass ``--detector-weights``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import numpy as np

from torchreid_privacy.registry import DETECTORS

from .base import (FLAG, WEIGHTS_FLAG, check_options, first_line, frame_size, make_boxes, no_boxes, require_arg,
                   threshold_or)

COCO_PERSON = 1  # torchvision's COCO category id of "person" (0 is background)


def detection_models() -> List[str]:
    """Names accepted by ``torchvision:NAME``."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models.detection))


def person_boxes(boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray, threshold: float,
                 width: int, height: int, person: int = COCO_PERSON) -> np.ndarray:
    """The ``(N, 6)`` boxes of class ``person`` scoring at least ``threshold``, clipped to the frame."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels).reshape(-1)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    keep = (labels == person) & (scores >= threshold) & np.isfinite(boxes).all(axis=1)
    return make_boxes(boxes[keep], scores[keep], width, height)


class TorchvisionDetector:
    """A torchvision detection model in eval mode; ``threshold``: the smallest person score kept.

    ``weights``: a state-dict file (``None``: torchvision's ``DEFAULT`` weights, downloaded once);
    ``num_classes`` / ``person``: the head's class count and person label (91 / 1 for COCO).

    Usage::

        det = TorchvisionDetector("fasterrcnn_mobilenet_v3_large_fpn", weights="frcnn.pt")
        boxes = det(0, rgb)
    """

    def __init__(self, model: str, threshold: float = 0.5, weights: Optional[str] = None, device: str = "cpu",
                 num_classes: int = 91, person: int = COCO_PERSON) -> None:
        import torch
        import torchvision

        names = detection_models()
        if model not in names:
            raise ValueError(f"{FLAG}: torchvision has no detection model '{model}' (torchvision:NAME with NAME one "
                             f"of {', '.join(names)})")
        self.model_name, self.threshold, self.weights = model, float(threshold), weights
        self.name = f"torchvision:{model}"
        self.num_classes, self.person = int(num_classes), int(person)
        try:
            self.device = torch.device(device)
        except RuntimeError as exc:
            raise ValueError(f"--device: {device!r} is not a torch device ({exc})") from None
        if weights is not None:
            net = torchvision.models.get_model(model, weights=None, weights_backbone=None, num_classes=self.num_classes)
            net.load_state_dict(_state_dict(weights, model, net))
        else:
            try:
                net = torchvision.models.get_model(model, weights="DEFAULT", weights_backbone=None)
            except Exception as exc:  # no network, no cache, a proxy's error page: all mean the same to the user
                raise ValueError(f"{FLAG} {self.name}: could not get torchvision's pretrained weights "
                                 f"({type(exc).__name__}: {first_line(exc)}); download them elsewhere and pass "
                                 f"{WEIGHTS_FLAG} FILE (a state dict saved with torch.save)") from None
        self._torch = torch
        self.net = net.eval().to(self.device)

    def settings(self) -> Dict[str, Any]:
        return {"model": self.model_name, "threshold": self.threshold, "weights": self.weights or "DEFAULT",
                "device": str(self.device), "num_classes": self.num_classes, "person": self.person}

    def __call__(self, frame_index: int, rgb: np.ndarray) -> np.ndarray:
        torch = self._torch
        width, height = frame_size(rgb)
        if width < 2 or height < 2:  # nothing a detector could box; the models' resizing needs 2 px
            return no_boxes()
        image = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device).permute(2, 0, 1).float().div_(255.0)
        with torch.no_grad():
            out = self.net([image])[0]
        return person_boxes(out["boxes"].cpu().numpy(), out["labels"].cpu().numpy(), out["scores"].cpu().numpy(),
                            self.threshold, width, height, self.person)


def _state_dict(path: str, model: str, net) -> Dict[str, Any]:
    """The state dict in ``path``, refused (naming ``--detector-weights`` and the path) unless it fits ``net``."""
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"{WEIGHTS_FLAG}: {path}: no such file") from None
    except Exception as exc:
        raise ValueError(f"{WEIGHTS_FLAG}: {path}: not a state dict saved with torch.save "
                         f"({type(exc).__name__}: {first_line(exc)})") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{WEIGHTS_FLAG}: {path}: not a state dict (a mapping of names to tensors)")
    ours = net.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    wrong = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        what = (f"{len(missing)} missing (e.g. {missing[0]})" if missing else
                f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else
                f"{len(wrong)} of another shape (e.g. {wrong[0]}: {tuple(state[wrong[0]].shape)} for "
                f"{tuple(ours[wrong[0]].shape)})")
        raise ValueError(f"{WEIGHTS_FLAG}: {path}: not weights of torchvision's {model}: {what} parameters")
    return state


@DETECTORS.register("torchvision")
def torchvision_model(arg: Optional[str], *, threshold: Optional[float] = None, weights: Optional[str] = None,
                      device: str = "cpu", **options: Any) -> TorchvisionDetector:
    """``torchvision:NAME``: ``threshold`` default 0.5; ``weights``: ``--detector-weights``."""
    model = require_arg("torchvision", arg, "NAME (e.g. torchvision:fasterrcnn_resnet50_fpn_v2)")
    check_options("torchvision", TorchvisionDetector, options, reserved=("model", "threshold", "weights", "device"))
    return TorchvisionDetector(model, threshold=threshold_or(threshold, 0.5), weights=weights, device=device, **options)
