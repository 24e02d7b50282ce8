"""Which implementation runs an op: the Triton kernel or its torch reference.

Modes (process-wide, set by ``set_kernel_mode`` -- the engine builder passes the config's
``privacy.kernels`` -- else by the environment variable ``TORCHREID_PRIVACY_KERNELS``):

* ``auto`` (default): Triton for CUDA tensors when Triton is installed, torch elsewhere.
* ``triton``: always Triton. On CPU tensors this needs Triton's interpreter, i.e.
  ``TRITON_INTERPRET=1`` set before ``torchreid_privacy.kernels`` was imported (that is how
  the tests run the kernels on a machine without a GPU); otherwise it raises.
* ``torch``: always the torch reference.

Every op also takes ``backend=`` (None | 'triton' | 'torch') that overrides the mode per call.
Importing this module never fails: without Triton, ``triton``/``tl`` are placeholders whose
kernels raise when launched, and ``auto`` picks torch.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Optional

import torch

MODES = ("auto", "triton", "torch")
BACKENDS = ("triton", "torch")
ENV_VAR = "TORCHREID_PRIVACY_KERNELS"
INTERPRET_ENV_VAR = "TRITON_INTERPRET"


class _MissingTriton:
    """Stands in for ``triton`` / ``triton.language`` when Triton is not installed.

    Kernel definitions still evaluate (``@triton.jit``, ``tl.constexpr`` annotations); a
    launch raises. ``resolve_backend`` never picks Triton in that case, so only an explicit
    ``backend='triton'`` would get here, and it is refused earlier with a clearer message.
    """

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return _MissingTriton(f"{self._name}.{attr}")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"{self._name} is unavailable: Triton is not installed")

    def jit(self, fn: Optional[Callable] = None, **_: Any) -> Any:
        if fn is None:
            return self.jit
        return _MissingTriton(f"triton kernel {fn.__name__}")

    def __getitem__(self, grid: Any) -> "_MissingTriton":
        return self


try:  # Triton is Linux-only and optional: the torch references cover every op.
    import triton  # noqa: F401
    import triton.language as tl  # noqa: F401

    HAS_TRITON = True
except Exception:  # ImportError, or a broken install that fails while importing
    triton = _MissingTriton("triton")  # type: ignore[assignment]
    tl = _MissingTriton("triton.language")  # type: ignore[assignment]
    HAS_TRITON = False

# Triton decides at each ``@triton.jit`` whether the kernel is interpreted, so what counts is
# the setting when the kernel modules were imported (they import this module first).
INTERPRET = HAS_TRITON and os.environ.get(INTERPRET_ENV_VAR, "0") == "1"

_mode_override: Optional[str] = None


def _check_mode(mode: Any, name: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return mode


def set_kernel_mode(mode: Optional[str]) -> None:
    """Set the process-wide mode (``auto`` | ``triton`` | ``torch``); None reverts to the env."""
    global _mode_override
    _mode_override = None if mode is None else _check_mode(mode, "mode")


def get_kernel_mode() -> str:
    """The mode in force: ``set_kernel_mode``'s, else ``$TORCHREID_PRIVACY_KERNELS``, else auto."""
    if _mode_override is not None:
        return _mode_override
    return _check_mode(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)


def resolve_backend(backend: Optional[str], *tensors: Optional[torch.Tensor]) -> str:
    """``'triton'`` or ``'torch'`` for a call on ``tensors`` (None entries are ignored).

    ``backend`` (the op's keyword) wins over the process-wide mode. Raises ``RuntimeError``
    when Triton is forced but cannot run here, naming the setting to change.
    """
    if backend is not None and backend not in BACKENDS:
        raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
    mode = backend or get_kernel_mode()
    if mode == "torch":
        return "torch"
    on_cuda = all(t.is_cuda for t in tensors if t is not None)
    if mode == "auto":
        # the interpreter is for tests only: auto never routes real work through it
        return "triton" if HAS_TRITON and on_cuda and not INTERPRET else "torch"
    if not HAS_TRITON:
        raise RuntimeError(f"Triton kernels requested ({ENV_VAR}/privacy.kernels/backend='triton') "
                           "but Triton is not installed; use 'auto' or 'torch'")
    if not on_cuda and not INTERPRET:
        raise RuntimeError(f"Triton kernels requested ({ENV_VAR}/privacy.kernels/backend='triton') for "
                           f"CPU tensors: set {INTERPRET_ENV_VAR}=1 before importing torchreid_privacy.kernels "
                           "to run them in Triton's interpreter, or use 'auto' / 'torch'")
    return "triton"


def use_triton(backend: Optional[str], *tensors: Optional[torch.Tensor]) -> bool:
    """Shorthand for ``resolve_backend(...) == 'triton'``."""
    return resolve_backend(backend, *tensors) == "triton"


def launch_options(gpu_warps: int = 4) -> dict:
    """``num_warps`` for a launch (the interpreter ignores it, and refuses nothing)."""
    return {} if INTERPRET else {"num_warps": gpu_warps}


def pow2_at_least(n: int) -> int:
    """Smallest power of two >= n (Triton block shapes must be powers of two)."""
    return 1 << max(0, int(n) - 1).bit_length()
