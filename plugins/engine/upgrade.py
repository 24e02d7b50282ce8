"""The supervision-upgrade policy (progressive mode) and model selection.

Why its own module: the policy is the method's core decision and must be testable from a few
numbers, without a datamanager or networks. Every ``val_period`` epochs the engine validates and
asks :meth:`UpgradePolicy.decide`: if PSNR(O,P) < PSNR(O,M) + eps_psnr and SSIM(O,P) < SSIM(O,M)
+ eps_ssim (P no more recognizable than M) and validation O->P rank-1 beats the best so far and
the floor (and, with ``privacy.upgrade.inversion_gate``, an attacker inverts P no better than M
plus a margin), G's snapshot becomes the new supervision M.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from torchreid_privacy.metrics.settings import SETTINGS

PSNR_KEYS = {"image": "psnr", "dataset": "psnr_dataset"}


@dataclass
class UpgradePolicy:
    """``gate_psnr``: which PSNR the gate compares, the per-image mean (``image``) or the
    dataset-level ``10 log10(1 / mean MSE)`` (``dataset``, the paper's code). ``fallback``: while
    the latest validation fails the PSNR/SSIM gates, training goes back to the conventional M
    (:meth:`use_snapshot` is False), and returns to the snapshot once they hold again."""

    eps_psnr: float = 1.0
    eps_ssim: float = 0.05
    r1_floor: float = 0.75
    gate_psnr: str = "image"
    fallback: bool = False
    inversion_gate: bool = False  # also gate on val["inversion_gate"] (privacy.upgrade.inversion_gate)
    best_r1: float = -math.inf
    upgrades: List[Dict[str, Any]] = field(default_factory=list)
    privacy_ok: bool = True  # the latest validation passed the PSNR and SSIM (and inversion) gates
    inversion_psnr_m: Optional[float] = None  # the conventional M's inversion PSNR, measured once per run

    def __post_init__(self) -> None:
        if isinstance(self.r1_floor, str) or isinstance(self.r1_floor, bool):
            raise ValueError(f"privacy.r1_floor: {self.r1_floor!r} must be resolved to a number first "
                             "(train --floor-from RUN takes it from a finished joint run)")
        if self.gate_psnr not in PSNR_KEYS:
            raise ValueError(f"privacy.gate_psnr: expected one of {', '.join(PSNR_KEYS)}, got {self.gate_psnr!r}")

    def gates(self, psnr_op: float, ssim_op: float, r1_op: float, psnr_om: float, ssim_om: float) -> Dict[str, bool]:
        """The three upgrade conditions; M's PSNR/SSIM are the reference."""
        return {
            "psnr": psnr_op < psnr_om + self.eps_psnr,
            "ssim": ssim_op < ssim_om + self.eps_ssim,
            "rank1": r1_op > max(self.best_r1, self.r1_floor),
        }

    def gates_of(self, val: Dict[str, Any], inversion: bool = True) -> Dict[str, bool]:
        """:meth:`gates` on a validation result of the evaluator; with the inversion gate on (and
        ``inversion``), also ``"inversion"``: ``val["inversion_gate"]`` (measured by the engine, see
        ``inversion_gate``) says P is inverted no better than M + margin_db (False if unmeasured)."""
        om, op = val["image"]["O-M"], val["image"]["O-P"]
        key = PSNR_KEYS[self.gate_psnr]
        gates = self.gates(op[key], op["ssim"], val["rank"]["O->P"]["R1"], om[key], om["ssim"])
        if self.inversion_gate and inversion:
            inv = val.get("inversion_gate")
            gates["inversion"] = inv is not None and inv["psnr_p"] <= inv["psnr_m"] + inv["margin_db"]
        return gates

    def decide(self, val: Dict[str, Any], epoch: int) -> bool:
        """True when every gate holds; the event is recorded and the bar raised."""
        gates = self.gates_of(val)
        self.privacy_ok = gates["psnr"] and gates["ssim"] and gates.get("inversion", True)
        if not all(gates.values()):
            return False
        r1 = val["rank"]["O->P"]["R1"]
        self.best_r1 = r1
        event = {"epoch": epoch, "val_r1_op": r1, "psnr_op": val["image"]["O-P"]["psnr"],
                 "ssim_op": val["image"]["O-P"]["ssim"]}
        if "inversion_gate" in val:
            event["inversion"] = dict(val["inversion_gate"])
        self.upgrades.append(event)
        return True

    def use_snapshot(self) -> bool:
        """Whether an upgraded run trains on the snapshot now (always, unless ``fallback``)."""
        return self.privacy_ok or not self.fallback

    def state_dict(self) -> Dict[str, Any]:
        return {"best_upgrade_r1": self.best_r1, "upgrades": list(self.upgrades), "upgrade_privacy_ok": self.privacy_ok,
                "inversion_psnr_m": self.inversion_psnr_m}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best_r1 = state["best_upgrade_r1"]
        self.upgrades = list(state["upgrades"])
        self.privacy_ok = state.get("upgrade_privacy_ok", True)
        self.inversion_psnr_m = state.get("inversion_psnr_m")


def floor_from_results(results: Dict[str, Any], source: str = "--floor-from") -> float:
    """``privacy.r1_floor auto``: the validation O->P rank-1 of a finished joint ("w/o U") run, at the
    epoch its model selection kept (the best validation score), as the paper's recipe but on
    validation data."""
    scored = [h for h in results.get("history", []) if "score" in h and "val_r1" in h]
    if results.get("mode") != "joint" or not scored:
        raise ValueError(f"{source}: expected the results of a finished joint run with validation "
                         f"(mode {results.get('mode')!r}, {len(scored)} validated epochs)")
    best = max(scored, key=lambda h: (h["score"], h["epoch"]))  # ties: the later epoch, as selection does
    return float(best["val_r1"]["O->P"])


def selection_score(val: Dict[str, Any]) -> float:
    """Model selection on the validation split: mean mAP over the four settings.

    mAP rather than rank-1: a validation split holds few queries, and its rank-1 saturates
    within a few epochs, which would freeze selection at an early epoch.
    """
    return sum(val["rank"][s]["mAP"] for s in SETTINGS) / len(SETTINGS)
