"""``frontier.png``: the privacy-utility frontier in two panels (matplotlib, no display needed).

Left: the inversion attacker's PSNR at 256 leaked pairs against utility (O->P / O->O rank-1);
right: a raw-trained third party's O->P rank-1 against the same utility. Lower is more private
on both. The conventional desensitizers are lines through their strengths, the learned variants
markers; every point carries its seed spread (one standard deviation) as error bars, and the
points on each panel's Pareto front (higher utility and lower leakage than any other) are ringed.
"""
from __future__ import annotations

from typing import Any, Dict, List

PANELS = (("inversion_256", 1.0, "inversion attacker PSNR, 256 pairs (dB)", "inversion"),
          ("third_party_o_p", 100.0, "third-party O->P rank-1 (%)", "third_party"))
UTILITY = "o_p_rel"
FAMILY_COLOURS = {"mosaic": "tab:blue", "blur": "tab:green", "noise": "tab:orange"}
LEARNED_MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


def plot_frontier(result: Dict[str, Any], path: str) -> str:
    """Draw ``result`` (``run_frontier``'s) to ``path`` (PNG, written atomically)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from torchreid_privacy.utils.atomic import write_bytes

    points: List[Dict[str, Any]] = result["points"]
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for ax, (metric, scale, label, front_key) in zip(axes, PANELS):
        for family, colour in FAMILY_COLOURS.items():
            line = sorted((p for p in points if p["kind"] == "conventional" and p["family"] == family),
                          key=lambda p: p["strength"])
            if not line:
                continue
            ax.errorbar([p["mean"][UTILITY] for p in line], [scale * p["mean"][metric] for p in line],
                        xerr=[p["sd"][UTILITY] for p in line], yerr=[scale * p["sd"][metric] for p in line],
                        color=colour, marker=".", capsize=2, label=f"{family} (conventional M)")
            for p in line:
                ax.annotate(f"{p['strength']:g}", (p["mean"][UTILITY], scale * p["mean"][metric]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points", color=colour)
        learned = [p for p in points if p["kind"] == "learned"]
        for p, marker in zip(learned, LEARNED_MARKERS * (1 + len(learned) // len(LEARNED_MARKERS))):
            ax.errorbar([p["mean"][UTILITY]], [scale * p["mean"][metric]], xerr=[p["sd"][UTILITY]],
                        yerr=[scale * p["sd"][metric]], marker=marker, markersize=8, linestyle="none", capsize=3,
                        label=p["name"])
        front = [p for p in points if p["name"] in set(result["pareto"][front_key])]
        ax.scatter([p["mean"][UTILITY] for p in front], [scale * p["mean"][metric] for p in front], s=220,
                   facecolors="none", edgecolors="black", linewidths=1.2, label="Pareto front")
        ax.set_xlabel("utility: O->P / O->O rank-1 (P as published)")
        ax.set_ylabel(label + " (lower = more private)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    seeds = result["seeds"]
    ch = result["publish"]
    fig.suptitle(f"privacy-utility frontier on {result['dataset']} ({result['height']}x{result['width']}), "
                 f"P as published ({ch['format']} {ch['quality']}), mean +- sd over {len(seeds)} seed(s)")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    write_bytes(path, buf.getvalue())
    return path
