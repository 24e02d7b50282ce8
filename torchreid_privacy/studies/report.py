"""The tables printed by ``demo``/``test`` and the demo's results.json shape."""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from torchreid_privacy.metrics.settings import SETTINGS

PAIRS = ("O-M", "O-P", "O-R")
P_SETTINGS = tuple(s for s in SETTINGS if "P" in s.split("->"))


def summarize(result: Dict[str, Any]) -> Dict[str, Any]:
    """One evaluation -> ``{"rank", "image"}`` (P as published), ``rank_unpublished`` and
    ``image_unpublished`` (the float P beside it) and ``publish`` (the channel)."""
    out = {"rank": {s: dict(result["rank"][s]) for s in SETTINGS},
           "image": {p: dict(m) for p, m in result["image"].items()}}
    for key in ("rank_unpublished", "image_unpublished", "publish"):
        if key in result:
            out[key] = {k: dict(v) if isinstance(v, dict) else v for k, v in result[key].items()}
    return out


def text_table(head: Sequence[str], rows: List[List[str]]) -> str:
    """Columns padded to their widest cell (the first left-aligned, the rest right), a dashed rule under the head."""
    lines = [list(head)] + rows
    widths = [max(len(r[i]) for r in lines) for i in range(len(head))]
    fmt = lambda r: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))  # noqa: E731
    return "\n".join([fmt(lines[0]), "  ".join("-" * w for w in widths)] + [fmt(r) for r in rows])


def _psnr_ssim(m: Dict[str, float] | None) -> str:
    return f"{m['psnr']:.2f}/{m['ssim']:.3f}" if m else "-"


def _channel(res: Dict[str, Any]) -> str:
    ch = res.get("publish")
    if not ch:
        return "?"
    return ch["format"] if ch["format"] == "png" else f"{ch['format']}{ch['quality']}"


def format_table(rows: Dict[str, Dict[str, Any]]) -> str:
    """Rows = modes; columns: the four rank-1s and mAP P->P on P as published (the channel named),
    the float P's rank-1s beside them ("unpublished"), PSNR/SSIM for O-M, O-P, O-R (published)."""
    head = ["mode", "P as", *SETTINGS, "mAP P->P", "unpublished " + "/".join(P_SETTINGS),
            *(f"PSNR/SSIM {p}" for p in PAIRS)]
    body = []
    for mode, res in rows.items():
        cells = [mode, _channel(res)] + [f"{100 * res['rank'][s]['R1']:.1f}" for s in SETTINGS]
        cells.append(f"{100 * res['rank']['P->P']['mAP']:.1f}")
        raw = res.get("rank_unpublished")
        cells.append("/".join(f"{100 * raw[s]['R1']:.1f}" for s in P_SETTINGS) if raw else "-")
        body.append(cells + [_psnr_ssim(res["image"].get(p)) for p in PAIRS])
    return text_table(head, body)


def format_reid_attack(reid: Dict[str, Any]) -> str:
    """The third-party model's rank-1/mAP per setting."""
    body = [[s, f"{100 * reid[s]['R1']:.1f}", f"{100 * reid[s]['mAP']:.1f}"] for s in (*SETTINGS, "O->M") if s in reid]
    return text_table(["third-party ReID (raw-trained)", "rank-1", "mAP"], body)


def format_psnr_rows(title: str, rows: Dict[str, Dict[str, float]]) -> str:
    """``name -> {psnr, ssim}`` rows (recovery attack, keyed recovery); PSNR None = exact (infinite)."""
    return text_table([title, "PSNR", "SSIM"], [[name, "exact" if m["psnr"] is None else f"{m['psnr']:.2f}",
                                           f"{m['ssim']:.3f}"] for name, m in rows.items()])


def format_vs_yardstick(baseline: Dict[str, Any], victim: Dict[str, Any], name: str, recover: Dict[str, Any],
                        pairs: int) -> str:
    """The attacked run's P beside mosaic 24's M (the baseline run's P is M), both as published: the
    key holder's utility (O->P and P->P over O->O) and the inversion attacker's PSNR at ``pairs``."""
    def ratios(res: Dict[str, Any]) -> List[str]:
        oo = res["rank"]["O->O"]["R1"]
        return [f"{res['rank'][s]['R1'] / oo:.2f}" if oo else "-" for s in ("O->P", "P->P")]

    body = [["M (the baseline run's P)", _channel(baseline), *ratios(baseline),
             f"{recover['M'][str(pairs)]['psnr']:.2f}"],
            [f"P ({name})", _channel(victim), *ratios(victim), f"{recover[str(pairs)]['psnr']:.2f}"]]
    return text_table(["published images", "P as", "O->P/O->O", "P->P/O->O", f"inversion@{pairs} (dB)"], body)
