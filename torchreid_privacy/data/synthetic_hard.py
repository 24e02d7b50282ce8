"""The ``hard`` style of the synthetic Market-1501 (``make_synthetic_market(..., style="hard")``).

Why: on the plain style's flat cartoon figures the quickstart's tiny CNN reaches ~80% test
rank-1, so privacy attacks measured on it understate what leaks from real crops; here it
reaches ~40% (chance: 2%). Identities are the plain style's (colours, body shape,
accessories), drawn by the same body code as part labels and textured afterwards: fabric
grain, folds, shading, stripes/plaids/dots with a random phase, prints and logos. Every crop
adds what real detections have: cluttered scenes with other people, scale/crop/pose changes,
frequent occlusion, directional light and shadows, strong per-camera colour (white balance,
gamma, saturation), low-resolution cameras, motion blur and JPEG quality 40-90.
"""
from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from torchreid_privacy.data.synthetic_people import (
    HEIGHT,
    WIDTH,
    _SS,
    _colour,
    _draw_person,
    _Identity,
    _make_identity,
    _Pose,
)

_H, _W = HEIGHT * _SS, WIDTH * _SS  # the body code draws at 2x; poses are in these pixels
_F32 = np.float32
# part labels: the body code draws these as "colours" into an L image
_UPPER, _LOWER, _SKIN, _HAIR, _SHOES, _HAT, _BACKPACK, _BAG = range(1, 9)
_UPPER_TEX = ("knit", "hstripes", "vstripes", "plaid", "gradient", "dots", "jacket", "camo")
_UPPER_TEX_P = (0.2, 0.15, 0.08, 0.13, 0.1, 0.08, 0.14, 0.12)
_LOWER_TEX = ("plain", "denim", "pinstripe", "plaid", "cargo")
_LOWER_TEX_P = (0.4, 0.25, 0.1, 0.1, 0.15)
_LOGOS = ("disc", "bar", "text", "block")
_LUMA = np.array([0.299, 0.587, 0.114], _F32)


@dataclass(frozen=True)
class HardIdentity:
    """A plain identity plus its fabric: textures, two more colours, a chest logo."""

    base: _Identity
    labels: _Identity  # ``base`` with part labels for colours, for the body code
    lut: np.ndarray  # (9, 3) colour of each part label
    upper2: np.ndarray  # (3,) stripes, plaid, shirt under the jacket
    upper3: np.ndarray  # (3,) print / logo colour
    lower2: np.ndarray  # (3,)
    upper_tex: str
    period: float  # of stripes, plaids and dots, in person heights
    lower_tex: str
    logo: Optional[str]
    logo_at: Tuple[float, float]  # (u, v) of its centre, in person heights
    grain: float  # fabric noise amplitude


@dataclass(frozen=True)
class HardCamera:
    """A scene and a camera: wall/floor look, colour rendition and degradations."""

    wall: np.ndarray  # (3,)
    wall_kind: str  # bricks | tiles | panels | plaster
    floor: np.ndarray  # (3,)
    floor_y: float  # fraction of the height
    wb: np.ndarray  # (3,) white-balance gains
    gamma: float
    saturation: float
    tint: np.ndarray  # (3,) additive
    lowres: float  # downscale factor of a low-resolution camera (1: none)
    blur: float
    noise: float
    quality: int  # centre of its JPEG quality range


