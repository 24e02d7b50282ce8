"""``train.compile: off | default | max-autotune``: ``torch.compile`` the nets the training step calls.

Why a separate cache and not compiled registered modules: checkpoints, evaluation and
``PrivacyModel`` use the bare nets (``bridge.engine_models``), whose state-dict keys must not
gain ``_orig_mod.``. The step instead asks :class:`CompiledNets` for the callable of each net it
runs (a bare net, or its DDP wrapper): the first request compiles it (``torch.compile`` wraps
the same module, so parameters, buffers and optimizers are shared), later ones reuse it. A
wrapper replaced later (``distribute()``) is compiled afresh.

Compilation happens lazily at the first training step, so it costs nothing to a run that only
evaluates. ``TORCHREID_PRIVACY_COMPILE_BACKEND`` picks another ``torch.compile`` backend (e.g.
``aot_eager``: graph capture and AOT autograd without code generation, for quick tests).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, Optional, Tuple

import torch

COMPILE_MODES = ("off", "default", "max-autotune")
BACKEND_ENV_VAR = "TORCHREID_PRIVACY_COMPILE_BACKEND"


def compile_mode(value: Any) -> str:
    """Normalize ``train.compile``: YAML reads a bare ``off`` as ``False``."""
    if value is False or value is None:
        return "off"
    if value not in COMPILE_MODES:
        raise ValueError(f"train.compile: expected one of {', '.join(COMPILE_MODES)}, got {value!r}")
    return value


class CompiledNets:
    """net -> the callable the step runs: the net itself (``off``) or its compiled wrapper.

    Args:
        mode: ``train.compile`` (off | default | max-autotune).
        backend: ``torch.compile`` backend (default: the environment variable, else inductor).
    """

    def __init__(self, mode: Any = "off", backend: Optional[str] = None) -> None:
        self.mode = compile_mode(mode)
        self.backend = backend or os.environ.get(BACKEND_ENV_VAR) or "inductor"
        self._cache: Dict[int, Tuple[torch.nn.Module, Callable[..., Any]]] = {}

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def __call__(self, net: torch.nn.Module) -> Callable[..., Any]:
        if not self.enabled:
            return net
        hit = self._cache.get(id(net))
        if hit is None or hit[0] is not net:  # keep the net referenced: its id cannot be reused
            # ``mode`` is an inductor option; other backends take none
            options = {"mode": self.mode} if self.mode != "default" and self.backend == "inductor" else {}
            hit = (net, torch.compile(net, backend=self.backend, **options))
            self._cache[id(net)] = hit
        return hit[1]

    def __len__(self) -> int:
        return len(self._cache)

    def __repr__(self) -> str:
        return f"CompiledNets(mode={self.mode!r}, backend={self.backend!r}, compiled={len(self)})"
