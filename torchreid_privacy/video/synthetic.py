"""A short generated street video with known ground-truth tracks (MOT ``gt.txt``).

Why: the video paths (``make-data --from-video``, ``anonymize --input VIDEO``) are tested and
demonstrated on data that ships with the code. The walkers are the embedded dataset's
figures (:mod:`torchreid_privacy.data.synthetic_people`), each drawn per frame with its walking
cycle, entering and leaving the scene at different times, speeds, heights and directions,
crossing each other (occlusion) in front of a static street background.

The ``hard`` style (:class:`HardStreet`) is made to make pedestrian detectors miss people, as
real surveillance video does: a street in perspective (far people small and high in the frame,
walkers coming closer or going away), people standing still for seconds (background
subtraction absorbs them), groups that occlude each other and street furniture in front of
them, the hard ReID set's textured figures (:mod:`torchreid_privacy.data.synthetic_hard`), a
photo-like background with person-ish clutter (post boxes, bollards, a billboard showing a
person), a slow brightness drift and sensor noise. Its gt.txt marks every person pixel.

Usage::

    from torchreid_privacy.video.synthetic import make_synthetic_video
    info = make_synthetic_video("street.mkv")   # + street.gt.txt and street.det.txt beside it
    make_synthetic_video("hard.mkv", frames=150, width=768, height=576, style="hard")

    from torchreid_privacy.video.synthetic import HardStreet
    frame = HardStreet(frames=40).render(0, mask=True)   # image, boxes, visibility, person mask
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Tuple, Union

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from torchreid_privacy.data import synthetic_people as figures
from torchreid_privacy.data import synthetic_hard as hard
from torchreid_privacy.utils.atomic import write_new

from .io import VideoWriter
from .mot import PEDESTRIAN, write_mot

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


# =========================================================================== the hard street
STYLES = ("plain", "hard")
_SPRITE_SCALE = 0.8  # figure scale on the hard renderer's 128 x 64 canvas: bag and stride stay inside it
_SPRITE_TOP = figures.HEIGHT * figures._SS * (1 - 0.9 * _SPRITE_SCALE) / 2  # head top, drawing (2x) pixels
_BODY_PX = 0.9 * figures.HEIGHT * _SPRITE_SCALE  # body height of a sprite, canvas pixels
_FOOT_PX = (_SPRITE_TOP + 0.9 * figures.HEIGHT * figures._SS * _SPRITE_SCALE) / figures._SS
_TALLEST, _SMALLEST = 0.345, 0.066  # person height bounds, fractions of the frame height
_WALKER_MAX_Z = 37.5  # metres: nobody walks further away than this (the facades stand beyond)
_SEEN = 1.0 / 255  # a person's share of a pixel above this counts as a shown person pixel
_HIDDEN = 0.1  # below this visibility a person may be left out of gt.txt (see make_synthetic_video)
_F32 = np.float32


@dataclass(frozen=True)
class StreetGeometry:
    """A level pinhole camera ``camera_height`` metres above a flat street; x to the right, z ahead.

    A person ``P`` metres tall standing ``z`` metres away is ``focal * P / z`` pixels tall with the
    feet on row ``horizon + focal * camera_height / z``: height grows linearly with the foot line.
    """

    width: int
    height: int
    focal: float  # pixels
    horizon: float  # row
    camera_height: float  # metres

    def row(self, z: float) -> float:
        """The image row of the ground ``z`` metres ahead."""
        return self.horizon + self.focal * self.camera_height / z

    def column(self, x: float, z: float) -> float:
        return self.width / 2 + self.focal * x / z

    def pixels(self, metres: float, z: float) -> float:
        return self.focal * metres / z

    def half_width(self, z: float) -> float:
        """Metres seen either side of the axis at depth ``z``."""
        return self.width / 2 * z / self.focal

    def depth(self, fraction: float, metres: float) -> float:
        """The depth at which someone ``metres`` tall is ``fraction`` of the frame height."""
        return self.focal * metres / (fraction * self.height)


@dataclass(frozen=True)
class _Path:
    """Piecewise-linear walk on the ground: knots ``(frame, x, z)``, straight lines before and after."""

    knots: Tuple[Tuple[float, float, float], ...]
    before: Tuple[float, float]  # (vx, vz) metres per frame before the first knot
    after: Tuple[float, float]

    def at(self, t: float) -> Tuple[float, float, float, float, float]:
        """``(x, z, vx, vz, metres walked)`` at frame ``t``."""
        t0, x0, z0 = self.knots[0]
        if t <= t0:
            vx, vz = self.before
            return x0 + vx * (t - t0), z0 + vz * (t - t0), vx, vz, float(np.hypot(vx, vz)) * (t - t0)
        walked = 0.0
        for (ta, xa, za), (tb, xb, zb) in zip(self.knots, self.knots[1:]):
            seg = float(np.hypot(xb - xa, zb - za))
            if t <= tb:
                u = (t - ta) / (tb - ta)
                return xa + u * (xb - xa), za + u * (zb - za), (xb - xa) / (tb - ta), (zb - za) / (tb - ta), \
                    walked + u * seg
            walked += seg
        tn, xn, zn = self.knots[-1]
        vx, vz = self.after
        return xn + vx * (t - tn), zn + vz * (t - tn), vx, vz, walked + float(np.hypot(vx, vz)) * (t - tn)


def _bounded(knots: List[Tuple[float, float, float]], before: Tuple[float, float], after: Tuple[float, float],
             zlo: float, zhi: float) -> _Path:
    """The path, turned sideways where it would leave the depth band ``[zlo, zhi]`` (into the camera or
    through the facades): walking towards or away from the camera stays between those depths."""
    knots = [(t, x, float(np.clip(z, zlo, zhi))) for t, x, z in knots]
    t0, x0, z0 = knots[0]
    vx, vz = before
    if abs(vz) > 1e-9:
        dt = ((z0 - zlo) / vz) if vz > 0 else ((zhi - z0) / -vz)  # frames back to the band's edge
        knots.insert(0, (t0 - dt, x0 - vx * dt, z0 - vz * dt))
        before = (np.copysign(np.hypot(vx, vz), vx or 1.0), 0.0)
    tn, xn, zn = knots[-1]
    vx, vz = after
    if abs(vz) > 1e-9:
        dt = ((zhi - zn) / vz) if vz > 0 else ((zn - zlo) / -vz)
        knots.append((tn + dt, xn + vx * dt, zn + vz * dt))
        after = (np.copysign(np.hypot(vx, vz), vx or 1.0), 0.0)
    out = [knots[0]]
    for k in knots[1:]:  # knots closer than a frame apart would make a zero-length segment
        if k[0] > out[-1][0] + 1e-6:
            out.append(k)
    return _Path(tuple(out), (float(before[0]), float(before[1])), (float(after[0]), float(after[1])))


@dataclass
class _Person:
    ident: Any  # synthetic_hard.HardIdentity
    metres: float  # standing height
    path: _Path
    rest_view: str  # front | back | side: how they stand still
    pose: figures._Pose  # hands and bag side; view, phase and stride are set per sprite
    key: Tuple[int, ...]  # seeds the painting of its sprites
    sprites: Dict[Tuple, "_Sprite"]


@dataclass
class _Sprite:
    image: Image.Image  # RGBA, cropped to the figure
    ax: float  # the point between the feet, in ``image`` pixels
    ay: float
    sized: Dict[Tuple[int, int], Tuple[np.ndarray, np.ndarray, Tuple[int, int, int, int], float]]


@dataclass
class _Layer:
    """Something drawn at depth ``z`` in a frame: a person, or street furniture in front of some walkers."""

    z: float
    left: int
    top: int
    rgb: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w) float32 coverage
    track: int = 0  # a person's gt id (1-based); 0: not a person
    box: Tuple[int, int, int, int] = (0, 0, 0, 0)  # a person's pixels (alpha > 0) in the frame: x1, y1, x2, y2
    body: float = 0.0  # a person's total coverage, in and out of the frame
    foot: Tuple[float, float, float] = (0.0, 0.0, 0.0)  # a person's foot point and height in pixels


@dataclass(frozen=True)
class StreetFrame:
    """One frame of the hard street and its ground truth."""

    index: int
    image: np.ndarray  # H x W x 3 uint8 RGB
    boxes: np.ndarray  # (N, 6) x1, y1, x2, y2, 1, track (whole pixels, clipped to the frame), by track
    visibility: np.ndarray  # (N,) share of each person's body not hidden by nearer things or the border
    mask: Optional[np.ndarray]  # H x W bool: pixels that show a person (``mask=True`` only)


def _rect(img: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour) -> None:
    h, w = img.shape[:2]
    a, b = int(np.clip(round(y0), 0, h)), int(np.clip(round(y1), 0, h))
    c, d = int(np.clip(round(x0), 0, w)), int(np.clip(round(x1), 0, w))
    if b > a and d > c:
        img[a:b, c:d] = colour


def _uniform(rng: np.random.Generator, low: float, high: float) -> float:
    return float(rng.uniform(low, high))


def _sign(rng: np.random.Generator) -> float:
    return 1.0 if rng.random() < 0.5 else -1.0


# --------------------------------------------------------------------------- people and their walks
def _cast(n: int, frames: int, fps: float, geo: StreetGeometry, heights: List[float], rng: np.random.Generator
          ) -> List[Tuple[_Path, str]]:
    """Everyone's walk, in this order: one who stands from the first frame, a pair side by side (a third
    joins from the 8th person on), one crossing them, one who walks in diagonally, stops for seconds
    and walks on, one far away walking towards or away from the camera, one more doing so nearer;
    then a random mix."""
    F = float(frames)

    def band(i: int) -> Tuple[float, float]:
        return geo.depth(_TALLEST, heights[i]), min(geo.depth(_SMALLEST, heights[i]), _WALKER_MAX_Z)

    def depth(i: int, low: float, high: float) -> float:
        zlo, zhi = band(i)
        return float(np.clip(geo.depth(_uniform(rng, low, high), heights[i]), zlo, zhi))

    def velocity(speed: float, angle: float, s: float) -> Tuple[float, float]:
        """``angle`` from the x axis towards +z (away), metres per frame."""
        v = speed / fps
        return s * v * float(np.cos(angle)), v * float(np.sin(angle))

    def walker(i: int, t: float, x: float, z: float, vel, rest: str = "side") -> Tuple[_Path, str]:
        return _bounded([(t, x, z)], vel, vel, *band(i)), rest

    def stopper(i: int, low: float, high: float) -> Tuple[_Path, str]:
        z = depth(i, low, high)
        x = _uniform(rng, -0.6, 0.6) * geo.half_width(z)
        t_stop = F * _uniform(rng, 0.12, 0.3)
        stay = float(np.clip(round(fps * _uniform(rng, 3, 6)), 1, max(1.0, 0.5 * F)))
        v_in = velocity(_uniform(rng, 1.0, 1.4), -_uniform(rng, 0.5, 0.9), _sign(rng))  # diagonal, approaching
        v_out = velocity(_uniform(rng, 1.0, 1.4), _uniform(rng, -0.3, 0.3), _sign(rng))
        rest = "front" if rng.random() < 0.5 else "back"  # waiting, or looking into a shop window
        return _bounded([(t_stop, x, z), (t_stop + stay, x, z)], v_in, v_out, *band(i)), rest

    def approacher(i: int, far: bool) -> Tuple[_Path, str]:
        """Mostly along z; ``far``: from (or to) the far end of the band, small for much of the video."""
        zlo, zhi = band(i)
        towards = rng.random() < 0.5
        speed, angle = _uniform(rng, 1.0, 1.4), _uniform(rng, 1.1, 1.4)
        span = speed / fps * np.sin(angle) * F
        if span > 0.8 * (zhi - zlo):  # a long video: slower, not through the band's edges
            speed *= max(0.5, 0.8 * (zhi - zlo) / span)
            span = speed / fps * np.sin(angle) * F
        half = min(span, zhi - zlo) / 2
        z_mid = zhi - _uniform(rng, 0, 2) - half if far else _uniform(rng, zlo + half, max(zlo + half, zhi - half))
        vel = velocity(speed, -angle if towards else angle, _sign(rng))
        x = _uniform(rng, -0.4, 0.4) * geo.half_width(z_mid)
        return walker(i, F / 2, x, z_mid, vel, "front" if towards else "back")

    out: List[Tuple[_Path, str]] = []
    pair = None
    for i in range(n):
        if i == 0:  # stands from the first frame for most of the video, then walks off
            z = depth(i, 0.14, 0.2)
            x = _uniform(rng, -0.5, 0.5) * geo.half_width(z)
            leave = velocity(_uniform(rng, 1.0, 1.3), _uniform(rng, -0.3, 0.3), _sign(rng))
            out.append((_bounded([(F * _uniform(rng, 0.7, 0.85), x, z)], (0.0, 0.0), leave, *band(i)), "front"))
        elif i in (1, 2, 7):  # a group side by side: the same walk, a little further back each
            if pair is None:
                z = depth(i, 0.25, 0.31)
                t_c = F * _uniform(rng, 0.35, 0.55)
                pair = (t_c, _uniform(rng, -0.2, 0.2) * geo.half_width(z), z,
                        velocity(_uniform(rng, 1.1, 1.5), _uniform(rng, -0.12, 0.12), _sign(rng)))
                out.append(walker(i, *pair))
            else:
                t_c, x, z, vel = pair
                z2 = z + _uniform(rng, 0.5, 0.9) * (1 if i == 2 else 2)
                out.append(walker(i, t_c, x + _uniform(rng, -0.2, 0.2), z2, vel))
        elif i == 3:  # crosses the group, in front or behind, at about the same time
            t_c, x, z, vel = pair
            zlo, zhi = band(i)
            z3 = z - _uniform(rng, 1.0, 1.5) if z - 1.5 > zlo and rng.random() < 0.5 else z + _uniform(rng, 1.5, 5)
            z3 = float(np.clip(z3, zlo, zhi))
            back = velocity(_uniform(rng, 1.0, 1.5), _uniform(rng, -0.35, 0.35), -np.sign(vel[0]))
            out.append(walker(i, t_c + _uniform(rng, -3, 3), x * z3 / z, z3, back))
        elif i == 4:
            out.append(stopper(i, 0.2, 0.3))
        elif i == 5:  # far away (small, high in the frame), coming closer or going away
            out.append(approacher(i, far=True))
        elif i == 6:
            out.append(approacher(i, far=False))
        else:
            kind = rng.choice(["walk", "walk", "stop", "approach", "follow"])
            if kind == "stop":
                out.append(stopper(i, 0.09, 0.3))
            elif kind == "approach":
                out.append(approacher(i, far=rng.random() < 0.3))
            elif kind == "follow":  # beside someone walking already
                j = int(rng.integers(1, i))
                t_ref = F * _uniform(rng, 0.2, 0.8)
                x, z, vx, vz, _ = out[j][0].at(t_ref)
                if vx == 0 and vz == 0:
                    vx, vz = out[j][0].after
                out.append(walker(i, t_ref, x + _uniform(rng, -0.3, 0.3), z + _uniform(rng, 0.5, 1.0), (vx, vz)))
            else:
                z = depth(i, 0.08, 0.33)
                out.append(walker(i, F * rng.random(), _uniform(rng, -0.8, 0.8) * geo.half_width(z), z,
                                  velocity(_uniform(rng, 0.9, 1.6), _uniform(rng, -0.5, 0.5), _sign(rng))))
    return out


def _view(vx: float, vz: float, rest: str) -> Tuple[str, bool]:
    """(view, mirrored) of someone walking with velocity ``(vx, vz)``."""
    if vx == 0 and vz == 0:
        return rest, False
    if abs(vx) >= 0.75 * abs(vz):
        return "side", vx < 0
    return ("front" if vz < 0 else "back"), False


def _paint_sprite(person: _Person, view: str, phase: float, mirrored: bool, cam) -> _Sprite:
    """The hard renderer's textured figure on a transparent canvas (painted twice, over black and
    over white, to recover its coverage), in the camera's colours, cropped to its pixels."""
    girth, stride = (0.6, 1.5) if view == "side" else (1.0, 0.6)
    pose = dataclasses.replace(person.pose, back_view=view == "back", phase=float(phase), girth=girth, stride=stride)
    over = []
    for ground in (0.0, 255.0):
        canvas = np.full((figures.HEIGHT, figures.WIDTH, 3), ground, _F32)
        hard._paint(canvas, person.ident, pose, np.random.default_rng(person.key))  # same draws: same figure
        over.append(canvas)
    alpha = np.clip(1 - (over[1] - over[0]).mean(-1) / 255, 0, 1)
    colour = over[0] / np.maximum(alpha, 1e-3)[..., None]
    colour = hard._colour_rendition(colour, cam, np.random.default_rng(0))  # no per-call drift: rng fixed
    rgba = np.concatenate([np.clip(colour, 0, 255), alpha[..., None] * 255], -1).round().astype(np.uint8)
    rgba[rgba[..., 3] == 0] = 0
    image = Image.fromarray(rgba, "RGBA")
    left, top, right, bottom = image.getbbox() or (0, 0, 1, 1)
    image = image.crop((left, top, right, bottom))
    ax, ay = figures.WIDTH / 2 - left, _FOOT_PX - top
    if mirrored:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        ax = image.width - ax
    return _Sprite(image, ax, ay, {})


