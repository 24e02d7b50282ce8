"""The people and cameras of the synthetic sets, drawn with PIL: identities (clothing, body,
accessories), poses, the plain style's cameras and crops.

Why a module of its own: the dataset generator (:mod:`.synthetic`) and the hard style
(:mod:`.synthetic_hard`, which dresses the same bodies in textures) both draw with it, and neither
imports the other's drawing.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

HEIGHT, WIDTH = 128, 64  # Market-1501's native bounding-box size
_SS = 2  # draw at 2x and downsample: anti-aliased edges for free

# Clothing palette, weighted towards the dark and neutral colours real pedestrians wear,
# so identities collide on single attributes and only the combination identifies.
_PALETTE = np.array([
    (30, 30, 35), (75, 75, 80), (140, 140, 140), (225, 225, 220), (35, 45, 90),
    (55, 95, 170), (135, 170, 210), (170, 35, 40), (220, 140, 160), (50, 120, 60),
    (110, 110, 60), (220, 200, 70), (220, 120, 40), (110, 75, 45), (200, 180, 140),
    (110, 60, 130),
], dtype=np.float64)
_PALETTE_P = np.array([5, 4, 4, 4, 4, 4, 3, 3, 2, 3, 2, 2, 2, 3, 3, 2], dtype=np.float64)
_PALETTE_P /= _PALETTE_P.sum()
_HAIR = np.array([(20, 18, 18), (70, 45, 30), (150, 110, 60), (200, 170, 110), (150, 150, 150)],
                 dtype=np.float64)
_HAIR_P = np.array([0.45, 0.3, 0.1, 0.08, 0.07])


# --------------------------------------------------------------------------- appearance
@dataclass(frozen=True)
class _Identity:
    upper: Tuple[int, ...]
    upper2: Tuple[int, ...]
    pattern: str  # plain | hstripes | vstripes | checks
    period: int
    long_sleeves: bool
    lower: Tuple[int, ...]
    lower_kind: str  # trousers | shorts | skirt
    shoes: Tuple[int, ...]
    skin: Tuple[int, ...]
    hair: Tuple[int, ...]
    long_hair: bool
    hat: Tuple[int, ...] | None
    backpack: Tuple[int, ...] | None
    bag: Tuple[int, ...] | None
    bag_side: int
    height: float
    width: float
    leg_frac: float


@dataclass(frozen=True)
class _Camera:
    bg: np.ndarray  # (2, 3) top/bottom base colours
    floor: np.ndarray  # (3,)
    floor_y: float
    gain: np.ndarray  # (3,) colour cast
    blur: float
    quality: int


def _rgb(values: np.ndarray) -> Tuple[int, ...]:
    return tuple(int(v) for v in np.clip(values, 0, 255))


def _colour(rng: np.random.Generator, avoid: int = -1) -> Tuple[Tuple[int, ...], int]:
    p = _PALETTE_P.copy()
    if avoid >= 0:
        p[avoid] = 0.0
        p /= p.sum()
    k = int(rng.choice(len(_PALETTE), p=p))
    return _rgb(_PALETTE[k] + rng.normal(0, 10, 3)), k


def _make_identity(rng: np.random.Generator) -> _Identity:
    upper, k_up = _colour(rng)
    upper2, _ = _colour(rng, avoid=k_up)
    lower, _ = _colour(rng)
    shoes, _ = _colour(rng)
    skin_t = rng.uniform(0, 1)
    skin = _rgb(np.array([235, 200, 170]) * (1 - skin_t) + np.array([110, 75, 50]) * skin_t)
    hair = _rgb(_HAIR[rng.choice(len(_HAIR), p=_HAIR_P)] + rng.normal(0, 8, 3))
    return _Identity(
        upper=upper, upper2=upper2,
        pattern=str(rng.choice(["plain", "hstripes", "vstripes", "checks"], p=[0.4, 0.25, 0.1, 0.25])),
        period=int(rng.integers(6, 13)), long_sleeves=bool(rng.random() < 0.6),
        lower=lower, lower_kind=str(rng.choice(["trousers", "shorts", "skirt"], p=[0.6, 0.2, 0.2])),
        shoes=shoes, skin=skin, hair=hair, long_hair=bool(rng.random() < 0.3),
        hat=_colour(rng)[0] if rng.random() < 0.2 else None,
        backpack=_colour(rng)[0] if rng.random() < 0.3 else None,
        bag=_colour(rng)[0] if rng.random() < 0.3 else None, bag_side=int(rng.choice([-1, 1])),
        height=float(rng.uniform(0.82, 1.0)), width=float(rng.uniform(0.8, 1.2)),
        leg_frac=float(rng.uniform(0.42, 0.52)),
    )


def _make_camera(rng: np.random.Generator) -> _Camera:
    # muted scene colours (grey level plus a little tint), as streets and corridors are; the
    # per-image texture varies more than the cameras differ, so background is a weak camera cue
    base = rng.uniform(90, 170) + rng.normal(0, 10, 3)
    return _Camera(
        bg=np.clip(np.stack([base, base + rng.normal(0, 20) + rng.normal(0, 6, 3)]), 0, 255),
        floor=np.clip(rng.uniform(80, 160) + rng.normal(0, 8, 3), 0, 255),
        floor_y=float(rng.uniform(0.75, 0.9)),
        gain=np.exp(rng.normal(0, 0.06, 3)), blur=float(rng.choice([0.0, 0.0, 0.4, 0.7])),
        quality=int(rng.integers(75, 96)),
    )


@dataclass(frozen=True)
class _Pose:
    """Where and how one person stands; the defaults of the last fields are the plain style's."""

    scale: float
    cx: float
    top: float
    back_view: bool
    phase: float  # walking cycle, in [-1, 1]
    side: int  # bag side after mirroring
    girth: float = 1.0  # torso width factor (< 1: side view)
    stride: float = 1.0  # leg swing factor
    hands: Tuple[Tuple[float, float], ...] = ((0.0, 0.0), (0.0, 0.0))  # hand offsets, in person heights


