"""The supervision M of the engine's step and the upgrade that replaces it (progressive mode).

Why a mixin of its own: what M is at each step (the conventional desensitizer, or a frozen
snapshot of G once the upgrade policy let it in, or the conventional one again while
``privacy.upgrade.fallback`` says so) is one concern, separate from the losses of the step.
"""
from __future__ import annotations

import copy
import logging
from typing import Any, Dict, List, Optional

import torch

from torchreid_privacy.utils.images import from_gan, to_gan

log = logging.getLogger(__name__)


def requires_grad(nets: List[torch.nn.Module], flag: bool) -> None:
    for net in nets:
        for p in net.parameters():
            p.requires_grad_(flag)


class SupervisionMixin:
    """For :class:`PrivacyEngine`: uses its ``nets``, ``inference``, ``policy``, ``mode``, ``epoch``
    and ``writer``; holds ``supervisor`` (the frozen G snapshot, or None)."""

    _inversion_gate = None  # built on first use (privacy.upgrade.inversion_gate)

    @torch.no_grad()
    def supervision(self, o01: torch.Tensor) -> torch.Tensor:
        """Current supervision M in [0,1]: the conventional one, or G_snapshot(O) after an upgrade."""
        if self.supervisor is not None and self.policy.use_snapshot():
            return from_gan(self.supervisor(to_gan(o01)))
        return self.inference.conventional(o01)

    def snapshot_generator(self, state: Optional[Dict[str, torch.Tensor]] = None, source: str = "checkpoint") -> None:
        """Freeze a copy of G (with a checkpoint's ``state`` loaded, if given) as the supervision."""
        from torchreid_privacy.utils import checkpoint

        snap = copy.deepcopy(self.nets["generator"]).eval()  # buffers: rank 0's, set by evaluate()
        if state is not None:
            checkpoint.load_state(snap, state, f"{source} [supervisor]")
        requires_grad([snap], False)
        self.supervisor = snap

    def maybe_upgrade(self, val: Dict[str, Any]) -> bool:
        """Progressive mode: snapshot G as the new supervision when every gate holds. The inversion
        gate (costly: it trains attackers) is measured only when the other gates hold; its numbers
        join ``val`` as ``val["inversion_gate"]``."""
        if self.mode != "progressive":
            return False
        if self.policy.inversion_gate and all(self.policy.gates_of(val, inversion=False).values()):
            from .inversion_gate import InversionGate

            if self._inversion_gate is None:
                self._inversion_gate = InversionGate(self)
            self._inversion_gate.psnr_m = self.policy.inversion_psnr_m  # measured once, kept across resumes
            val["inversion_gate"] = self._inversion_gate.measure()
            self.policy.inversion_psnr_m = self._inversion_gate.psnr_m
            log.info("inversion gate at epoch %d: attacker on P %.2f dB, on M %.2f dB (margin %.2f dB)",
                     self.epoch + 1, val["inversion_gate"]["psnr_p"], val["inversion_gate"]["psnr_m"],
                     val["inversion_gate"]["margin_db"])
        if not self.policy.decide(val, self.epoch + 1):
            return False
        self.snapshot_generator()
        log.info("supervision upgraded at epoch %d (val O->P rank-1 %.3f)", self.epoch + 1, self.policy.best_r1)
        if self.writer is not None:
            self.writer.add_scalar("Upgrade/val_r1_op", self.policy.best_r1, self.epoch + 1)
            self.writer.add_scalar("Upgrade/count", len(self.upgrades), self.epoch + 1)
        return True
