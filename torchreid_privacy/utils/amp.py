"""Mixed precision for the privacy engine: ``train.amp: off | bf16 | fp16``.

bf16 keeps float32's exponent range, so it needs no loss scaling; fp16 does, so it gets a
``GradScaler`` shared by the D step and the G/G_R/C step (one ``update`` per iteration, as
torch's multi-optimizer AMP recipe prescribes). Evaluation always runs in float32: the
PSNR/SSIM gates and the ranking must not depend on the training precision.
"""
from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Dict, Optional

import torch

AMP_MODES: Dict[str, Optional[torch.dtype]] = {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def amp_mode(value: Any) -> str:
    """Normalize ``train.amp``: YAML reads a bare ``off`` as ``False``."""
    if value is False:
        return "off"
    if value not in AMP_MODES:
        raise ValueError(f"train.amp: expected one of {', '.join(AMP_MODES)}, got {value!r}")
    return value


class Precision:
    """Autocast context and (for fp16) loss scaling for one device."""

    def __init__(self, mode: str, device: torch.device) -> None:
        self.mode = amp_mode(mode)
        self.dtype = AMP_MODES[self.mode]
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(self.device_type, enabled=self.mode == "fp16")

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> AbstractContextManager:
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.enabled)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        """``optimizer.step()``, skipped by the scaler when fp16 gradients overflowed."""
        self.scaler.step(optimizer)

    def update(self) -> None:
        self.scaler.update()

    def state_dict(self) -> Dict[str, Any]:
        return self.scaler.state_dict()

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if state:
            self.scaler.load_state_dict(state)
