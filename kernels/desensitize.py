"""M for a normalized training batch in one pass: de-normalize -> desensitize -> re-normalize.

The reference (``torchreid_privacy.desensitize.desensitize_normalized``) runs
``addcmul`` + ``clamp`` + the desensitizer + ``addcmul``, each a full pass over the batch.
Here the mosaic and noise kernels do all of it in their one read and one write, and blur's
row kernel de-normalizes on load while its column kernel re-normalizes on store (see the
op files). Desensitizers without a kernel (registered by third parties) take the reference.
"""
from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from torchreid_privacy.desensitize import _check_batch, _check_params
from torchreid_privacy.desensitize import desensitize_normalized as desensitize_normalized_torch
from torchreid_privacy.registry import DESENSITIZERS

from ._common import Stats, channel_constants
from .add_noise import check_seed, draw_seed, noise_launch
from .dispatch import use_triton
from .gaussian_blur import blur_launch
from .mosaic import mosaic_launch

FUSED = ("mosaic", "blur", "noise")


def _param(name: str, params: dict, key: str) -> Any:
    """``params[key]``, else the registered desensitizer's default (one source of defaults)."""
    return params[key] if key in params else _default(name, key)


@lru_cache(maxsize=None)
def _default(name: str, key: str) -> Any:
    return inspect.signature(DESENSITIZERS.get(name)).parameters[key].default


def desensitize_normalized(x: Tensor, name: str, mean: Stats, std: Stats, *, backend: Optional[str] = None,
                           seed: Optional[int] = None, **params: Any) -> Tensor:
    """``normalize(desensitize(clamp(x * std + mean, 0, 1)))`` for a normalized (N, C, H, W) batch.

    ``mean``/``std``: per-channel sequences or tensors. ``params`` go to the desensitizer
    (``block`` / ``radius`` / ``sigma``). For ``noise``, ``seed`` (or a ``generator``, which
    then supplies the seed) makes the draw reproducible per backend. Example::

        m = desensitize_normalized(imgs, "mosaic", (0.485, 0.456, 0.406), (0.5, 0.5, 0.5), block=24)
    """
    if seed is not None:
        check_seed(seed)
        if name != "noise":
            raise ValueError(f"seed is not a parameter of desensitizer '{name}' (only noise draws)")
    if name not in FUSED or not use_triton(backend, x):
        if seed is not None:
            params["generator"] = torch.Generator(device=x.device).manual_seed(seed)
        return desensitize_normalized_torch(x, name, mean, std, **params)
    fn = DESENSITIZERS.get(name)
    _check_batch(x, "x")
    _check_params(fn, name, params)
    consts: Tuple[Tensor, Tensor, Tensor, Tensor] = channel_constants(mean, std, x)
    if name == "mosaic":
        return mosaic_launch(x, _param(name, params, "block"), consts)
    if name == "blur":
        return blur_launch(x, float(_param(name, params, "radius")), consts)
    if seed is None:
        seed = draw_seed(params.get("generator"))
    return noise_launch(x, float(_param(name, params, "sigma")), seed, consts)


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """Inputs for the generic kernel tests (a normalized batch, a little outside [0, 1] once
    de-normalized, as random erasing leaves it): ``(args, kwargs)``."""
    gen = torch.Generator().manual_seed(3)
    x = (torch.rand(shape, generator=gen) * 2.2 - 1.1).to(device=device, dtype=dtype)
    mean, std = (0.485, 0.456, 0.406)[: shape[1]], (0.5, 0.5, 0.5)[: shape[1]]
    return (x, "mosaic", mean, std), {"block": 6}
