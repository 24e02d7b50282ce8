"""The privacy-utility table printed by ``demo``/``test`` and the demo's results.json shape."""
from __future__ import annotations

from typing import Any, Dict, List

SETTINGS = ("O->O", "O->P", "P->O", "P->P")
PAIRS = ("O-M", "O-P", "O-R")


def summarize(result: Dict[str, Any]) -> Dict[str, Any]:
    """One evaluation -> ``{"rank": {setting: {R1,R5,R10,mAP,mINP}}, "image": {pair: {...}}}``."""
    return {"rank": {s: dict(result["rank"][s]) for s in SETTINGS},
            "image": {p: dict(result["image"][p]) for p in PAIRS if p in result["image"]}}


def format_table(rows: Dict[str, Dict[str, Any]]) -> str:
    """Rows = modes; columns: four rank-1s, mAP P->P, PSNR/SSIM for O-M, O-P, O-R."""
    head = ["mode", *SETTINGS, "mAP P->P", *(f"PSNR/SSIM {p}" for p in PAIRS)]
    lines: List[List[str]] = [head]
    for mode, res in rows.items():
        cells = [mode] + [f"{100 * res['rank'][s]['R1']:.1f}" for s in SETTINGS]
        cells.append(f"{100 * res['rank']['P->P']['mAP']:.1f}")
        for p in PAIRS:
            m = res["image"].get(p)
            cells.append(f"{m['psnr']:.2f}/{m['ssim']:.3f}" if m else "-")
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    sep = "  ".join("-" * w for w in widths)
    return "\n".join([fmt(lines[0]), sep] + [fmt(r) for r in lines[1:]])
