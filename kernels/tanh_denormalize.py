"""Generator logits -> torchreid-normalized images: ``((tanh(x) + 1) / 2 - mean) / std``, fused.

The engine feeds the generator's output P to the ReID model as ``normalize(from_gan(tanh))``:
tanh, +1, *0.5, clamp, -mean, /std, each a pass over the batch (and as many saved tensors
for backward). Here forward is one read and one write and backward one read of x and dy
and one write. tanh is never evaluated: ``(tanh(x) + 1) / 2 == sigmoid(2x)`` exactly
(``tanh(x) = 2 sigmoid(2x) - 1``), which needs no libdevice (Triton's interpreter has none)
and loses no precision near +-1. Its derivative is ``2 s (1 - s)``; the clamp to [0, 1] is
kept for parity with ``from_gan`` and never binds (sigmoid already lies in [0, 1]), so it
passes the gradient through, as torch's clamp does inside its bounds.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
from torch import Tensor

from torchreid_privacy.images import from_gan, normalize

from ._common import (ELEMENTWISE_BLOCK, Stats, channel_constants, decode, elementwise_args, flat_offsets,
                      needs_int64)
from .dispatch import launch_options, tl, triton, use_triton


@triton.jit
def _forward_kernel(x_ptr, y_ptr, mean_ptr, inv_std_ptr, numel, D1, D2, D3,
                    sx0, sx1, sx2, sx3, sy0, sy1, sy2, sy3, cs, C,
                    CPOS: tl.constexpr, DENSE: tl.constexpr, CLAMP: tl.constexpr, INT64: tl.constexpr,
                    BLOCK: tl.constexpr):
    offs, mask = flat_offsets(numel, BLOCK, INT64)
    x_off, y_off, c = decode(offs, D1, D2, D3, sx0, sx1, sx2, sx3, sy0, sy1, sy2, sy3, cs, C, CPOS, DENSE)
    x = tl.load(x_ptr + x_off, mask=mask, other=0.0).to(tl.float32)
    image = tl.sigmoid(2.0 * x)  # (tanh(x) + 1) / 2
    if CLAMP:
        image = tl.minimum(tl.maximum(image, 0.0), 1.0)
    y = (image - tl.load(mean_ptr + c, mask=mask, other=0.0)) * tl.load(inv_std_ptr + c, mask=mask, other=1.0)
    tl.store(y_ptr + y_off, y, mask=mask)


@triton.jit
def _backward_kernel(x_ptr, dy_ptr, dx_ptr, inv_std_ptr, numel, D1, D2, D3,
                     sx0, sx1, sx2, sx3, sg0, sg1, sg2, sg3, sd0, sd1, sd2, sd3, cs, C,
                     CPOS: tl.constexpr, DENSE: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask = flat_offsets(numel, BLOCK, INT64)
    x_off, dy_off, c = decode(offs, D1, D2, D3, sx0, sx1, sx2, sx3, sg0, sg1, sg2, sg3, cs, C, CPOS, DENSE)
    dx_off, _, _ = decode(offs, D1, D2, D3, sd0, sd1, sd2, sd3, sd0, sd1, sd2, sd3, cs, C, CPOS, DENSE)
    s = tl.sigmoid(2.0 * tl.load(x_ptr + x_off, mask=mask, other=0.0).to(tl.float32))
    dy = tl.load(dy_ptr + dy_off, mask=mask, other=0.0).to(tl.float32)
    tl.store(dx_ptr + dx_off, dy * tl.load(inv_std_ptr + c, mask=mask, other=1.0) * (2.0 * s * (1.0 - s)), mask=mask)


class TanhDenormalizeFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, mean, inv_std, clamp):
        y = torch.empty_like(x)
        if x.numel():
            args, cpos, dense = elementwise_args(x, y)
            _forward_kernel[(triton.cdiv(x.numel(), ELEMENTWISE_BLOCK),)](
                x, y, mean, inv_std, x.numel(), *args, CPOS=cpos, DENSE=dense, CLAMP=clamp,
                INT64=needs_int64(x, y),
                BLOCK=ELEMENTWISE_BLOCK, **launch_options(4))
        ctx.save_for_backward(x, inv_std)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, inv_std = ctx.saved_tensors
        dx = torch.empty_like(x)
        if x.numel():
            args, cpos, dense = elementwise_args(x, dy, dx)
            _backward_kernel[(triton.cdiv(x.numel(), ELEMENTWISE_BLOCK),)](
                x, dy, dx, inv_std, x.numel(), *args, CPOS=cpos, DENSE=dense, INT64=needs_int64(x, dy, dx),
                BLOCK=ELEMENTWISE_BLOCK, **launch_options(4))
        return dx, None, None, None


def tanh_denormalize_torch(x: Tensor, mean: Stats, std: Stats, clamp: bool = True) -> Tensor:
    """The reference: the engine's ``normalize(from_gan(tanh(x)))``."""
    t = torch.tanh(x)
    return normalize(from_gan(t) if clamp else (t + 1.0) * 0.5, mean, std)


def tanh_denormalize(x: Tensor, mean: Stats, std: Stats, clamp: bool = True, *,
                     backend: Optional[str] = None) -> Tensor:
    """``((tanh(x) + 1) / 2 - mean) / std`` per channel of an (N, C, H, W) tensor of logits.

    ``clamp`` clamps the [0, 1] image before normalizing (as ``images.from_gan`` does).
    Differentiable in ``x`` (``mean``/``std`` are constants).
    """
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if use_triton(backend, x):
        mean_t, _, inv_std, _ = channel_constants(mean, std, x)
        return TanhDenormalizeFunction.apply(x, mean_t, inv_std, bool(clamp))
    return tanh_denormalize_torch(x, mean, std, clamp)


class TanhDenormalize(nn.Module):
    """Replaces a generator's final ``nn.Tanh`` when its output goes straight to the ReID model:
    logits in, torchreid-normalized images out."""

    def __init__(self, mean: Stats, std: Stats, clamp: bool = True) -> None:
        super().__init__()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32).reshape(-1), persistent=False)
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32).reshape(-1), persistent=False)
        self.clamp = bool(clamp)

    def forward(self, x: Tensor) -> Tensor:
        return tanh_denormalize(x, self.mean, self.std, self.clamp)


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """Inputs for the generic kernel tests: ``(args, kwargs)``."""
    gen = torch.Generator().manual_seed(5)
    x = (torch.randn(shape, generator=gen) * 3).to(device=device, dtype=dtype)
    mean, std = (0.485, 0.456, 0.406)[: shape[1]], (0.229, 0.224, 0.225)[: shape[1]]
    return (x, mean, std), {"clamp": True}
