"""Which implementation runs each op, the Triton kernel or its torch reference: decided once.

A run's setting (``privacy.kernels``: ``auto`` | ``triton`` | ``torch``, else the environment
variable ``TORCHREID_PRIVACY_KERNELS``, else ``auto``) and the run's device resolve into one
process-wide table ``{op: 'triton' | 'torch'}`` (:func:`select_backends`); every op called with
``backend=None`` looks itself up there (:func:`backend_for`), so the code path never depends on
which tensor happens to arrive. The table, per mode:

* ``auto``: Triton on a CUDA device (Triton installed, interpreter off), torch elsewhere, and
  torch while the device is unknown (nobody selected one: e.g. a script that only imports).
* ``triton``: Triton everywhere. A CPU run needs Triton's interpreter, ``TRITON_INTERPRET=1``
  set before ``torchreid_privacy.kernels`` was imported; it then takes exactly the path a CUDA
  run takes with ``auto`` (how the tests run the kernels without a GPU). Otherwise it raises.
* ``torch``: the torch references everywhere.

Per call, ``backend='triton' | 'torch'`` overrides the table (tests, benchmarks).
:func:`backend_report` gives the table for the run log / ``results.json``. Importing this
module never fails: without Triton, ``triton``/``tl`` are placeholders whose kernels raise
when launched, and no table ever selects them.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Callable, Dict, Iterator, List, Optional, Union

import torch

MODES = ("auto", "triton", "torch")
BACKENDS = ("triton", "torch")
ENV_VAR = "TORCHREID_PRIVACY_KERNELS"
INTERPRET_ENV_VAR = "TRITON_INTERPRET"
Device = Union[str, torch.device, None]


class _MissingTriton:
    """Stands in for ``triton`` / ``triton.language`` when Triton is not installed.

    Kernel definitions still evaluate (``@triton.jit``, ``tl.constexpr`` annotations); a
    launch raises. No backend table selects Triton in that case, and an explicit
    ``backend='triton'`` is refused earlier with a clearer message.
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

_OPS: List[str] = []  # every op with a backend choice, in registration order (register_op)
_table: Optional[Dict[str, str]] = None  # the selected table; None: not selected yet
_selection: Dict[str, Any] = {"mode": None, "device": None}


def register_op(name: str) -> str:
    """Declare an op that has a Triton kernel and a torch reference (each op module, on import)."""
    global _table
    if name not in _OPS:
        _OPS.append(name)
        _table = None  # re-resolved with the same selection on the next query
    return name


def _check_mode(mode: Any, name: str) -> str:
    if mode not in MODES:
        raise ValueError(f"{name} must be one of {MODES}, got {mode!r}")
    return mode


def _env_mode() -> str:
    return _check_mode(os.environ.get(ENV_VAR, "auto").strip().lower() or "auto", ENV_VAR)


def get_kernel_mode() -> str:
    """The mode in force: the selected one, else ``$TORCHREID_PRIVACY_KERNELS``, else ``auto``."""
    return _selection["mode"] if _selection["mode"] is not None else _env_mode()


def _device(device: Device) -> Optional[torch.device]:
    if device is None:
        return None
    try:
        return torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cuda' or 'cpu', got {device!r}") from None


def _require_triton(device: Optional[torch.device]) -> None:
    """Raise, naming the setting to change, when the Triton kernels cannot run on ``device``."""
    if not HAS_TRITON:
        raise RuntimeError(f"Triton kernels requested ({ENV_VAR}/privacy.kernels/backend='triton') "
                           "but Triton is not installed; use 'auto' or 'torch'")
    if INTERPRET:
        return
    # compiled kernels need a GPU: the run's device, or (device unknown) one in this process
    gpu = device.type == "cuda" if device is not None else torch.cuda.is_available()
    if not gpu:
        raise RuntimeError(f"Triton kernels requested ({ENV_VAR}/privacy.kernels/backend='triton') for a "
                           f"{device or 'CPU'} run: set {INTERPRET_ENV_VAR}=1 before importing "
                           "torchreid_privacy.kernels to run them in Triton's interpreter, or use 'auto' / 'torch'")


def _resolve(mode: str, device: Optional[torch.device]) -> str:
    if mode == "torch":
        return "torch"
    if mode == "triton":
        _require_triton(device)
        return "triton"
    # auto: the interpreter is for tests only, so auto never routes real work through it
    on_gpu = device is not None and device.type == "cuda"
    return "triton" if HAS_TRITON and on_gpu and not INTERPRET else "torch"


def select_backends(mode: Optional[str] = None, device: Device = None) -> Dict[str, str]:
    """Resolve ``mode`` (None: ``$TORCHREID_PRIVACY_KERNELS``, else ``auto``) and the run's
    ``device`` (None: unknown) into the process-wide ``{op: 'triton' | 'torch'}`` table.

    Call once per run, when its device is known (the builder does). Raises ``ValueError`` for an
    unknown mode or device and ``RuntimeError`` when ``triton`` cannot run here. Example::

        kernels.select_backends("auto", torch.device("cuda"))  # -> {'mosaic': 'triton', ...}
    """
    global _table
    if mode is not None:
        _check_mode(mode, "mode (privacy.kernels)")
    dev = _device(device)
    resolved = _resolve(mode if mode is not None else _env_mode(), dev)
    _selection.update(mode=mode, device=dev)
    _table = {op: resolved for op in _OPS}
    return dict(_table)


@contextlib.contextmanager
def backends(mode: Optional[str] = None, device: Device = None) -> Iterator[Dict[str, str]]:
    """``select_backends(mode, device)`` for a block, then the previous selection again (e.g. export
    traces the torch references: a Triton launch cannot become an ONNX graph)."""
    saved = dict(_selection)
    try:
        yield select_backends(mode, device)
    finally:
        select_backends(saved["mode"], saved["device"])


def set_kernel_mode(mode: Optional[str], device: Device = None) -> None:
    """``select_backends(mode, device)``; ``set_kernel_mode(None)`` returns to the default
    (environment mode, device unknown)."""
    select_backends(mode, device)


def _current_table() -> Dict[str, str]:
    if _table is None:  # first query, or an op registered since: same selection, all ops
        return select_backends(_selection["mode"], _selection["device"])
    return _table


def backend_report() -> Dict[str, str]:
    """``{op: 'triton' | 'torch'}``: what each op runs in this process (for logs and results.json)."""
    return dict(_current_table())


def backend_for(op: str, backend: Optional[str] = None) -> str:
    """The backend ``op`` runs: the per-call ``backend`` if given, else the selected table's."""
    if backend is not None:
        if backend not in BACKENDS:
            raise ValueError(f"backend must be None or one of {BACKENDS}, got {backend!r}")
        if backend == "triton" and not HAS_TRITON:
            _require_triton(None)
        return backend
    table = _current_table()
    if op not in table:
        raise KeyError(f"unknown kernel op {op!r} (known: {', '.join(table)})")
    return table[op]


def launch_options(gpu_warps: int = 4) -> dict:
    """``num_warps`` for a launch (the interpreter ignores it, and refuses nothing)."""
    return {} if INTERPRET else {"num_warps": gpu_warps}


def pow2_at_least(n: int) -> int:
    """Smallest power of two >= n (Triton block shapes must be powers of two)."""
    return 1 << max(0, int(n) - 1).bit_length()