def _plain_pose(ident: _Identity, rng: np.random.Generator) -> _Pose:
    """Upright and centred; draws in the order the plain style always has, so its bytes stay the same."""
    scale = ident.height * rng.uniform(0.88, 1.0)
    cx = WIDTH * _SS / 2 + rng.normal(0, 2.0) * _SS
    top = (HEIGHT * _SS - 0.9 * HEIGHT * _SS * scale) / 2 + rng.normal(0, 2.0) * _SS
    back_view = bool(rng.random() < 0.5)
    phase = float(np.sin(rng.uniform(0, 2 * np.pi)))
    side = ident.bag_side * (1 if rng.random() < 0.5 else -1)  # mirrored views swap the bag side
    return _Pose(float(scale), float(cx), float(top), back_view, phase, side)


# --------------------------------------------------------------------------- rendering
def _background(cam: _Camera, rng: np.random.Generator) -> Image.Image:
    """Smooth camera-specific colours plus random low-frequency texture and a floor."""
    h, w = HEIGHT * _SS, WIDTH * _SS
    grid = np.linspace(0, 1, 8)[:, None, None]
    # mostly brightness texture with a little chroma, like shaded walls and pavements
    texture = rng.normal(0, 25, (1, 1, 1)) + rng.normal(0, 15, (8, 4, 1)) + rng.normal(0, 5, (8, 4, 3))
    coarse = cam.bg[0] * (1 - grid) + cam.bg[1] * grid + texture
    img = np.asarray(Image.fromarray(np.clip(coarse, 0, 255).astype(np.uint8)).resize(
        (w, h), Image.Resampling.BICUBIC), dtype=np.float64)
    floor_y = int(h * np.clip(cam.floor_y + rng.normal(0, 0.03), 0.6, 0.95))
    img[floor_y:] = 0.3 * img[floor_y:] + 0.7 * (cam.floor + rng.normal(0, 12, 3))
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for _ in range(int(rng.integers(0, 4))):  # clutter: poles, signs, shop fronts
        x0, y0 = rng.uniform(0, w), rng.uniform(0, h)
        bw, bh = rng.uniform(4, 40), rng.uniform(10, 120)
        draw.rectangle([x0, y0, x0 + bw, y0 + bh], fill=_rgb(rng.uniform(30, 220) + rng.normal(0, 20, 3)))
    return out


