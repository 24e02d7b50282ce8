"""The tables printed by ``demo``/``test`` and the demo's results.json shape."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from torchreid_privacy.metrics.settings import SETTINGS

PAIRS = ("O-M", "O-P", "O-R")


def summarize(result: Dict[str, Any]) -> Dict[str, Any]:
    """One evaluation -> ``{"rank": {setting: {R1,R5,R10,mAP,mINP}}, "image": {pair: {...}}}``."""
    return {"rank": {s: dict(result["rank"][s]) for s in SETTINGS},
            "image": {p: dict(m) for p, m in result["image"].items()}}


def _table(head: Sequence[str], rows: List[List[str]]) -> str:
    lines = [list(head)] + rows
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def _psnr_ssim(m: Dict[str, float] | None) -> str:
    return f"{m['psnr']:.2f}/{m['ssim']:.3f}" if m else "-"


def format_table(rows: Dict[str, Dict[str, Any]]) -> str:
    """Rows = modes; columns: four rank-1s, mAP P->P, PSNR/SSIM for O-M, O-P, O-R."""
    head = ["mode", *SETTINGS, "mAP P->P", *(f"PSNR/SSIM {p}" for p in PAIRS)]
    body = []
    for mode, res in rows.items():
        cells = [mode] + [f"{100 * res['rank'][s]['R1']:.1f}" for s in SETTINGS]
        cells.append(f"{100 * res['rank']['P->P']['mAP']:.1f}")
        body.append(cells + [_psnr_ssim(res["image"].get(p)) for p in PAIRS])
    return _table(head, body)


def format_reid_attack(reid: Dict[str, Any]) -> str:
    """The third-party model's rank-1/mAP per setting."""
    body = [[s, f"{100 * reid[s]['R1']:.1f}", f"{100 * reid[s]['mAP']:.1f}"] for s in (*SETTINGS, "O->M") if s in reid]
    return _table(["third-party ReID (raw-trained)", "rank-1", "mAP"], body)


def format_psnr_rows(title: str, rows: Dict[str, Dict[str, float]]) -> str:
    """``name -> {psnr, ssim}`` rows (recovery attack, keyed recovery); PSNR None = exact (infinite)."""
    return _table([title, "PSNR", "SSIM"], [[name, "exact" if m["psnr"] is None else f"{m['psnr']:.2f}",
                                           f"{m['ssim']:.3f}"] for name, m in rows.items()])