def _sized(sprite: _Sprite, size: Tuple[int, int]):
    """(rgb float32, alpha float32, tight box of alpha > 0 as (x0, y0, x1, y1), alpha sum) at ``size``."""
    if size not in sprite.sized:
        arr = np.asarray(sprite.image.resize(size, Image.Resampling.LANCZOS))
        alpha = arr[..., 3].astype(_F32) / 255
        rows, cols = np.flatnonzero(alpha.any(1)), np.flatnonzero(alpha.any(0))
        box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1) if len(rows) else (0, 0, 0, 0)
        sprite.sized[size] = (arr[..., :3].astype(_F32), alpha, box, float(alpha.sum()))
    return sprite.sized[size]


# --------------------------------------------------------------------------- the street
def _draw_thing(kind: str, k: float, rng: np.random.Generator, cam, poster: Optional[np.ndarray] = None
                ) -> Tuple[np.ndarray, float, float, float]:
    """A street object ``k`` pixels per metre tall: RGBA float array, its ground point (x, y) in it,
    and its footprint width in metres (for the contact shadow)."""
    wall = np.asarray(cam.wall, np.float64)
    dark = tuple(int(v) for v in np.clip(rng.uniform(35, 80) + rng.normal(0, 8, 3), 0, 255))
    loud = tuple(int(v) for v in np.clip(rng.choice([[170, 40, 40], [200, 170, 40], [40, 80, 150], [60, 110, 60]])
                                         + rng.normal(0, 15, 3), 0, 255))
    muted = tuple(int(v) for v in np.clip(wall * rng.uniform(0.5, 1.0) + rng.normal(0, 10, 3), 0, 255))
    sizes = {"lamp": (1.0, _uniform(rng, 4.5, 6.0)), "bollard": (0.22, 0.95), "bin": (0.55, 1.05),
             "postbox": (0.5, 1.45), "bench": (1.8, 0.85), "planter": (1.1, _uniform(rng, 1.0, 1.5)),
             "sign": (0.6, 1.0), "billboard": (1.3, 2.6)}
    wm, hm = sizes[kind]
    ss = 2  # drawn at 2x, then reduced: smooth edges
    px = k * ss
    w, h = max(2, int(np.ceil(wm * px)) + 2 * ss), max(2, int(np.ceil(hm * px)) + 2 * ss)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    cx, g = w / 2, h - ss  # the centre of the footprint, the ground row

    def box(x0, y0, x1, y1, fill, rounded=0.0):  # metres: x from the centre, y up from the ground
        r = [cx + x0 * px, g - y1 * px, cx + x1 * px, g - y0 * px]
        if r[2] - r[0] < 1:
            r[2] = r[0] + 1
        if r[3] - r[1] < 1:
            r[1] = r[3] - 1
        if rounded > 0:
            d.rounded_rectangle(r, radius=rounded * px, fill=fill)
        else:
            d.rectangle(r, fill=fill)

    if kind == "lamp":
        side = _sign(rng)
        box(-0.07, 0, 0.07, hm, dark)
        box(-0.14, 0, 0.14, 0.6, dark)
        box(min(0, side * 0.5), hm - 0.08, max(0, side * 0.5), hm, dark)
        box(side * 0.5 - 0.22, hm - 0.2, side * 0.5 + 0.22, hm - 0.05, (230, 225, 200))
    elif kind == "bollard":
        box(-0.11, 0, 0.11, 0.95, dark, rounded=0.1)
        box(-0.11, 0.7, 0.11, 0.78, (220, 220, 210))
    elif kind == "bin":
        box(-0.27, 0, 0.27, 0.95, muted, rounded=0.05)
        box(-0.29, 0.92, 0.29, 1.05, dark, rounded=0.04)
        box(-0.15, 0.75, 0.15, 0.82, (20, 20, 20))
    elif kind == "postbox":  # a rounded top on a column: head and shoulders to a detector
        box(-0.25, 0, 0.25, 1.2, loud)
        box(-0.25, 0.95, 0.25, 1.45, loud, rounded=0.25)
        box(-0.15, 1.05, 0.15, 1.1, (25, 25, 25))
        box(-0.2, 0.0, 0.2, 0.15, dark)
    elif kind == "bench":
        wood = tuple(int(v) for v in np.clip([120, 85, 55] + rng.normal(0, 15, 3), 0, 255))
        for x in (-0.8, 0.75):
            box(x, 0, x + 0.06, 0.85, dark)
        box(-0.9, 0.42, 0.9, 0.48, wood)
        for y in (0.58, 0.7, 0.8):
            box(-0.9, y, 0.9, y + 0.06, wood)
    elif kind == "planter":
        box(-0.55, 0, 0.55, 0.55, muted)
        green = np.array([60, 95, 45]) * rng.uniform(0.7, 1.2)
        for _ in range(14):  # a bush of overlapping blobs
            bx, by, r = rng.uniform(-0.45, 0.45), rng.uniform(0.5, hm - 0.25), rng.uniform(0.15, 0.3)
            c = tuple(int(v) for v in np.clip(green * rng.uniform(0.6, 1.3), 0, 255))
            d.ellipse([cx + (bx - r) * px, g - (by + r) * px, cx + (bx + r) * px, g - (by - r) * px], fill=c)
    elif kind == "sign":  # an A-frame board with lettering
        d.polygon([(cx - 0.3 * px, g), (cx - 0.24 * px, g - 1.0 * px), (cx + 0.24 * px, g - 1.0 * px),
                   (cx + 0.3 * px, g)], fill=dark)
        box(-0.22, 0.15, 0.22, 0.9, (225, 225, 215) if rng.random() < 0.5 else loud)
        for y in np.arange(0.25, 0.8, 0.12):
            box(-0.17, y, _uniform(rng, -0.05, 0.17), y + 0.05, (40, 40, 40))
    else:  # billboard: a lit panel with a person on it (a picture, not a pedestrian: no gt row)
        box(-0.08, 0, 0.08, 0.6, dark)
        box(-0.65, 0.6, 0.65, 2.6, dark)
        if poster is not None:
            pw, ph = max(1, int(round(1.1 * px))), max(1, int(round(1.8 * px)))
            pic = Image.fromarray(np.clip(poster, 0, 255).astype(np.uint8)).resize((pw, ph), Image.Resampling.LANCZOS)
            img.paste(pic, (int(round(cx - 0.55 * px)), int(round(g - 2.5 * px))))
    arr = np.asarray(img.reduce(ss), _F32).copy()
    cols = np.linspace(-1, 1, arr.shape[1], dtype=_F32)[None, :, None]
    if kind in ("lamp", "bollard", "bin", "postbox"):  # round: lit from one side
        arr[..., :3] *= 0.75 + 0.3 * np.cos(np.clip(cols * 1.4 - 0.4, -1.5, 1.5))
    arr[..., :3] *= (1 + rng.normal(0, 0.04, arr.shape[:2]).astype(_F32))[..., None]  # grain
    arr[..., :3] = hard._colour_rendition(arr[..., :3], cam, np.random.default_rng(0))
    return arr, cx / ss, g / ss, wm


