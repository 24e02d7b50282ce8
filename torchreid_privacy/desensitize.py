"""Public entry to the registered desensitizers (the initial privacy supervision M).

``desensitize`` checks a batch of [0, 1] images and the parameters, then runs the
desensitizer registered under ``name`` (the built-ins are the kernels ops: fused Triton
kernels or their torch references, as the run's backend table says). Per-batch callers
check once with ``resolve_desensitizer`` and then call the function directly.
"""
from __future__ import annotations

import inspect
import numbers
from functools import lru_cache
from typing import Any, Callable, Dict, Tuple

import torch
from torch import Tensor

from torchreid_privacy.registry import DESENSITIZERS

# Values this far outside [0, 1] are still accepted (float round-off of a de-normalized batch).
RANGE_TOLERANCE = 1e-4

# Parameter name -> (smallest allowed value, integer required); checked for every desensitizer
# that takes a parameter of that name.
_PARAM_RULES: Dict[str, Tuple[float, bool]] = {
    "block": (1, True),
    "radius": (0, False),
    "sigma": (0, False),
}


def desensitize(images: Tensor, name: str, **params: Any) -> Tensor:
    """Apply the desensitizer ``name`` to an (N, C, H, W) batch of [0, 1] images.

    Example::

        >>> import torch, torchreid_privacy
        >>> m = torchreid_privacy.desensitize(torch.rand(8, 3, 256, 128), "mosaic", block=24)

    Raises ``ValueError`` naming the offending argument for a malformed batch or parameter,
    and the registry's ``KeyError`` (listing the known names) for an unknown ``name``.
    """
    fn = resolve_desensitizer(name, params)
    _check_batch(images)
    _check_range(images)
    return fn(images, **params)


def resolve_desensitizer(name: str, params: Dict[str, Any]) -> Callable[..., Tensor]:
    """The registered function for ``name`` after checking ``params`` (no images needed).

    Callers that desensitize every training batch check once here and then call the
    function directly, skipping the per-batch range check (a device sync).
    """
    fn = DESENSITIZERS.get(name)
    _check_params(fn, name, params)
    return fn


def _check_batch(images: Any, arg: str = "images") -> None:
    if not isinstance(images, Tensor):
        raise ValueError(f"{arg} must be a torch.Tensor, got {type(images).__name__}")
    if images.dim() != 4:
        raise ValueError(f"{arg} must be an (N, C, H, W) batch, got shape {tuple(images.shape)}")
    if images.shape[1] not in (1, 3):
        raise ValueError(f"{arg} must have 1 or 3 channels, got {images.shape[1]}")
    if not images.is_floating_point():
        raise ValueError(f"{arg} must be a floating tensor in [0, 1], got dtype {images.dtype}")


def _check_range(images: Tensor) -> None:
    if images.numel() == 0:
        return
    lo, hi = torch.stack(torch.aminmax(images)).tolist()  # one device sync
    if not (lo >= -RANGE_TOLERANCE and hi <= 1.0 + RANGE_TOLERANCE):
        raise ValueError(f"images must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")


def _check_params(fn: Callable[..., Tensor], name: str, params: Dict[str, Any]) -> None:
    accepted = _accepted_params(fn)
    for key, value in params.items():
        if key not in accepted:
            known = ", ".join(accepted)
            raise ValueError(f"{key} is not a parameter of desensitizer '{name}' (accepts: {known})")
        rule = _PARAM_RULES.get(key)
        if rule is None:
            continue
        least, integral = rule
        kind = numbers.Integral if integral else numbers.Real
        if isinstance(value, bool) or not isinstance(value, kind) or not value >= least:
            what = "an integer" if integral else "a number"
            raise ValueError(f"{key} must be {what} >= {least}, got {value!r}")


@lru_cache(maxsize=None)
def _accepted_params(fn: Callable[..., Tensor]) -> Tuple[str, ...]:
    """Keyword parameters after the image batch (cached: this runs on every training step)."""
    return tuple(inspect.signature(fn).parameters)[1:]