def _draw_person(draw: ImageDraw.ImageDraw, ident: _Identity, pose: _Pose) -> None:
    """Flat-filled body parts in ``ident``'s colours (the hard style passes part labels)."""
    s = _SS
    scale, cx, top, back_view, phase, side = (pose.scale, pose.cx, pose.top, pose.back_view, pose.phase,
                                              pose.side)
    ph = 0.9 * HEIGHT * s * scale  # person height in drawing pixels
    r = 0.07 * ph  # head radius
    tw = 0.27 * ph * ident.width / 2 * pose.girth  # torso half-width
    neck = top + 2 * r
    hip = top + (1 - ident.leg_frac) * ph
    foot = top + ph

    # arms (behind the torso), legs, shoes
    swing = phase * 0.12 * ph
    arm_w = 0.28 * tw
    for (sgn, sw), (dx, dy) in zip(((-1, swing), (1, -swing)), pose.hands):
        x = cx + sgn * (tw + arm_w * 0.6)
        hand = (x + sw * 0.3 + dx * ph, hip + 0.05 * ph + dy * ph)
        colour = ident.upper if ident.long_sleeves else ident.skin
        draw.line([(x, neck + r * 0.4), hand], fill=colour, width=max(2, int(arm_w * 1.2)))
        if not ident.long_sleeves:
            elbow = (x + sw * 0.1, neck + 0.3 * (hip - neck))
            draw.line([(x, neck + r * 0.4), elbow], fill=ident.upper, width=max(2, int(arm_w * 1.3)))
        draw.ellipse([hand[0] - arm_w * 0.6, hand[1] - arm_w * 0.6, hand[0] + arm_w * 0.6,
                      hand[1] + arm_w * 0.6], fill=ident.skin)
    leg_w = 0.42 * tw
    stride = phase * 0.1 * ph * pose.stride
    for sgn, st in ((-1, stride), (1, -stride)):
        x_hip = cx + sgn * tw * 0.45
        x_foot = x_hip + st
        draw.line([(x_hip, hip), (x_foot, foot - 0.03 * ph)], fill=ident.lower, width=int(leg_w * 2))
        if ident.lower_kind != "trousers":
            knee = hip + 0.45 * (foot - hip)
            draw.line([(x_hip + st * 0.45, knee), (x_foot, foot - 0.03 * ph)], fill=ident.skin,
                      width=int(leg_w * 1.6))
        draw.rectangle([x_foot - leg_w, foot - 0.04 * ph, x_foot + leg_w * 1.2, foot], fill=ident.shoes)
    if ident.lower_kind == "skirt":
        draw.polygon([(cx - tw, hip - 0.02 * ph), (cx + tw, hip - 0.02 * ph),
                      (cx + tw * 1.35, hip + 0.2 * ph), (cx - tw * 1.35, hip + 0.2 * ph)], fill=ident.lower)

    # torso with pattern
    box = (cx - tw, neck, cx + tw, hip + 0.02 * ph)
    draw.rounded_rectangle(box, radius=int(tw * 0.3), fill=ident.upper)
    p = ident.period * s * scale
    if ident.pattern == "hstripes":
        for y in np.arange(box[1] + p / 2, box[3] - p / 4, p):
            draw.rectangle([box[0], y, box[2], y + p / 2], fill=ident.upper2)
    elif ident.pattern == "vstripes":
        for x in np.arange(box[0] + p / 2, box[2] - p / 4, p):
            draw.rectangle([x, box[1], x + p / 2, box[3]], fill=ident.upper2)
    elif ident.pattern == "checks":
        for i, y in enumerate(np.arange(box[1], box[3] - 1, p / 2)):
            for x in np.arange(box[0] + (i % 2) * p / 2, box[2] - 1, p):
                draw.rectangle([x, y, min(x + p / 2, box[2]), min(y + p / 2, box[3])], fill=ident.upper2)

    # accessories
    if ident.backpack is not None:
        if back_view:
            draw.rounded_rectangle([cx - tw * 0.8, neck + 0.1 * ph, cx + tw * 0.8, hip - 0.03 * ph],
                                   radius=int(tw * 0.25), fill=ident.backpack)
        else:
            for sgn in (-1, 1):
                draw.line([(cx + sgn * tw * 0.6, neck), (cx + sgn * tw * 0.6, hip - 0.08 * ph)],
                          fill=ident.backpack, width=max(2, int(tw * 0.18)))
    if ident.bag is not None:
        bx = cx + side * (tw + arm_w * 1.5)
        draw.line([(cx - side * tw * 0.7, neck), (bx, hip - 0.04 * ph)], fill=ident.bag,
                  width=max(2, int(tw * 0.12)))
        draw.rectangle([bx - tw * 0.45, hip - 0.06 * ph, bx + tw * 0.45, hip + 0.1 * ph], fill=ident.bag)

    # head, hair, hat
    head = [cx - r * 0.85, top, cx + r * 0.85, top + 2 * r]
    draw.ellipse(head, fill=ident.hair if back_view else ident.skin)
    if ident.long_hair:
        draw.rectangle([cx - r * 0.9, top + r, cx + r * 0.9, neck + 0.08 * ph], fill=ident.hair)
        if not back_view:
            draw.ellipse([cx - r * 0.6, top + r * 0.5, cx + r * 0.6, top + 2 * r], fill=ident.skin)
    if not back_view:
        draw.chord(head, 180, 360, fill=ident.hair)
    if ident.hat is not None:
        draw.chord([cx - r * 0.95, top - r * 0.25, cx + r * 0.95, top + 1.5 * r], 180, 360, fill=ident.hat)
        draw.rectangle([cx - r * 1.2, top + r * 0.7, cx + r * 1.2, top + r * 0.9], fill=ident.hat)


