"""The kernel table: one entry per op, so the generic tests and the benchmarks pick a new
kernel up from one file plus one line here.

Each entry names the torch reference, the op forced to Triton, and an example-input
factory ``example(device, dtype, shape) -> (args, kwargs)`` defined beside the kernel.
"""
from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Callable, Dict, Optional, Tuple

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class KernelOp:
    """One fused op. ``grad_args``: positions of the arguments to differentiate (empty: the op
    is not differentiable); ``compare(reference_out, triton_out, *args, **kwargs)`` replaces
    the elementwise tolerance check where outputs legitimately differ (random draws, PIL's
    one-grey-level rounding); ``bench_shapes`` are the benchmark sizes, batch left 0."""

    name: str
    reference: Callable[..., Any]
    triton: Callable[..., Any]
    example: Callable[..., Tuple[tuple, dict]]
    shapes: Tuple[Shape, ...]
    bench_shapes: Tuple[Shape, ...]
    atol: float = 1e-5
    rtol: float = 1e-5
    grad_args: Tuple[int, ...] = ()
    compare: Optional[Callable[..., None]] = field(default=None)


def _module(name: str) -> Any:
    """The op's module (``from . import mosaic`` would give the re-exported function)."""
    return importlib.import_module(f"{__package__}.{name}")


mosaic, gaussian_blur, add_noise, bn_leaky_relu, ssim_psnr, batch_hard_triplet = (
    _module(name) for name in ("mosaic", "gaussian_blur", "add_noise", "bn_leaky_relu", "ssim_psnr",
                               "batch_hard_triplet"))


_IMAGES = ((3, 3, 37, 19), (5, 3, 256, 128))
_MANY_CHANNELS = ((2, 80, 5, 7),)  # more channels than one reduction tile holds
_BATCH = 0  # placeholder in bench shapes: torchreid_privacy.bench.kernels puts the batch size here
_BENCH_IMAGES = ((_BATCH, 3, 256, 128),)
# the unet_128 generator's largest BatchNorm inputs at 256x128 (ngf 64): the last up level,
# then down levels 2, 3, 4 (deeper ones are tiny)
_BENCH_FEATURES = ((_BATCH, 64, 128, 64), (_BATCH, 128, 64, 32), (_BATCH, 256, 32, 16), (_BATCH, 512, 16, 8))

OPS: Dict[str, KernelOp] = {
    op.name: op
    for op in (
        KernelOp("mosaic", mosaic.mosaic_torch, partial(mosaic.mosaic, backend="triton"), mosaic.example,
                 _IMAGES, _BENCH_IMAGES, atol=0.0, rtol=0.0),
        KernelOp("gaussian_blur", gaussian_blur.gaussian_blur_torch,
                 partial(gaussian_blur.gaussian_blur, backend="triton"), gaussian_blur.example, _IMAGES,
                 _BENCH_IMAGES, compare=gaussian_blur.compare),
        # the reference path of the op itself: it turns ``seed`` into the torch generator
        KernelOp("add_noise", partial(add_noise.add_noise, backend="torch"), partial(add_noise.add_noise, backend="triton"),
                 add_noise.example, _IMAGES, _BENCH_IMAGES, compare=add_noise.compare),
        KernelOp("bn_leaky_relu", bn_leaky_relu.bn_leaky_relu_torch,
                 partial(bn_leaky_relu.bn_leaky_relu, backend="triton"), bn_leaky_relu.example,
                 _IMAGES + _MANY_CHANNELS, _BENCH_FEATURES, atol=2e-5, rtol=2e-5, grad_args=(0, 1, 2)),
        KernelOp("ssim_psnr", ssim_psnr.ssim_psnr_torch, partial(ssim_psnr.ssim_psnr, backend="triton"),
                 ssim_psnr.example, ((3, 3, 37, 19), (2, 3, 45, 150)), _BENCH_IMAGES, atol=2e-5, rtol=1e-4),
        KernelOp("batch_hard_triplet", batch_hard_triplet.batch_hard_triplet_torch,
                 partial(batch_hard_triplet.batch_hard_triplet, backend="triton"), batch_hard_triplet.example,
                 ((36, 50), (64, 2048)), ((_BATCH, 2048),), atol=1e-5, rtol=1e-4, grad_args=(0,)),
    )
}
