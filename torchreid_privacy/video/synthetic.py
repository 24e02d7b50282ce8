"""A short generated street video with known ground-truth tracks (MOT ``gt.txt``).

Why: the video paths (``make-data --from-video``, ``anonymize --input VIDEO``) are tested and
demonstrated on data that ships with the code. The walkers are the embedded dataset's
figures (:mod:`torchreid_privacy.data.synthetic`), each drawn per frame with its walking
cycle, entering and leaving the scene at different times, speeds, heights and directions,
crossing each other (occlusion) in front of a static street background.

Usage::

    from torchreid_privacy.video.synthetic import make_synthetic_video
    info = make_synthetic_video("street.mkv")   # + street.gt.txt and street.det.txt beside it
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw

from torchreid_privacy.data import synthetic as figures

from .io import VideoWriter
from .mot import write_mot

PathLike = Union[str, os.PathLike]


@dataclass(frozen=True)
class SyntheticVideo:
    path: Path
    gt_path: Path
    det_path: Path
    frames: int
    people: int
    boxes: int


@dataclass
class _Walker:
    ident: object
    start: int  # first frame
    x0: float  # centre x at ``start``
    speed: float  # px per frame, signed
    foot_y: float
    height: float  # box height in px
    period: float  # frames per walking cycle


def _street(width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A static background: sky-to-wall gradient, shop fronts and a pavement."""
    y = np.linspace(0, 1, height)[:, None, None]
    top, bottom = rng.uniform(120, 200, 3), rng.uniform(60, 140, 3)
    img = np.broadcast_to(top * (1 - y) + bottom * y, (height, width, 3)).copy()
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    x = 0
    while x < width:  # shop fronts along the wall
        w = int(rng.integers(width // 8, width // 3))
        draw.rectangle([x, int(height * 0.15), x + w - 4, int(height * 0.55)],
                       fill=tuple(int(v) for v in rng.uniform(50, 220, 3)))
        x += w
    pavement = tuple(int(v) for v in rng.uniform(90, 150) + rng.normal(0, 6, 3))
    draw.rectangle([0, int(height * 0.55), width, height], fill=pavement)
    return np.asarray(out)


def _sprite(ident, phase: float, facing_left: bool) -> Image.Image:
    """One figure on a transparent canvas, cropped to its pixels."""
    canvas = Image.new("RGBA", (figures.WIDTH * figures._SS, figures.HEIGHT * figures._SS), (0, 0, 0, 0))
    pose = figures._Pose(scale=1.0, cx=figures.WIDTH * figures._SS / 2, top=8.0, back_view=False,
                         phase=float(phase), side=ident.bag_side, girth=0.8, stride=1.2)
    figures._draw_person(ImageDraw.Draw(canvas), ident, pose)
    canvas = canvas.crop(canvas.getbbox())
    return canvas.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if facing_left else canvas


def _walkers(n: int, frames: int, width: int, height: int, rng: np.random.Generator) -> List[_Walker]:
    out = []
    for i in range(n):
        speed = float(rng.uniform(2.0, 4.5)) * (1 if rng.random() < 0.5 else -1)
        h = float(rng.uniform(0.42, 0.6) * height)
        start = int(round(i * frames / (n + 1) * rng.uniform(0.6, 1.0)))
        x0 = -0.15 * h if speed > 0 else width + 0.15 * h
        out.append(_Walker(figures._make_identity(rng), start, x0, speed,
                           float(rng.uniform(0.78, 0.97) * height), h, float(rng.uniform(8, 14))))
    return out


def _render(background: np.ndarray, walkers: List[_Walker], frame: int) -> Tuple[np.ndarray, np.ndarray]:
    """The frame and its ground truth ``(N, 6)``: visible boxes of walkers inside the frame."""
    img = Image.fromarray(background.copy())
    h_img, w_img = background.shape[:2]
    boxes = []
    # far walkers (higher foot line) first, so nearer ones occlude them
    for track, w in sorted(enumerate(walkers), key=lambda tw: tw[1].foot_y):
        t = frame - w.start
        if t < 0:
            continue
        sprite = _sprite(w.ident, np.sin(2 * np.pi * t / w.period), w.speed < 0)
        sh = int(round(w.height))
        sw = max(2, int(round(sprite.width * sh / sprite.height)))
        sprite = sprite.resize((sw, sh), Image.Resampling.LANCZOS)
        cx = w.x0 + w.speed * t
        x, y = int(round(cx - sw / 2)), int(round(w.foot_y - sh))
        x1, y1, x2, y2 = max(0, x), max(0, y), min(w_img, x + sw), min(h_img, y + sh)
        if x2 - x1 < 0.5 * sw or y2 - y1 < 1:  # mostly outside: not annotated, as in MOT
            continue
        img.paste(sprite, (x, y), sprite)
        boxes.append((x1, y1, x2, y2, 1.0, track + 1))
    order = np.argsort([b[5] for b in boxes]) if boxes else []
    return np.asarray(img), np.asarray([boxes[i] for i in order], dtype=np.float64).reshape(-1, 6)


def noisy_detections(gt: Dict[int, np.ndarray], seed: int = 0, jitter: float = 0.04, miss: float = 0.05,
                     false_per_frame: float = 0.05, size: Tuple[int, int] = (0, 0)) -> Dict[int, np.ndarray]:
    """A detector's view of ``gt``: jittered boxes, missed ones, scattered false positives, no ids."""
    rng = np.random.default_rng(seed)
    out = {}
    w_img, h_img = size
    for frame, boxes in gt.items():
        dets = []
        for x1, y1, x2, y2, _, _ in boxes:
            if rng.random() < miss:
                continue
            bw, bh = x2 - x1, y2 - y1
            dx1, dy1, dx2, dy2 = rng.normal(0, jitter, 4) * [bw, bh, bw, bh]
            dets.append((x1 + dx1, y1 + dy1, x2 + dx2, y2 + dy2, float(rng.uniform(0.6, 0.99)), -1))
        if w_img and rng.random() < false_per_frame:
            bh = rng.uniform(0.2, 0.5) * h_img
            x, y = rng.uniform(0, w_img - bh / 2), rng.uniform(0, h_img - bh)
            dets.append((x, y, x + bh / 2, y + bh, float(rng.uniform(0.3, 0.6)), -1))
        out[frame] = np.asarray(dets, dtype=np.float64).reshape(-1, 6)
    return out


def make_synthetic_video(path: PathLike, frames: int = 80, width: int = 320, height: int = 240, fps: int = 10,
                         people: int = 6, seed: int = 0) -> SyntheticVideo:
    """Write the video at ``path`` (codec by suffix; ``.mkv`` is lossless) with ``<stem>.gt.txt``
    (the true tracks) and ``<stem>.det.txt`` (noisy detections of them) beside it; never overwrites."""
    path = Path(path)
    for name, value, low in (("frames", frames, 2), ("people", people, 1), ("width", width, 64),
                             ("height", height, 64), ("fps", fps, 1)):
        if int(value) < low:
            raise ValueError(f"{name}: must be >= {low}, got {value}")
    gt_path, det_path = path.with_name(path.stem + ".gt.txt"), path.with_name(path.stem + ".det.txt")
    for p in (path, gt_path, det_path):
        if p.exists():
            raise FileExistsError(f"{p}: already exists; refusing to overwrite it")
    rng = np.random.default_rng(seed)
    background = _street(width, height, rng)
    walkers = _walkers(people, frames, width, height, rng)
    gt: Dict[int, np.ndarray] = {}
    with VideoWriter(path, width, height, fps) as writer:
        for f in range(frames):
            frame, boxes = _render(background, walkers, f)
            writer.write(frame)
            if len(boxes):
                gt[f] = boxes
    write_mot(gt_path, gt, gt=True)
    write_mot(det_path, noisy_detections(gt, seed=seed, size=(width, height)))
    n_boxes = sum(len(b) for b in gt.values())
    seen = {int(t) for b in gt.values() for t in b[:, 5]}
    return SyntheticVideo(path, gt_path, det_path, frames, len(seen), n_boxes)