def _poster(rng: np.random.Generator) -> np.ndarray:
    """An advertisement: a textured person on a coloured backdrop (128 x 64)."""
    backdrop = rng.uniform(60, 230, 3).astype(_F32)
    ys = np.linspace(0, 1, figures.HEIGHT, dtype=_F32)[:, None, None]
    canvas = np.broadcast_to(backdrop * (0.8 + 0.4 * ys), (figures.HEIGHT, figures.WIDTH, 3)).astype(_F32).copy()
    model = hard.make_identity(rng)
    hard._paint(canvas, model, hard._person_at(model, rng, 0.85, figures.WIDTH / 2, figures.HEIGHT * 0.95), rng)
    canvas[: figures.HEIGHT // 10] = rng.uniform(20, 240, 3)  # a brand bar
    return canvas


def _street_hard(geo: StreetGeometry, cam, rng: np.random.Generator
                 ) -> Tuple[np.ndarray, List[_Layer], Tuple[float, float, float, float]]:
    """The static scene: sky, facades with windows and shop fronts ~40 m away, pavement, kerb and
    road in perspective, street furniture (lamps, bollards, bins, post boxes, benches, planters,
    signs, a billboard with a person on it). Returns the background (float32, camera colours),
    the things that can stand in front of walkers, and the ground's shadow (a, b, c, depth):
    light = 1 - depth * clip(0.5 - (a x + b z - c), 0, 1)."""
    H, W = geo.height, geo.width
    C = geo.camera_height
    ys = np.arange(H, dtype=_F32)[:, None]
    xs = np.arange(W, dtype=_F32)[None, :]
    img = np.empty((H, W, 3), _F32)
    sky_hi = np.array([120, 150, 195]) * rng.uniform(0.8, 1.1)
    sky_lo = np.array([200, 205, 210]) * rng.uniform(0.85, 1.1)
    t = np.clip(ys / max(geo.horizon, 1), 0, 1)[..., None]
    img[:] = sky_hi * (1 - t) + sky_lo * t
    # facades along the far side of the square
    zw = _uniform(rng, 40, 44)
    k = geo.focal / zw  # pixels per metre on the facades
    base = geo.row(zw)
    pattern = max(0.7, k * 0.4 / 7)  # the wall pattern in ~0.4 m blocks, never finer than 0.7 px
    x = -_uniform(rng, 0, 6) * k
    while x < W:
        bw, top_m = _uniform(rng, 7, 16) * k, _uniform(rng, 8, 22)
        x0, x1 = int(max(0, round(x))), int(min(W, round(x + bw)))
        y0 = int(max(0, round(geo.horizon - (top_m - C) * k)))
        y1 = int(min(H, np.ceil(base)))
        if x1 > x0 and y1 > y0:
            colour = np.clip(np.asarray(cam.wall) * rng.uniform(0.7, 1.3) + rng.normal(0, 12, 3), 20, 235)
            kind = str(rng.choice(["bricks", "tiles", "panels", "plaster"]))
            sub_y, sub_x = ys[y0:y1] / pattern, xs[:, x0:x1] / pattern
            if kind == "plaster":
                tex = 1 + 0.12 * hard._resize(rng.normal(0, 1, (8, 8)), (y1 - y0, x1 - x0))
            else:
                tex = np.broadcast_to(hard._wall_lines(kind, sub_y, sub_x, rng), (y1 - y0, x1 - x0))
            shade = 1 + 0.1 * hard._resize(rng.normal(0, 1, (6, 6)), (y1 - y0, x1 - x0))
            img[y0:y1, x0:x1] = colour * (tex * shade)[..., None]
            facade = img[:, x0:x1]
            glass = np.clip(np.array([45, 55, 65]) * rng.uniform(0.6, 1.4), 0, 255)
            spacing, win_w = _uniform(rng, 2.3, 3.4), _uniform(rng, 0.9, 1.4)
            offset = _uniform(rng, 0.3, 1.0)
            floor = 4.0
            while floor + 2.0 < top_m:  # upper-floor windows
                for wx in np.arange(offset, (x1 - x0) / k - win_w, spacing):
                    lit = rng.random()
                    fill = (np.array([215, 190, 130]) if lit < 0.1 else np.array([185, 180, 170]) if lit < 0.25
                            else glass * rng.uniform(0.8, 1.25))
                    wy0, wy1 = geo.horizon - (floor + 1.8 - C) * k, geo.horizon - (floor + 0.2 - C) * k
                    _rect(facade, wx * k - 1, wy0 - 1, (wx + win_w) * k + 1, wy1 + 1, colour * 0.6)
                    _rect(facade, wx * k, wy0, (wx + win_w) * k, wy1, fill)
                floor += 3.2
            # ground floor: shop windows, doors, an awning or a sign band
            shop = np.clip(np.array([30, 35, 40]) * rng.uniform(0.7, 1.6) + rng.normal(0, 6, 3), 0, 255)
            gy = lambda m: geo.horizon - (m - C) * k  # noqa: E731 - the row of a height on the facade
            sx = _uniform(rng, 0.2, 1.0)
            while sx < (x1 - x0) / k - 1.0:
                sw = _uniform(rng, 1.0, 4.0)
                door = rng.random() < 0.3
                fill = shop * (0.7 if door else 1.0)
                _rect(facade, sx * k, gy(2.6 if not door else 2.2), (sx + sw) * k, gy(0.0 if door else 0.5), fill)
                if not door:  # reflections and goods behind the glass
                    for _ in range(int(rng.integers(0, 4))):
                        gx = sx + rng.uniform(0, sw)
                        _rect(facade, gx * k, gy(rng.uniform(0.9, 2.2)), (gx + rng.uniform(0.1, 0.6)) * k,
                              gy(0.5), rng.uniform(40, 200, 3))
                sx += sw + _uniform(rng, 0.3, 1.2)
            if rng.random() < 0.5:
                awning = rng.uniform(50, 220, 3)
                _rect(facade, 0, gy(3.4), x1 - x0, gy(2.8), awning)
                for sx in np.arange(0, (x1 - x0) / k, 0.6):
                    _rect(facade, sx * k, gy(3.4), (sx + 0.3) * k, gy(2.8), awning * 0.7)
            else:
                _rect(facade, 0, gy(3.5), x1 - x0, gy(2.9), rng.uniform(20, 230, 3))
                for sx in np.arange(_uniform(rng, 0.5, 2), (x1 - x0) / k - 1, 0.35):
                    if rng.random() < 0.8:
                        _rect(facade, sx * k, gy(3.35), (sx + 0.22) * k, gy(3.05), rng.uniform(0, 255, 3))
            _rect(facade, 0, y0, max(1, k * 0.15), y1, colour * 0.55)  # the joint between buildings
        x += bw
    # the ground: pavement, kerb, road with a crossing, pavement again along the facades
    top = int(np.ceil(base))
    rows = np.arange(top, H, dtype=_F32)[:, None] + 0.5
    Z = geo.focal * C / np.maximum(rows - geo.horizon, 1e-3)
    X = (xs + 0.5 - W / 2) * Z / geo.focal
    kerb1 = _uniform(rng, 16.5, 20)
    kerb2 = kerb1 + _uniform(rng, 6, 8)
    near = np.asarray(cam.floor, _F32)
    road = np.array([78, 80, 84], _F32) * _uniform(rng, 0.8, 1.15)
    far = np.clip(near * _uniform(rng, 0.85, 1.15) + rng.normal(0, 8, 3), 0, 255).astype(_F32)

    def tiles(size: float, joint: float) -> np.ndarray:
        """Brightness of square tiles ``size`` metres wide, faded where they get finer than pixels."""
        across = np.clip((geo.focal * size / Z - 3) / 5, 0, 1)  # pixels per tile along a row
        along = np.clip((geo.focal * C * size / Z ** 2 - 2) / 4, 0, 1)  # ... down a column
        u, v = X / size, Z / size
        jx = ((u % 1) < joint) * across
        jz = ((v % 1) < joint) * along
        cell = np.sin(np.floor(u) * 12.9898 + np.floor(v) * 78.233) * 43758.5453
        cell = (cell - np.floor(cell) - 0.5) * 0.14 * np.minimum(across, along)
        return (1 + cell) * (1 - 0.3 * np.maximum(jx, jz))

    ground = np.where((Z < kerb1)[..., None], near * tiles(_uniform(rng, 0.4, 0.7), 0.07)[..., None],
                      np.where((Z > kerb2)[..., None], far * tiles(_uniform(rng, 0.3, 0.6), 0.08)[..., None],
                               road * (1 + rng.normal(0, 0.05, X.shape).astype(_F32))[..., None]))
    kerb = (np.abs(Z - kerb1) < 0.15) | (np.abs(Z - kerb2) < 0.15)
    ground = np.where(kerb[..., None], np.array([170, 170, 165], _F32) * _uniform(rng, 0.8, 1.1), ground)
    xc, wc = _uniform(rng, -0.5, 0.3) * geo.half_width(kerb1), _uniform(rng, 3, 5)
    zebra = (Z > kerb1 + 0.4) & (Z < kerb2 - 0.4) & (X > xc) & (X < xc + wc) & ((X % 1.0) < 0.5)
    ground = np.where(zebra[..., None], np.array([215, 215, 210], _F32), ground)
    ground *= (1 + 0.08 * hard._resize(rng.normal(0, 1, (10, 14)), X.shape))[..., None]  # stains, wear
    a_sh = _uniform(rng, -1, 1)
    shadow = (a_sh, float(np.sqrt(1 - a_sh ** 2) * _sign(rng)), 0.0, _uniform(rng, 0.2, 0.35))
    shadow = (shadow[0], shadow[1], _uniform(rng, -4, 4) + shadow[1] * 15, shadow[3])
    light = 1 - shadow[3] * np.clip(0.5 - (shadow[0] * X + shadow[1] * Z - shadow[2]), 0, 1)
    img[top:] = ground * light[..., None]
    # street furniture: along the facades (behind everyone), the kerb's lamps, a few in the square
    placed: List[Tuple[str, float, float]] = []
    for _ in range(int(rng.integers(3, 7))):
        z = zw - _uniform(rng, 0.6, 2.0)
        placed.append((str(rng.choice(["bin", "bollard", "postbox", "planter", "sign", "bench", "lamp"])),
                       _uniform(rng, -1, 1) * geo.half_width(z), z))
    xl = -geo.half_width(kerb1) - _uniform(rng, 0, 16)
    while xl < geo.half_width(kerb1):
        placed.append(("lamp", xl, kerb1 - 0.4))
        xl += _uniform(rng, 13, 18)
    kinds = ["billboard"] + list(rng.choice(["bench", "bin", "bollard", "postbox", "planter", "sign"],
                                            size=int(rng.integers(2, 5))))
    for kind in kinds:
        z = _uniform(rng, 7.5, 15)
        placed.append((str(kind), _sign(rng) * _uniform(rng, 0.45, 0.95) * geo.half_width(z), z))
    things: List[_Layer] = []
    poster = _poster(rng)
    for kind, x, z in sorted(placed, key=lambda p: -p[2]):
        arr, ax, ay, wm = _draw_thing(kind, geo.focal / z, rng, cam, poster if kind == "billboard" else None)
        left, top_ = int(round(geo.column(x, z) - ax)), int(round(geo.row(z) - ay))
        lit = 1 - shadow[3] * float(np.clip(0.5 - (shadow[0] * x + shadow[1] * z - shadow[2]), 0, 1))
        _contact_shadow(img, geo.column(x, z), geo.row(z), 0.6 * wm * geo.focal / z + 1, 0.4 * geo.focal / z + 1)
        thing = _Layer(z, left, top_, arr[..., :3] * lit, arr[..., 3] / 255)
        if z >= _WALKER_MAX_Z:
            _blend(img, thing.left, thing.top, thing.rgb, thing.alpha)  # behind everyone: part of the background
        else:
            things.append(thing)
    # camera: colours, optics (a little blur, vignetting is per frame) and fixed-pattern grain
    img = hard._colour_rendition(img, cam, np.random.default_rng(0))
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(0.3 + 0.4 * H / 576))
    img = np.asarray(out, _F32) + rng.normal(0, 1.5, (H, W, 1)).astype(_F32)
    return img, things, shadow


