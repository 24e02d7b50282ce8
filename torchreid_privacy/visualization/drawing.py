"""PIL drawings for people, not for numbers: rank-list strips and a labelled scatter plot.

Why PIL: matplotlib is not a dependency of the package, and both pictures are simple. Images come
in as (H, W, 3) uint8 arrays (``to_uint8`` converts [0,1] batches); every picture is returned as a
``PIL.Image`` (the callers save it or hand it to TensorBoard).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from torchreid_privacy.publish.channel import to_uint8  # noqa: F401  (drawing's input format)

HIT, MISS, NEUTRAL, QUERY = (0, 160, 60), (215, 30, 30), (150, 150, 150), (40, 90, 210)
BACKGROUND, INK = (255, 255, 255), (20, 20, 20)
# 20 distinct colours (matplotlib's tab20 order: strong then light of each hue)
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
)



def font(size: int = 12) -> ImageFont.ImageFont:
    """Pillow's bundled scalable font, or its bitmap font where FreeType is missing."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow < 10.1 or no FreeType
        return ImageFont.load_default()


def _text_w(draw: ImageDraw.ImageDraw, text: str, fnt) -> int:
    box = draw.textbbox((0, 0), text, font=fnt)
    return box[2] - box[0]


def _fit(draw: ImageDraw.ImageDraw, text: str, fnt, width: int) -> str:
    """``text`` shortened with an ellipsis in the middle to fit ``width`` pixels."""
    if _text_w(draw, text, fnt) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        cut = text[: keep // 2] + "..." + text[len(text) - (keep - keep // 2):]
        if _text_w(draw, cut, fnt) <= width:
            return cut
    return "..."


@dataclass
class RankRow:
    """One query's rank list: ``label`` (e.g. "O->P"; "" for none), the query image, its top-k
    gallery images with distances, and ``hits`` (None when identities are unknown)."""

    query: np.ndarray
    gallery: Sequence[np.ndarray]
    distances: Sequence[float]
    hits: Optional[Sequence[bool]] = None
    label: str = ""
    note: str = ""          # second line under the label, e.g. "mAP 68.7"
    query_caption: str = ""  # under the query, e.g. "pid 12"


def rank_list_image(rows: Sequence[RankRow], title: str = "", cell_height: int = 128,
                    topk: Optional[int] = None) -> Image.Image:
    """Rows of: [label] | query | top-k gallery, rank above each gallery image, distance under it.

    Gallery images are framed green (same identity as the query), red (another identity) or grey
    (identities unknown); the query is framed blue. Every image is scaled to ``cell_height``.
    """
    if not rows:
        raise ValueError("rows: nothing to draw")
    k = topk if topk is not None else max(len(r.gallery) for r in rows)
    h0, w0 = rows[0].query.shape[:2]
    ch, cw = int(cell_height), max(8, round(cell_height * w0 / h0))
    fnt, small = font(13), font(11)
    pad, frame, gap, sep, line = 8, 3, 6, 18, 15
    label_w = 70 if any(r.label for r in rows) else 0
    cell_w = max(cw + 2 * frame, 52)
    row_h = line + ch + 2 * frame + line + gap
    title_h = line + 6 if title else 0
    width = pad + label_w + cell_w + sep + k * (cell_w + gap) + pad
    height = pad + title_h + len(rows) * row_h + pad
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, pad), _fit(draw, title, fnt, width - 2 * pad), fill=INK, font=fnt)

    def cell(x: int, y: int, arr: np.ndarray, colour, above: str, below: str) -> None:
        x0 = x + (cell_w - cw - 2 * frame) // 2
        draw.text((x + cell_w // 2, y), above, fill=INK, font=small, anchor="ma")
        draw.rectangle([x0, y + line, x0 + cw + 2 * frame - 1, y + line + ch + 2 * frame - 1], fill=colour)
        img.paste(Image.fromarray(np.ascontiguousarray(arr)).resize((cw, ch), Image.BILINEAR),
                  (x0 + frame, y + line + frame))
        draw.text((x + cell_w // 2, y + line + ch + 2 * frame + 2), _fit(draw, below, small, cell_w), fill=INK,
                  font=small, anchor="ma")

    for i, row in enumerate(rows):
        y = pad + title_h + i * row_h
        if label_w:
            mid = y + line + frame + ch // 2
            draw.text((pad, mid - (line if row.note else line // 2)), row.label, fill=INK, font=fnt)
            if row.note:
                draw.text((pad, mid + 1), row.note, fill=INK, font=small)
        x = pad + label_w
        cell(x, y, row.query, QUERY, "query", row.query_caption)
        xs = x + cell_w + sep // 2
        draw.line([xs, y + line, xs, y + line + ch + 2 * frame], fill=NEUTRAL, width=1)
        x += cell_w + sep
        for r, (arr, d) in enumerate(zip(row.gallery, row.distances)):
            colour = NEUTRAL if row.hits is None else (HIT if row.hits[r] else MISS)
            cell(x + r * (cell_w + gap), y, arr, colour, f"#{r + 1}", f"{d:.3f}")
    return img


def scatter_plot(points: np.ndarray, groups: Sequence[int], group_names: Sequence[str], domains: Sequence[int],
                 domain_names: Sequence[str] = ("O (raw)", "P (protected)"), pairs: Optional[np.ndarray] = None,
                 title: str = "", size: int = 640) -> Image.Image:
    """2-D points coloured by group (identity) and shaped by domain (circle, triangle).

    ``pairs``: (n, 2) point indices joined by a thin grey line (an image and its anonymized
    version), drawn under the points, so one sees how far anonymization moves each image.
    """
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise ValueError(f"points: expected (n, 2) coordinates, got shape {pts.shape}")
    if len(group_names) > len(PALETTE):
        raise ValueError(f"group_names: at most {len(PALETTE)} groups can be told apart, got {len(group_names)}")
    fnt, small = font(14), font(12)
    pad, title_h, legend_w, r = 12, 28 if title else 0, 170, 5
    width, height = pad + size + pad + legend_w, pad + title_h + size + pad
    img = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(img)
    if title:
        draw.text((pad, pad), _fit(draw, title, fnt, width - 2 * pad), fill=INK, font=fnt)
    x0, y0 = pad, pad + title_h
    draw.rectangle([x0, y0, x0 + size, y0 + size], outline=NEUTRAL)
    lo, hi = pts.min(0), pts.max(0)
    span = np.where(hi - lo > 0, hi - lo, 1.0)
    inner = size - 4 * r
    xy = (pts - lo) / span * inner + 2 * r
    xy[:, 0] += x0
    xy[:, 1] = y0 + size - xy[:, 1]  # y up

    def marker(x: float, y: float, domain: int, colour) -> None:
        if domain == 0:
            draw.ellipse([x - r, y - r, x + r, y + r], fill=colour, outline=INK)
        else:
            s = r + 1
            draw.polygon([(x, y - s), (x - s, y + s * 0.8), (x + s, y + s * 0.8)], fill=colour, outline=INK)

    if pairs is not None:
        for a, b in np.asarray(pairs, dtype=np.int64):
            draw.line([tuple(xy[a]), tuple(xy[b])], fill=(205, 205, 205), width=1)
    for (x, y), g, d in zip(xy, groups, domains):
        marker(x, y, int(d), PALETTE[int(g)])
    lx, ly = x0 + size + pad + 6, y0
    for d, name in enumerate(domain_names):
        marker(lx + r, ly + 8, d, (230, 230, 230))
        draw.text((lx + 3 * r, ly), name, fill=INK, font=small)
        ly += 18
    ly += 8
    for g, name in enumerate(group_names):
        draw.rectangle([lx, ly + 3, lx + 10, ly + 13], fill=PALETTE[g], outline=INK)
        draw.text((lx + 16, ly), name, fill=INK, font=small)
        ly += 17
    return img


def stack_vertically(images: List[Image.Image], gap: int = 6) -> Image.Image:
    """One picture of ``images`` above each other (for TensorBoard, which shows one image per tag)."""
    if not images:
        raise ValueError("images: nothing to stack")
    width = max(im.width for im in images)
    out = Image.new("RGB", (width, sum(im.height for im in images) + gap * (len(images) - 1)), BACKGROUND)
    y = 0
    for im in images:
        out.paste(im, (0, y))
        y += im.height + gap
    return out