def _occlude(draw: ImageDraw.ImageDraw, rng: np.random.Generator) -> None:
    """Another object in front of the person: from the bottom or a side."""
    h, w = HEIGHT * _SS, WIDTH * _SS
    colour = _rgb(rng.uniform(20, 235, 3))
    if rng.random() < 0.5:
        y0 = h * rng.uniform(0.6, 0.8)
        draw.rectangle([0, y0, w, h], fill=colour)
    else:
        x0 = w * rng.uniform(0.55, 0.75)
        box = [x0, h * rng.uniform(0, 0.4), w, h * rng.uniform(0.6, 1.0)]
        if rng.random() < 0.5:
            box = [0, box[1], w - x0, box[3]]
        draw.rectangle(box, fill=colour)


def _finish(img: Image.Image, cam: _Camera, rng: np.random.Generator) -> bytes:
    """Downsample, camera blur, colour cast, sensor noise, JPEG."""
    img = img.reduce(_SS)
    if cam.blur > 0:
        img = img.filter(ImageFilter.GaussianBlur(cam.blur))
    arr = np.asarray(img, dtype=np.float64)
    gain = cam.gain * np.exp(rng.normal(0, 0.03, 3)) * rng.uniform(0.85, 1.15)
    arr = arr * gain + rng.normal(0, 4.0, arr.shape)
    out = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, format="JPEG", quality=cam.quality)
    return buf.getvalue()


def _render(ident: _Identity | None, cam: _Camera, rng: np.random.Generator) -> bytes:
    """One bounding box; ``ident=None`` renders a junk box (background / body fragment)."""
    img = _background(cam, rng)
    draw = ImageDraw.Draw(img)
    if ident is not None:
        _draw_person(draw, ident, _plain_pose(ident, rng))
        if rng.random() < 0.1:
            _occlude(draw, rng)
    return _finish(img, cam, rng)
