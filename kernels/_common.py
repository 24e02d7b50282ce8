"""Helpers shared by the op files: argument checks, strides in memory order, launch sizes."""
from __future__ import annotations

import numbers
from typing import Optional, Sequence, Tuple

import torch
from torch import Tensor

from .dispatch import INTERPRET, launch_options, tl, triton

INT32_LIMIT = 2 ** 31 - 1
# One program's worth of elements: big in the interpreter (each program costs Python
# overhead), GPU-sized otherwise.
ELEMENTWISE_BLOCK = 1 << 16 if INTERPRET else 1024


def check_images(x: object, arg: str = "x") -> Tensor:
    """An (N, C, H, W) floating tensor, else ``ValueError`` naming ``arg``."""
    if not isinstance(x, Tensor):
        raise ValueError(f"{arg} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{arg} must be an (N, C, H, W) batch, got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{arg} must be a floating tensor, got dtype {x.dtype}")
    return x


def check_number(value: object, arg: str, least: float, integral: bool = False) -> None:
    """``value`` is a number >= ``least`` (an int when ``integral``), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{arg} must be a number, got {value!r}")
    if integral and not isinstance(value, numbers.Integral):
        raise ValueError(f"{arg} must be an integer, got {value!r}")
    if not value >= least:
        raise ValueError(f"{arg} must be >= {least}, got {value!r}")


def needs_int64(*tensors: Optional[Tensor]) -> bool:
    """Whether some element offset of these tensors overflows int32 index arithmetic."""
    for t in tensors:
        if t is None or t.numel() == 0:
            continue
        span = sum((size - 1) * abs(stride) for size, stride in zip(t.shape, t.stride()))
        if max(span, t.numel()) > INT32_LIMIT:
            return True
    return False


def memory_order(x: Tensor) -> Tuple[int, ...]:
    """``x``'s dimensions from outermost to innermost in memory (ties keep logical order).

    Elementwise kernels walk elements in this order, so NCHW and channels-last tensors are
    both read and written contiguously.
    """
    return tuple(sorted(range(x.dim()), key=lambda d: (-abs(x.stride(d)), d)))


def permuted(values: Sequence[int], order: Sequence[int]) -> Tuple[int, ...]:
    return tuple(values[d] for d in order)


def elementwise_args(x: Tensor, *others: Tensor) -> Tuple[tuple, int, bool]:
    """Arguments for :func:`decode`: sizes D1..D3 and the strides of ``x`` and each of ``others``,
    all in ``x``'s memory order, then ``x``'s channel stride and channel count; plus the channel
    dimension's slot in that order and whether every tensor is dense with ``x``'s strides (then
    an element's offset is its index: no division but the channel's)."""
    order = memory_order(x)
    sizes = permuted(x.shape, order)
    strides = sum((permuted(t.stride(), order) for t in (x,) + others), ())
    dense = (x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last)) and all(
        t.stride() == x.stride() for t in others)
    return sizes[1:] + strides + (x.stride(1), x.shape[1]), order.index(1), dense


@triton.jit
def flat_offsets(numel, BLOCK: tl.constexpr, INT64: tl.constexpr):
    """This program's ``BLOCK`` flat element indices and their in-bounds mask; ``INT64`` widens
    the index arithmetic before the multiply, so tensors past 2**31 elements don't wrap."""
    pid = tl.program_id(0)
    if INT64:
        offs = pid.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    else:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < numel


@triton.jit
def decode(offs, D1, D2, D3, s0, s1, s2, s3, t0, t1, t2, t3, cs, C, CPOS: tl.constexpr, DENSE: tl.constexpr):
    """Element ``offs`` of a tensor walked in memory order -> offsets into two tensors + channel."""
    if DENSE:
        x_off = offs
        y_off = offs
        c = (offs // cs) % C
    else:
        i3 = offs % D3
        rest = offs // D3
        i2 = rest % D2
        rest = rest // D2
        i1 = rest % D1
        i0 = rest // D1
        if CPOS == 0:
            c = i0
        elif CPOS == 1:
            c = i1
        elif CPOS == 2:
            c = i2
        else:
            c = i3
        x_off = i0 * s0 + i1 * s1 + i2 * s2 + i3 * s3
        y_off = i0 * t0 + i1 * t1 + i2 * t2 + i3 * t3
    return x_off, y_off, c


def launch_elementwise(kernel, x: Tensor, *scalars, **constexprs) -> Tensor:
    """Launch an elementwise desensitizer kernel over ``x`` (mosaic, noise) into a new
    contiguous tensor. The kernels share one signature prefix: ``(x, out, numel, C, H, W,
    4 strides of x, *scalars)``."""
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x.numel() == 0:
        return out
    grid = (triton.cdiv(x.numel(), ELEMENTWISE_BLOCK),)
    kernel[grid](x, out, x.numel(), *x.shape[1:], *x.stride(), *scalars,
                 INT64=needs_int64(x, out), BLOCK=ELEMENTWISE_BLOCK, **constexprs, **launch_options(4))
    return out