def _overlap(shape: Tuple[int, ...], left: int, top: int, h: int, w: int
             ) -> Optional[Tuple[slice, slice, slice, slice]]:
    """(frame rows, frame cols, layer rows, layer cols) where an ``h x w`` layer at ``(left, top)`` meets
    a frame of ``shape``; None where it does not."""
    y0, x0, y1, x1 = max(0, top), max(0, left), min(shape[0], top + h), min(shape[1], left + w)
    if y1 <= y0 or x1 <= x0:
        return None
    return slice(y0, y1), slice(x0, x1), slice(y0 - top, y1 - top), slice(x0 - left, x1 - left)


def _blend(canvas: np.ndarray, left: int, top: int, rgb: np.ndarray, alpha: np.ndarray) -> None:
    """Paint ``rgb`` with coverage ``alpha`` at ``(left, top)``."""
    where = _overlap(canvas.shape, left, top, *alpha.shape)
    if where is not None:
        rows, cols, lr, lc = where
        region = canvas[rows, cols]
        region += alpha[lr, lc, None] * (rgb[lr, lc] - region)


def _contact_shadow(canvas: np.ndarray, x: float, y: float, rx: float, ry: float, depth: float = 0.35) -> None:
    """Darken a soft ellipse of ground around ``(x, y)``."""
    H, W = canvas.shape[:2]
    y0, y1 = int(max(0, np.floor(y - ry))), int(min(H, np.ceil(y + ry)))
    x0, x1 = int(max(0, np.floor(x - rx))), int(min(W, np.ceil(x + rx)))
    if y1 <= y0 or x1 <= x0:
        return
    yy = (np.arange(y0, y1, dtype=_F32)[:, None] + 0.5 - y) / ry
    xx = (np.arange(x0, x1, dtype=_F32)[None, :] + 0.5 - x) / rx
    canvas[y0:y1, x0:x1] *= (1 - depth * np.clip(1 - xx ** 2 - yy ** 2, 0, 1))[..., None]


