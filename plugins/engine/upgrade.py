"""The supervision-upgrade policy (progressive mode) and model selection.

Why its own module: the policy is the method's core decision and must be testable from a few
numbers, without a datamanager or networks. Every ``val_period`` epochs the engine validates and
asks :meth:`UpgradePolicy.decide`: if PSNR(O,P) < PSNR(O,M) + eps_psnr and SSIM(O,P) < SSIM(O,M)
+ eps_ssim (P no more recognizable than M) and validation O->P rank-1 beats the best so far and
the floor, G's snapshot becomes the new supervision M.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List

from torchreid_privacy.evaluation import SETTINGS


@dataclass
class UpgradePolicy:
    eps_psnr: float = 1.0
    eps_ssim: float = 0.05
    r1_floor: float = 0.75
    best_r1: float = -math.inf
    upgrades: List[Dict[str, Any]] = field(default_factory=list)

    def gates(self, psnr_op: float, ssim_op: float, r1_op: float, psnr_om: float, ssim_om: float) -> Dict[str, bool]:
        """The three upgrade conditions; M's PSNR/SSIM are the reference."""
        return {
            "psnr": psnr_op < psnr_om + self.eps_psnr,
            "ssim": ssim_op < ssim_om + self.eps_ssim,
            "rank1": r1_op > max(self.best_r1, self.r1_floor),
        }

    def gates_of(self, val: Dict[str, Any]) -> Dict[str, bool]:
        """:meth:`gates` on a validation result of the evaluator."""
        om, op = val["image"]["O-M"], val["image"]["O-P"]
        return self.gates(op["psnr"], op["ssim"], val["rank"]["O->P"]["R1"], om["psnr"], om["ssim"])

    def decide(self, val: Dict[str, Any], epoch: int) -> bool:
        """True when every gate holds; the event is recorded and the bar raised."""
        if not all(self.gates_of(val).values()):
            return False
        r1 = val["rank"]["O->P"]["R1"]
        self.best_r1 = r1
        self.upgrades.append({"epoch": epoch, "val_r1_op": r1, "psnr_op": val["image"]["O-P"]["psnr"],
                              "ssim_op": val["image"]["O-P"]["ssim"]})
        return True

    def state_dict(self) -> Dict[str, Any]:
        return {"best_upgrade_r1": self.best_r1, "upgrades": list(self.upgrades)}

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        self.best_r1 = state["best_upgrade_r1"]
        self.upgrades = list(state["upgrades"])


def selection_score(val: Dict[str, Any]) -> float:
    """Model selection on the validation split: mean mAP over the four settings.

    mAP rather than rank-1: a validation split holds few queries, and its rank-1 saturates
    within a few epochs, which would freeze selection at an early epoch.
    """
    return sum(val["rank"][s]["mAP"] for s in SETTINGS) / len(SETTINGS)