def make_identity(rng: np.random.Generator) -> HardIdentity:
    """The plain identity drawn from ``rng``, then its fabric from the same stream."""
    base = _make_identity(rng)
    lut = np.zeros((9, 3), _F32)
    for label, colour in ((_UPPER, base.upper), (_LOWER, base.lower), (_SKIN, base.skin), (_HAIR, base.hair),
                          (_SHOES, base.shoes), (_HAT, base.hat), (_BACKPACK, base.backpack), (_BAG, base.bag)):
        if colour is not None:
            lut[label] = colour

    def label(colour: Optional[Tuple[int, ...]], value: int) -> Optional[Tuple[int, ...]]:
        return None if colour is None else (value,)

    labels = dataclasses.replace(
        base, upper=(_UPPER,), upper2=(_UPPER,), pattern="plain", lower=(_LOWER,), skin=(_SKIN,), hair=(_HAIR,),
        shoes=(_SHOES,), hat=label(base.hat, _HAT), backpack=label(base.backpack, _BACKPACK),
        bag=label(base.bag, _BAG))
    return HardIdentity(
        base=base, labels=labels, lut=lut, upper2=np.array(base.upper2, _F32), upper3=np.array(_colour(rng)[0], _F32),
        lower2=np.array(_colour(rng)[0], _F32), upper_tex=str(rng.choice(_UPPER_TEX, p=_UPPER_TEX_P)),
        period=float(rng.uniform(0.025, 0.06)), lower_tex=str(rng.choice(_LOWER_TEX, p=_LOWER_TEX_P)),
        logo=str(rng.choice(_LOGOS)) if rng.random() < 0.35 else None,
        logo_at=(float(rng.uniform(-0.03, 0.03)), float(rng.uniform(0.2, 0.28))),
        grain=float(rng.uniform(0.03, 0.1)))


def make_camera(rng: np.random.Generator) -> HardCamera:
    """Scene colours and a strong, camera-specific colour rendition."""
    return HardCamera(
        wall=np.clip(rng.uniform(60, 200) + rng.normal(0, 18, 3), 0, 255).astype(_F32),
        wall_kind=str(rng.choice(["bricks", "tiles", "panels", "plaster"])),
        floor=np.clip(rng.uniform(60, 170) + rng.normal(0, 10, 3), 0, 255).astype(_F32),
        floor_y=float(rng.uniform(0.6, 0.85)),
        wb=np.exp(rng.normal(0, 0.08, 3)).astype(_F32), gamma=float(np.exp(rng.uniform(-0.08, 0.08))),
        saturation=float(rng.uniform(0.85, 1.2)), tint=rng.normal(0, 4, 3).astype(_F32),
        lowres=float(rng.choice([1.0, 1.0, 1.5, 2.0, 2.0])), blur=float(rng.choice([0.0, 0.4, 0.7])),
        noise=float(rng.uniform(2, 7)), quality=int(rng.integers(48, 83)))


# --------------------------------------------------------------------------- people
def _resize(a: np.ndarray, shape: Tuple[int, int]) -> np.ndarray:
    """Smooth upsampling of a small noise field to ``shape`` (rows, cols)."""
    return np.asarray(Image.fromarray(a.astype(_F32), "F").resize((shape[1], shape[0]), Image.Resampling.BICUBIC))


def _stripes(t: np.ndarray, phase: float, duty: float) -> np.ndarray:
    return (((t + phase) % 1.0) < duty).astype(_F32)


def _pose(ident: _Identity, rng: np.random.Generator, scale: float, cx: float, top: float) -> _Pose:
    """Front, back or side view; walking or standing wide; a hand raised or in a pocket."""
    view = int(rng.choice(3, p=[0.35, 0.35, 0.3]))  # front, back, side
    girth = 0.6 if view == 2 else float(rng.uniform(0.9, 1.1))
    tw = 0.27 * ident.width / 2 * girth  # torso half-width, in person heights
    hands = [(0.0, 0.0), (0.0, 0.0)]
    arm, act = int(rng.integers(2)), rng.random()
    inward = 1 if arm == 0 else -1
    if act < 0.2:  # phone or cup: the hand comes up to the chest or the ear
        hands[arm] = (inward * tw * rng.uniform(0.8, 1.6), -rng.uniform(0.2, 0.35))
    elif act < 0.3:  # hand in a pocket
        hands[arm] = (inward * tw * 0.5, -0.06)
    return _Pose(scale=scale, cx=cx, top=top, back_view=view == 1, phase=float(np.sin(rng.uniform(0, 2 * np.pi))),
                 side=ident.bag_side * int(rng.choice([-1, 1])), girth=girth,
                 stride=float(rng.uniform(1.4, 2.2) if view == 2 else rng.uniform(0.2, 1.3)), hands=tuple(hands))


