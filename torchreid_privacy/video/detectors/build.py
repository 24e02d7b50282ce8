"""``build_detector(spec)``: the detector of a ``--detector`` spec, from the ``DETECTORS`` registry.

Why a spec string: one flag names any detector or union of detectors (``motion+hog``,
``hog+file:det.txt``, ``torchvision:fasterrcnn_resnet50_fpn_v2``, ``onnx:/p/yolo.onnx``), and a
plugin's detector is reachable by its registered name with no change here. Grammar: ``NAME`` or
``NAME:ARG``, several joined with ``+``; a ``+`` inside an argument (a path) is kept when what
follows it is not a registered name.

A registered detector is a factory ``(arg, *, threshold=..., weights=..., device=...,
skip_bad_boxes=...) -> Detector`` that declares the keywords it uses (the others are not passed
to it) and may take ``**options``: its own settings, given as ``build_detector(spec, NAME={...})``.
"""
from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

from torchreid_privacy.registry import DETECTORS

from .base import FLAG, THRESHOLD_FLAG, WEIGHTS_FLAG, Detector, threshold_or
from .union import MERGE_IOU, UnionDetector

# chosen by measured privacy recall on the generated hard street at 768x576 (README, "Video"; bench video):
# motion finds the moving people of every size, HOG at its native scale (people >= ~128 px: no upscaled
# pyramid levels, 13x faster than down to 40 px) those who stand still; 0.999 at 16 frames/s on 2 cores
DEFAULT_DETECTOR = "motion+hog"
DEFAULT_OPTIONS: Dict[str, Dict[str, Any]] = {"hog": {"min_height": 128.0}}
COMMON = ("threshold", "weights", "device", "skip_bad_boxes")  # the flags every factory may declare


def parse_spec(spec: str) -> List[Tuple[str, Optional[str]]]:
    """``[(NAME, ARG or None), ...]`` of a spec; names are not checked here."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"{FLAG}: empty detector spec; give NAME or NAME:ARG joined with + "
                         f"(registered: {', '.join(DETECTORS.names())})")
    names = set(DETECTORS.names())
    parts: List[str] = []
    for piece in spec.split("+"):
        if parts and ":" in parts[-1] and piece.split(":", 1)[0].strip() not in names:
            parts[-1] += "+" + piece  # a '+' inside the previous part's argument (e.g. a path)
        else:
            parts.append(piece)
    out: List[Tuple[str, Optional[str]]] = []
    for part in parts:
        name, sep, arg = part.partition(":")
        if not name.strip():
            raise ValueError(f"{FLAG}: '{spec}' has an empty part; give NAME or NAME:ARG joined with +")
        out.append((name.strip(), arg if sep else None))
    return out


def _declared(factory: Callable[..., Any]) -> set:
    """The keywords of :data:`COMMON` a factory names in its signature (``**options`` does not count)."""
    params = inspect.signature(factory).parameters
    return {k for k in COMMON if k in params and params[k].kind is not inspect.Parameter.VAR_KEYWORD}


def _unknown(name: str) -> str:
    names = DETECTORS.names()
    close = difflib.get_close_matches(name, names, n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"{FLAG}: unknown detector '{name}' (registered: {', '.join(names)}){hint}"


def build_detector(spec: str, *, threshold: Optional[float] = None, weights: Optional[str] = None,
                   device: str = "cpu", skip_bad_boxes: bool = False, merge_iou: float = MERGE_IOU,
                   **options: Dict[str, Any]) -> Detector:
    """The detector of ``spec``; several parts make a :class:`~.union.UnionDetector` named ``spec``.

    ``threshold``: the score threshold of every part that has one (``--detector-threshold``, each
    detector's own default when ``None``); ``weights``: a ``torchvision:NAME`` part's state dict
    (``--detector-weights``); ``device``: where CNN parts run; ``skip_bad_boxes``: a ``file:`` part
    skips (and lists) bad rows instead of refusing the file; ``merge_iou``: the union's overlap
    for merging; ``options``: per detector name, that detector's own keyword arguments, e.g.
    ``build_detector("motion+hog", hog={"min_height": 60}, motion={"learning_rate": 0.002})``.

    Every refusal is a ``ValueError`` naming the flag (a MOT file's parse errors are
    :class:`~torchreid_privacy.video.mot.MotFormatError`, a ``ValueError`` naming file and line).

    Usage::

        detector = build_detector("motion+hog")
        detector.prime(sample_frames)          # when it has prime()
        boxes = detector(0, rgb)               # (N, 6) x1, y1, x2, y2, score, track
    """
    parts = parse_spec(spec)
    names = [name for name, _ in parts]
    for name in names:
        if name not in DETECTORS:
            raise ValueError(_unknown(name))
    twice = sorted({f"{n}:{a}" if a is not None else n for n, a in parts if parts.count((n, a)) > 1})
    if twice:
        raise ValueError(f"{FLAG}: '{spec}' names {', '.join(twice)} twice")
    for key, value in options.items():
        if key not in names:
            raise ValueError(f"{FLAG}: options given for '{key}', which '{spec}' does not name")
        if not isinstance(value, dict):
            raise ValueError(f"{FLAG}: the options of '{key}' must be a dict of keyword arguments, got {value!r}")
    if threshold is not None:
        threshold_or(threshold, 0.0)
    flags = {"threshold": threshold, "weights": weights, "device": device, "skip_bad_boxes": skip_bad_boxes}
    declared = {name: _declared(DETECTORS.get(name)) for name in names}
    for key, flag in (("weights", WEIGHTS_FLAG), ("threshold", THRESHOLD_FLAG)):
        takers = [n for n in names if key in declared[n]]
        if flags[key] is not None and not takers:
            users = sorted(n for n in DETECTORS.names() if key in _declared(DETECTORS.get(n)))
            raise ValueError(f"{flag}: no detector of '{spec}' takes it (only {', '.join(users) or 'none'})")
        if key == "weights" and weights is not None and len(takers) > 1:
            raise ValueError(f"{flag}: one weights file for several detectors of '{spec}' ({', '.join(takers)})")
    built: List[Detector] = []
    for name, arg in parts:
        factory = DETECTORS.get(name)
        kwargs = {k: flags[k] for k in declared[name]}
        built.append(factory(arg, **kwargs, **options.get(name, {})))
    if len(built) == 1:
        return built[0]
    return UnionDetector(built, name=spec, iou=merge_iou)