class HardStreet:
    """The generated street of ``make_synthetic_video(..., style="hard")``, any frame on demand.

    A fixed camera 2.5 m above a square (horizon ~30% down the frame) looks at facades ~40 m away:
    people are ~7% of the frame height at the far side and up to ~35% near the camera, their height
    growing with the foot line (:class:`StreetGeometry`). The people are the hard ReID set's textured
    figures (:mod:`torchreid_privacy.data.synthetic_hard`) with a walking cycle; see :func:`_cast`
    for who does what (standing still from the first frame, a group side by side, someone crossing
    it, walking in and stopping for seconds, far away, walking towards or away). Street furniture
    stands in front of some of them. Each frame adds a slow global brightness drift, vignetting and
    sensor noise, so the background is never exactly the same twice.

    ``render(t, mask=True)`` also returns the person mask: pixels where a person shows (their share
    of the pixel > 1/255). Every such pixel lies in some gt box.

    Usage::

        street = HardStreet(frames=150, width=768, height=576)
        f = street.render(0, mask=True)     # f.image, f.boxes, f.visibility, f.mask
    """

    def __init__(self, frames: int = 80, width: int = 320, height: int = 240, fps: float = 10, people: int = 6,
                 seed: int = 0) -> None:
        self.frames, self.fps, self.seed = int(frames), float(fps), int(seed)
        rng = np.random.default_rng([seed, 20])
        self.geometry = StreetGeometry(int(width), int(height), 4 / 3 * height,
                                       height * _uniform(rng, 0.28, 0.32), _uniform(rng, 2.4, 2.6))
        self._cam = hard.make_camera(np.random.default_rng([seed, 21]))
        self._background, self._things, self._shadow = _street_hard(self.geometry, self._cam,
                                                                    np.random.default_rng([seed, 22]))
        idents = [hard.make_identity(np.random.default_rng([seed, 23, i])) for i in range(people)]
        heights = [1.5 + (ident.base.height - 0.82) / 0.18 * 0.4 for ident in idents]
        walks = _cast(people, frames, self.fps, self.geometry, heights, np.random.default_rng([seed, 24]))
        self.people: List[_Person] = []
        for i, (ident, metres, (path, rest)) in enumerate(zip(idents, heights, walks)):
            pose = hard._pose(ident.base, np.random.default_rng([seed, 25, i]), _SPRITE_SCALE,
                              figures.WIDTH * figures._SS / 2, _SPRITE_TOP)
            self.people.append(_Person(ident, metres, path, rest, pose, (seed, 26, i), {}))
        rng = np.random.default_rng([seed, 27])
        H, W = self.geometry.height, self.geometry.width
        self._noise = rng.normal(0, self._cam.noise * 0.7, (3, H + 8, W + 8, 3)).astype(_F32)
        yy = np.linspace(-1, 1, H, dtype=_F32)[:, None]
        xx = np.linspace(-1, 1, W, dtype=_F32)[None, :] * W / max(W, H)
        self._vignette = (1 - _uniform(rng, 0.12, 0.25) * (xx ** 2 + yy ** 2) / 2)[..., None]
        self._drift = [(_uniform(rng, 0.04, 0.08), self.fps * _uniform(rng, 6, 14), _uniform(rng, 0, 2 * np.pi)),
                       (_uniform(rng, 0.01, 0.025), self.fps * _uniform(rng, 2, 4), _uniform(rng, 0, 2 * np.pi))]

    def gain(self, t: int) -> float:
        """The slow global brightness drift at frame ``t``."""
        return float(np.exp(sum(a * np.sin(2 * np.pi * t / period + phase) for a, period, phase in self._drift)))

    def _sprite(self, person: _Person, view: str, phase: float, mirrored: bool) -> _Sprite:
        key = (view, round(phase, 3), mirrored)
        if key not in person.sprites:
            person.sprites[key] = _paint_sprite(person, view, phase, mirrored, self._cam)
        return person.sprites[key]

    def _place(self, track: int, person: _Person, t: int) -> Optional[_Layer]:
        """``person`` as drawn at frame ``t``, or None where no pixel of theirs is in the frame."""
        geo = self.geometry
        x, z, vx, vz, walked = person.path.at(t)
        if z < 1.0:
            return None
        view, mirrored = _view(vx, vz, person.rest_view)
        cycle = 1.4 * person.metres / 1.75  # metres per walking cycle (two steps)
        phase = float(np.sin(2 * np.pi * round(walked / cycle * 8) / 8)) if (vx or vz) else 0.0
        sprite = self._sprite(person, view, phase, mirrored)
        height = geo.pixels(person.metres, z)
        scale = height / _BODY_PX
        size = (max(1, int(round(sprite.image.width * scale))), max(1, int(round(sprite.image.height * scale))))
        fx, fy = geo.column(x, z), geo.row(z)
        left, top = int(round(fx - sprite.ax * scale)), int(round(fy - sprite.ay * scale))
        if left >= geo.width or top >= geo.height or left + size[0] <= 0 or top + size[1] <= 0:
            return None
        rgb, alpha, (bx0, by0, bx1, by1), body = _sized(sprite, size)
        box = (max(0, left + bx0), max(0, top + by0), min(geo.width, left + bx1), min(geo.height, top + by1))
        if box[2] <= box[0] or box[3] <= box[1]:
            return None
        a, b, c, depth = self._shadow
        lit = 1 - depth * float(np.clip(0.5 - (a * x + b * z - c), 0, 1))
        return _Layer(z, left, top, rgb * lit, alpha, track, box, body, (fx, fy, height))

    def render(self, t: int, mask: bool = False) -> StreetFrame:
        """Frame ``t`` (0-based), its gt rows and visibilities, and (``mask``) its person mask."""
        geo = self.geometry
        H, W = geo.height, geo.width
        layers = list(self._things)
        for i, person in enumerate(self.people):
            placed = self._place(i + 1, person, t)
            if placed is not None:
                layers.append(placed)
        layers.sort(key=lambda layer: (-layer.z, layer.track))  # far first
        canvas = self._background.copy()
        for layer in layers:
            if layer.track:
                fx, fy, h = layer.foot
                _contact_shadow(canvas, fx + 0.08 * h, fy, 0.28 * h + 0.5, 0.045 * h + 0.5)
            _blend(canvas, layer.left, layer.top, layer.rgb, layer.alpha)
        # near first: how much of each person the nearer people and things leave to be seen
        through = np.ones((H, W), _F32)
        seen: Dict[int, Tuple[_Layer, Tuple[slice, slice], np.ndarray, float]] = {}
        for layer in reversed(layers):
            where = _overlap((H, W), layer.left, layer.top, *layer.alpha.shape)
            if where is None:
                continue
            rows, cols, lr, lc = where
            a = layer.alpha[lr, lc]
            if layer.track:
                share = a * through[rows, cols]
                seen[layer.track] = (layer, (rows, cols), share > _SEEN, float(share.sum()) / max(layer.body, 1e-6))
            through[rows, cols] *= 1 - a
        # gt rows: everyone with a shown pixel, except someone hidden >= 90% whose shown pixels all lie
        # inside the boxes of those kept (their box would add no pixel to the union of boxes)
        keep = {k for k, (_, _, shown, vis) in seen.items() if vis >= _HIDDEN and shown.any()}
        covered = np.zeros((H, W), bool)
        for k in keep:
            x1, y1, x2, y2 = seen[k][0].box
            covered[y1:y2, x1:x2] = True
        for k in sorted(set(seen) - keep):
            layer, where, shown, _ = seen[k]
            if shown.any() and not covered[where][shown].all():
                keep.add(k)
                x1, y1, x2, y2 = layer.box
                covered[y1:y2, x1:x2] = True
        order = sorted(keep)
        boxes = np.asarray([(*seen[k][0].box, 1.0, k) for k in order], np.float64).reshape(-1, 6)
        visibility = np.asarray([min(1.0, seen[k][3]) for k in order], np.float64)
        person_mask = None
        if mask:
            person_mask = np.zeros((H, W), bool)
            for _, where, shown, _ in seen.values():
                person_mask[where] |= shown
        # the camera: brightness drift and vignetting, then sensor noise
        canvas *= self._vignette * self.gain(t)
        pick = np.random.default_rng([self.seed, 28, t])
        k, dy, dx = int(pick.integers(3)), int(pick.integers(9)), int(pick.integers(9))
        canvas += self._noise[k, dy:dy + H, dx:dx + W]
        image = np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)
        return StreetFrame(t, image, boxes, visibility, person_mask)


