"""Additive Gaussian noise, clipped to [0, 1]: the ``noise`` desensitizer's M.

The torch reference materialises the noise tensor, then scales, adds and clamps it (four
passes). The kernel draws N(0, 1) with Triton's Philox (``tl.randn(seed, offset)``) keyed by
the element's logical NCHW index, so a ``seed`` gives the same noise whatever the block
size, strides or launch grid; it reads the batch once and writes the result once.

Reproducibility: a ``generator`` (or ``seed``) makes both backends repeatable. The torch
path draws from the generator itself (``torch.randn(..., generator=)``); the kernel takes
one seed from it per call (so the generator advances, and a re-seeded generator repeats
the draw). Triton's and torch's generators differ, so the two backends give statistically
identical, not bit-identical, noise.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
from torch import Tensor

from ._common import check_images, check_number, flat_offsets, launch_elementwise
from .dispatch import backend_for, register_op, tl, triton

OP = register_op("add_noise")
SEED_LIMIT = 2 ** 63


@triton.jit(do_not_specialize=["seed"])
def _noise_kernel(x_ptr, out_ptr, numel, C, H, W, sxn, sxc, sxh, sxw, sigma, seed,
                  DENSE: tl.constexpr, INT64: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask = flat_offsets(numel, BLOCK, INT64)
    if DENSE:  # contiguous input: the element's index is its offset
        src = offs
    else:
        w = offs % W
        rest = offs // W
        h = rest % H
        rest = rest // H
        c = rest % C
        src = (rest // C) * sxn + c * sxc + h * sxh + w * sxw
    v = tl.load(x_ptr + src, mask=mask, other=0.0).to(tl.float32)
    noisy = tl.minimum(tl.maximum(tl.randn(seed, offs) * sigma + v, 0.0), 1.0)
    tl.store(out_ptr + offs, noisy, mask=mask)


def draw_seed(generator: Optional[torch.Generator] = None) -> int:
    """A seed from ``generator`` (or torch's default one, so ``torch.manual_seed`` governs it).

    A CUDA generator costs one small device-to-host copy.
    """
    device = generator.device if generator is not None else "cpu"
    return int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator, device=device).item())


def noise_launch(x: Tensor, sigma: float, seed: int) -> Tensor:
    """Launch the kernel (any strides in, contiguous out)."""
    return launch_elementwise(_noise_kernel, x, float(sigma), int(seed), DENSE=x.is_contiguous())


def check_seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < SEED_LIMIT:
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    return seed


def add_noise_torch(images: Tensor, sigma: float = 0.5, generator: Optional[torch.Generator] = None) -> Tensor:
    """The reference: ``clamp(images + sigma * randn, 0, 1)``, the draw from ``generator``
    (on the images' device; None: torch's default generator)."""
    out = torch.randn(images.shape, generator=generator, dtype=images.dtype, device=images.device)
    return out.mul_(sigma).add_(images).clamp_(0.0, 1.0)


def add_noise(x: Tensor, sigma: float = 0.5, seed: Optional[int] = None, *,
              generator: Optional[torch.Generator] = None, backend: Optional[str] = None) -> Tensor:
    """``clip(x + N(0, sigma), 0, 1)`` of an (N, C, H, W) batch of [0, 1] images.

    Give at most one of ``seed`` / ``generator`` (on ``x``'s device for the torch path): the
    same one and backend give the same noise; neither draws from torch's default generator.
    Not differentiable. Example::

        m = add_noise(o01, 0.5, generator=torch.Generator(o01.device).manual_seed(0))
    """
    check_images(x)
    check_number(sigma, "sigma", 0.0)
    if seed is not None:
        check_seed(seed)
        if generator is not None:
            raise ValueError("seed: give a seed or a generator, not both")
    if generator is not None and not isinstance(generator, torch.Generator):
        raise ValueError(f"generator must be a torch.Generator, got {type(generator).__name__}")
    if backend_for(OP, backend) == "triton":
        return noise_launch(x, float(sigma), draw_seed(generator) if seed is None else seed)
    if seed is not None:
        generator = torch.Generator(device=x.device).manual_seed(seed)
    return add_noise_torch(x, sigma, generator)


def compare(reference: Tensor, result: Tensor, x: Tensor, sigma: float = 0.5, **_: object) -> None:
    """Statistical check for the generic tests (the two generators differ): where no clipping
    happened the noise must be N(0, sigma) and uncorrelated with x; clipped values sit at 0 or 1."""
    for out in (reference, result):
        if out.shape != x.shape or float(out.min()) < 0.0 or float(out.max()) > 1.0:
            raise AssertionError(f"noisy images must keep shape {tuple(x.shape)} and lie in [0, 1]")
        inside = (out > 0) & (out < 1)
        noise = (out.double() - x.double())[inside]
        # the unclipped part of a clipped Gaussian: loose bounds that still catch a wrong sigma
        if noise.numel() < 0.25 * x.numel():
            raise AssertionError(f"only {noise.numel()} of {x.numel()} values escaped clipping")
        if abs(float(noise.mean())) > 0.15 * sigma or not 0.5 * sigma < float(noise.std()) < 1.1 * sigma:
            raise AssertionError(f"noise mean {float(noise.mean()):.4f} / std {float(noise.std()):.4f} "
                                 f"do not fit N(0, {sigma})")


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """Inputs for the generic kernel tests: ``(args, kwargs)``."""
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(shape, generator=gen).to(device=device, dtype=dtype)
    return (x,), {"sigma": 0.1, "seed": 1234}