def _upper_mix(ident: HardIdentity, u: np.ndarray, v: np.ndarray, front: bool, rng: np.random.Generator
               ) -> np.ndarray:
    """Weight of the second colour on the upper body, broadcastable to (rows, cols).

    ``u`` (1, cols) and ``v`` (rows, 1) are body coordinates in person heights.
    """
    p, kind = ident.period, ident.upper_tex
    ph1, ph2 = rng.random(2)  # random phase: the print moves with the cloth
    if kind == "hstripes":
        return _stripes(v / p, ph1, 0.4)
    if kind == "vstripes":
        return _stripes(u / p, ph1, 0.4)
    if kind == "plaid":
        return 0.5 * _stripes(v / p, ph1, 0.35) + 0.5 * _stripes(u / p, ph2, 0.35)
    if kind == "dots":
        return ((((u / p + ph1) % 1 - 0.5) ** 2 + ((v / p + ph2) % 1 - 0.5) ** 2) < 0.06).astype(_F32)
    if kind == "gradient":
        return np.clip((v - 0.15) / 0.35, 0, 1)
    if kind == "jacket":  # open jacket over a shirt, seen from the front only
        return (np.abs(u) < 0.05 * ident.base.width * front).astype(_F32)
    if kind == "camo":
        return (_resize(rng.normal(0, 1, (8, 4)), (v.shape[0], u.shape[1])) > 0.3).astype(_F32)
    return np.zeros((1, 1), _F32)  # knit: the grain alone