def render_hard_street(frames: int = 80, width: int = 320, height: int = 240, fps: float = 10, people: int = 6,
                       seed: int = 0, mask: bool = False) -> Iterator[StreetFrame]:
    """Every frame of the hard street in order (see :class:`HardStreet`)."""
    street = HardStreet(frames, width, height, fps, people, seed)
    for t in range(int(frames)):
        yield street.render(t, mask=mask)


def make_synthetic_video(path: PathLike, frames: int = 80, width: int = 320, height: int = 240, fps: int = 10,
                         people: int = 6, seed: int = 0, style: str = "plain") -> SyntheticVideo:
    """Write the video at ``path`` (codec by suffix; ``.mkv`` is lossless) with ``<stem>.gt.txt``
    (the true tracks) and ``<stem>.det.txt`` (noisy detections of them) beside it; never overwrites.

    ``style="plain"``: flat cartoon walkers of similar size crossing a flat street; a walker is
    annotated while at least half its width is inside the frame. ``style="hard"``
    (:class:`HardStreet`): what makes a pedestrian detector miss people, in perspective (people
    from ~7% to ~35% of the frame height, walking across and towards or away), standing still,
    in groups that occlude each other, textured, in front of a photo-like street with person-ish
    furniture, slow brightness drift and sensor noise; meant for 320x240 and 768x576 alike.
    Its gt.txt has a row for every person with a shown pixel in the frame (box clipped to the
    frame, column 9 the visibility: the share of the body neither behind nearer people or
    furniture nor outside the frame), except a person hidden by >= 90% whose shown pixels all lie
    inside other gt boxes; a whole-pixel box of every row therefore covers every person pixel.
    Same arguments -> the same decoded frames, gt.txt and det.txt (the container's own bytes may differ).
    """
    path = Path(path)
    for name, value, low in (("frames", frames, 2), ("people", people, 1), ("width", width, 64),
                             ("height", height, 64), ("fps", fps, 1)):
        if int(value) < low:
            raise ValueError(f"{name}: must be >= {low}, got {value}")
    if style not in STYLES:
        raise ValueError(f"style: must be one of {', '.join(STYLES)}, got {style!r}")
    gt_path, det_path = path.with_name(path.stem + ".gt.txt"), path.with_name(path.stem + ".det.txt")
    for p in (path, gt_path, det_path):
        if p.exists():
            raise FileExistsError(f"{p}: already exists; refusing to overwrite it")
    if style == "hard":
        return _make_hard(path, gt_path, det_path, frames, width, height, fps, people, seed)
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


def _make_hard(path: Path, gt_path: Path, det_path: Path, frames: int, width: int, height: int, fps: int,
               people: int, seed: int) -> SyntheticVideo:
    street = HardStreet(frames, width, height, fps, people, seed)
    gt: Dict[int, np.ndarray] = {}
    lines = []
    with VideoWriter(path, width, height, fps) as writer:
        for f in range(int(frames)):
            frame = street.render(f)
            writer.write(frame.image)
            if len(frame.boxes):
                gt[f] = frame.boxes
            for (x1, y1, x2, y2, _, track), vis in zip(frame.boxes, frame.visibility):
                lines.append(f"{f + 1},{int(track)},{x1:.2f},{y1:.2f},{x2 - x1:.2f},{y2 - y1:.2f},1,{PEDESTRIAN},"
                             f"{vis:.3f}")
    write_new(gt_path, ("\n".join(lines) + "\n").encode("utf-8"))  # write_mot's gt.txt, with visibilities
    write_mot(det_path, noisy_detections(gt, seed=seed, size=(width, height)))
    seen = {int(t) for b in gt.values() for t in b[:, 5]}
    return SyntheticVideo(path, gt_path, det_path, frames, len(seen), sum(len(b) for b in gt.values()))