def _lower_mix(ident: HardIdentity, u: np.ndarray, v: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Like :func:`_upper_mix`, for the second colour of trousers and skirts."""
    p, kind = ident.period, ident.lower_tex
    ph1, ph2 = rng.random(2)
    if kind == "denim":  # fine diagonal twill, low contrast
        return 0.3 * _stripes((u + v) / 0.012, ph1, 0.5)
    if kind == "pinstripe":
        return _stripes(u / p, ph1, 0.15)
    if kind == "plaid":
        return 0.5 * _stripes(v / p, ph1, 0.35) + 0.5 * _stripes(u / p, ph2, 0.35)
    if kind == "cargo":  # side pockets on the thighs
        return ((np.abs(np.abs(u) - 0.07) < 0.025) & (np.abs(v - 0.7) < 0.04)).astype(_F32)
    return np.zeros((1, 1), _F32)


def _logo(ident: HardIdentity, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Where the chest print is (bool, broadcastable like the mixes)."""
    du, dv, r = np.abs(u - ident.logo_at[0]), np.abs(v - ident.logo_at[1]), 0.035
    if ident.logo == "disc":
        return du ** 2 + dv ** 2 < r ** 2
    if ident.logo == "bar":
        return (du < 1.6 * r) & (dv < 0.5 * r)
    if ident.logo == "text":
        return (du < 1.8 * r) & (dv < 0.4 * r) & (_stripes(u / (0.5 * r), 0.0, 0.6) > 0)
    return (du < r) & (dv < r)


def _paint(canvas: np.ndarray, ident: HardIdentity, pose: _Pose, rng: np.random.Generator) -> None:
    """Draw ``ident`` in ``pose`` onto the canvas: part labels at 2x, textured and shaded at 1x."""
    layer = Image.new("L", (_W, _H))
    _draw_person(ImageDraw.Draw(layer), ident.labels, pose)
    ph = 0.9 * _H * pose.scale  # in drawing (2x) pixels, as the pose
    foot, lean = pose.top + ph, float(rng.normal(0, 0.04))
    layer = layer.transform(layer.size, Image.Transform.AFFINE, (1, lean, -lean * foot, 0, 1, 0),
                            Image.Resampling.NEAREST)  # slight lean: a shear about the feet
    box = layer.getbbox()
    if box is None:
        return
    x0, y0, x1, y1 = box[0] // _SS, box[1] // _SS, -(-box[2] // _SS), -(-box[3] // _SS)
    blocks = np.asarray(layer)[y0 * _SS:y1 * _SS, x0 * _SS:x1 * _SS].reshape(y1 - y0, _SS, x1 - x0, _SS)
    lab = blocks.max((1, 3))
    alpha = (blocks > 0).mean((1, 3), dtype=_F32)[..., None]  # anti-aliased silhouette
    ys = (np.arange(y0, y1, dtype=_F32)[:, None] + 0.5) * _SS
    u = ((np.arange(x0, x1, dtype=_F32)[None, :] + 0.5) * _SS + lean * (ys - foot) - pose.cx) / ph
    v = (ys - pose.top) / ph
    front = not pose.back_view and pose.girth > 0.8
    colour = ident.lut[lab]
    upper, lower = (lab == _UPPER)[..., None], (lab == _LOWER)[..., None]
    m = _upper_mix(ident, u, v, front, rng)[..., None]
    colour = np.where(upper, (1 - m) * colour + m * ident.upper2, colour)
    if ident.logo is not None and front:
        colour = np.where(upper & _logo(ident, u, v)[..., None], ident.upper3, colour)
    m = _lower_mix(ident, u, v, rng)[..., None]
    colour = np.where(lower, (1 - m) * colour + m * ident.lower2, colour)
    # round body, light from one side, folds, fabric grain
    across = np.clip(u / (0.19 * ident.base.width * pose.girth), -1, 1)
    shade = (1 - 0.3 * across ** 2) * (1 + float(rng.uniform(-0.1, 0.1)) * across)
    shade = shade * (1 + 0.15 * _resize(rng.normal(0, 1, (8, 5)), lab.shape))
    shade = shade * (1 + rng.normal(0, ident.grain, lab.shape).astype(_F32))
    region = canvas[y0:y1, x0:x1]
    region += alpha * (colour * shade[..., None] - region)


def _person_at(ident: HardIdentity, rng: np.random.Generator, height: float, cx: float, foot: float) -> _Pose:
    """A pose of ``ident`` whose body is ``height`` crop heights tall; ``cx``, ``foot`` in crop pixels."""
    scale = height / 0.9
    return _pose(ident.base, rng, scale, cx * _SS, foot * _SS - 0.9 * _H * scale)


# --------------------------------------------------------------------------- scene
def _wall_lines(kind: str, ys: np.ndarray, xs: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Brightness factor of the wall pattern: mortar, tile joints, panel seams, plaster."""
    size, py, px = rng.uniform(0.7, 1.4), rng.uniform(0, 50), rng.uniform(0, 50)
    if kind == "bricks":
        bh, bw = 7 * size, 17 * size
        row = np.floor((ys + py) / bh)
        joint = (((ys + py) % bh) < 1.2) | (((xs + px + (row % 2) * bw / 2) % bw) < 1.2)
        return np.where(joint, 0.78, 1.0).astype(_F32)
    if kind == "tiles":
        t = 12 * size
        return np.where((((ys + py) % t) < 1) | (((xs + px) % t) < 1), 1.12, 1.0).astype(_F32)
    if kind == "panels":
        w = 20 * size
        return (0.85 + 0.3 * ((xs + px) % w) / w + 0 * ys).astype(_F32)
    return 1 + 0.2 * _resize(rng.normal(0, 1, (16, 8)), (HEIGHT, WIDTH))


def _scene(cam: HardCamera, rng: np.random.Generator) -> np.ndarray:
    """Textured wall and pavement, poles, signs, windows, cables and people further away."""
    ys, xs = np.arange(HEIGHT, dtype=_F32)[:, None], np.arange(WIDTH, dtype=_F32)[None, :]
    wall = cam.wall * float(np.exp(rng.normal(0, 0.06)))
    img = (1 + 0.15 * _resize(rng.normal(0, 1, (8, 4)), (HEIGHT, WIDTH))) * _wall_lines(cam.wall_kind, ys, xs, rng)
    img = img[..., None] * wall
    fy = HEIGHT * float(np.clip(cam.floor_y + rng.normal(0, 0.05), 0.45, 0.95))
    # pavement joints in perspective: rows denser towards the horizon, columns towards a vanishing point
    depth = np.log(np.maximum(ys - fy, 0) + 4)
    col = (xs - rng.uniform(0, WIDTH)) / (ys - fy + 15)
    joint = (((4 * depth + rng.random()) % 1) < 0.1) | (((3 * col + rng.random()) % 1) < 0.06)
    floor = cam.floor * float(np.exp(rng.normal(0, 0.06)))
    floor_img = floor * (np.where(joint, 0.75, 1.0) + 0.1 * _resize(rng.normal(0, 1, (8, 4)), (HEIGHT, WIDTH))
                         )[..., None]
    img = np.where((ys > fy)[..., None], floor_img, img)
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for _ in range(int(rng.integers(1, 6))):
        _clutter(draw, wall, rng)
    img = np.asarray(out, dtype=_F32).copy()
    for _ in range(int(rng.random() < 0.2)):  # someone further away
        far = make_identity(rng)
        _paint(img, far, _person_at(far, rng, rng.uniform(0.25, 0.5), rng.uniform(0, WIDTH), fy + rng.uniform(0, 10)),
               rng)
    return img


def _clutter(draw: ImageDraw.ImageDraw, wall: np.ndarray, rng: np.random.Generator) -> None:
    """One object of the scene, in muted wall-like or (sometimes) loud colours."""
    colour = wall * rng.uniform(0.6, 1.4) if rng.random() < 0.9 else rng.uniform(20, 235, 3)
    fill = tuple(int(c) for c in np.clip(colour + rng.normal(0, 12, 3), 0, 255))
    edge = tuple(int(c * 0.6) for c in fill)
    x, y = rng.uniform(-5, WIDTH), rng.uniform(-5, HEIGHT)
    kind = rng.random()
    if kind < 0.25:  # pole or pillar
        draw.rectangle([x, rng.uniform(-5, 0.3 * HEIGHT), x + rng.uniform(1.5, 7), HEIGHT], fill=fill, outline=edge)
    elif kind < 0.55:  # sign, box, bin, shop window
        draw.rectangle([x, y, x + rng.uniform(5, 30), y + rng.uniform(5, 35)], fill=fill, outline=edge,
                       width=int(rng.integers(1, 3)))
    elif kind < 0.75:  # bush, lamp, round sign
        r = rng.uniform(2.5, 12)
        draw.ellipse([x - r, y - r, x + r, y + r * rng.uniform(0.6, 1.4)], fill=fill, outline=edge)
    else:  # cable, kerb, railing, shadow edge
        draw.line([(x, y), (x + rng.uniform(-75, 75), y + rng.uniform(-30, 30))], fill=fill,
                  width=int(rng.integers(1, 3)))


def _bystander(canvas: np.ndarray, rng: np.random.Generator, reach: Tuple[float, float]) -> None:
    """Someone else, centred ``reach`` half-widths off the middle: cut by the border or overlapping."""
    other = make_identity(rng)
    cx = WIDTH / 2 * (1 + rng.choice([-1, 1]) * rng.uniform(*reach))
    _paint(canvas, other, _person_at(other, rng, rng.uniform(0.7, 1.05), cx, HEIGHT * rng.uniform(0.9, 1.05)), rng)


def _occluder(canvas: np.ndarray, rng: np.random.Generator) -> None:
    """A textured object in front: bench, car or railing from below, pillar or door from a side."""
    ys, xs = np.arange(HEIGHT, dtype=_F32)[:, None], np.arange(WIDTH, dtype=_F32)[None, :]
    if rng.random() < 0.55:
        y0 = HEIGHT * rng.uniform(0.55, 0.85)
        mask = ys >= y0
        if rng.random() < 0.4:  # railing: bars and a top rail
            mask = mask & ((_stripes(xs / rng.uniform(4, 10), rng.random(), 0.35) > 0) | (ys < y0 + 3))
    else:
        x0 = WIDTH * rng.uniform(0.6, 0.85)
        mask = ((xs >= x0) if rng.random() < 0.5 else (xs <= WIDTH - x0)) & (ys >= 0)
    texture = (1 + 0.12 * _resize(rng.normal(0, 1, (8, 4)), (HEIGHT, WIDTH))
               + rng.normal(0, 0.04, (HEIGHT, WIDTH)).astype(_F32))
    canvas[...] = np.where(mask[..., None], rng.uniform(20, 235, 3).astype(_F32) * texture[..., None], canvas)


# --------------------------------------------------------------------------- camera
def _light(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Exposure, contrast, a directional light gradient and sometimes a cast shadow."""
    ys = np.linspace(-0.5, 0.5, HEIGHT, dtype=_F32)[:, None]
    xs = np.linspace(-0.5, 0.5, WIDTH, dtype=_F32)[None, :]
    angle, slope = rng.uniform(0, 2 * np.pi), float(rng.uniform(0, 0.15))
    along = xs * float(np.cos(angle)) + ys * float(np.sin(angle))
    light = (1 + slope * along) * float(np.exp(rng.normal(0, 0.06)))
    if rng.random() < 0.12:  # the shadow of a building or tree: a soft half-plane or band
        small = Image.new("L", (WIDTH // 4, HEIGHT // 4), 255)
        x0, x1 = rng.uniform(-4, WIDTH // 4 + 4, 2)
        dark = int(255 * rng.uniform(0.6, 0.85))
        ImageDraw.Draw(small).polygon([(x0, -1), (x1, HEIGHT // 4 + 1), (WIDTH, HEIGHT), (WIDTH, -1)], fill=dark)
        light = light * np.asarray(small.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR), _F32) / 255
    img = img * light[..., None]
    mean = float(img.mean())
    return (img - mean) * float(np.exp(rng.normal(0, 0.04))) + mean


def _colour_rendition(img: np.ndarray, cam: HardCamera, rng: np.random.Generator) -> np.ndarray:
    """White balance, saturation, gamma and tint of the camera (with a little per-frame drift)."""
    x = np.clip(img / 255, 0, 1) * (cam.wb * np.exp(rng.normal(0, 0.02, 3))).astype(_F32)
    luma = x @ _LUMA
    x = np.clip(luma[..., None] + cam.saturation * (x - luma[..., None]), 0, 1) ** cam.gamma
    return x * 255 + cam.tint


def _finish(canvas: np.ndarray, cam: HardCamera, rng: np.random.Generator) -> bytes:
    """Light, colour, motion blur, low resolution, defocus, sensor noise, JPEG 40-90."""
    img = _colour_rendition(_light(canvas, rng), cam, rng)
    if rng.random() < 0.15:  # motion blur: the person or the camera moved during the exposure
        k = int(rng.integers(3, 8))
        padded = np.pad(img, ((0, 0), (k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
        img = sum(padded[:, i:i + WIDTH] for i in range(k)) / k
    out = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    factor = cam.lowres if rng.random() < 0.6 else float(rng.choice([1.0, 1.0, 2.0]))
    if factor > 1:  # a low-resolution camera, upscaled by the detector's crop resize
        small = (round(WIDTH / factor), round(HEIGHT / factor))
        out = out.resize(small, Image.Resampling.BOX).resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)
    if cam.blur > 0:
        out = out.filter(ImageFilter.GaussianBlur(cam.blur))
    arr = np.asarray(out, _F32) + rng.normal(0, cam.noise, (HEIGHT, WIDTH, 3)).astype(_F32)
    buf = io.BytesIO()
    Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
        buf, format="JPEG", quality=int(np.clip(cam.quality + rng.integers(-8, 9), 40, 90)))
    return buf.getvalue()


def render(ident: Optional[HardIdentity], cam: HardCamera, rng: np.random.Generator) -> bytes:
    """One bounding box; ``ident=None`` renders a junk box (scene, maybe a body fragment)."""
    canvas = _scene(cam, rng)
    for _ in range(int(rng.choice(3, p=[0.85, 0.13, 0.02]))):  # others behind, cut by the border
        _bystander(canvas, rng, (0.85, 1.35))
    if ident is None:
        if rng.random() < 0.5:
            _bystander(canvas, rng, (0.0, 0.8))
        return _finish(canvas, cam, rng)
    scale = ident.base.height * rng.uniform(0.8, 1.12)
    top = (_H - 0.9 * _H * scale) / 2 + rng.normal(0, 3) * _SS  # loose detector boxes cut heads or feet off
    _paint(canvas, ident, _pose(ident.base, rng, scale, _W / 2 + rng.normal(0, 2.5) * _SS, top), rng)
    if rng.random() < 0.2:  # occluded by someone passing in front or by an object
        if rng.random() < 0.4:
            _bystander(canvas, rng, (0.5, 0.9))
        else:
            _occluder(canvas, rng)
    return _finish(canvas, cam, rng)
