"""Triton fused kernels for the training and evaluation hot spots (see kernels/README.md).

Each op file holds its Triton kernel, the launcher, the torch reference beside it and the
public op. Every op takes ``backend=None | 'triton' | 'torch'``; None looks the op up in the
process-wide table that :func:`select_backends` resolves once from the run's setting
(``privacy.kernels``) and device (:mod:`.dispatch`). Imports only torch, triton, numpy and
the standard library, and works without Triton or a GPU. ``OPS`` lists the ops for tests
and benchmarks.
"""
from .dispatch import (  # noqa: F401
    BACKENDS,
    ENV_VAR,
    HAS_TRITON,
    INTERPRET,
    MODES,
    backend_for,
    backend_report,
    backends,
    get_kernel_mode,
    select_backends,
    set_kernel_mode,
)
from .ops import OPS, KernelOp  # noqa: F401  (imports every op module)
from .add_noise import add_noise  # noqa: F401
from .batch_hard_triplet import BatchHardTriplet, batch_hard_triplet, identity_masks, pairwise_euclidean  # noqa: F401
from .bn_leaky_relu import bn_leaky_relu  # noqa: F401
from .gaussian_blur import gaussian_blur  # noqa: F401
from .mosaic import mosaic  # noqa: F401
from .ssim_psnr import ssim_psnr  # noqa: F401

__all__ = [
    "OPS", "KernelOp", "MODES", "BACKENDS", "ENV_VAR", "HAS_TRITON", "INTERPRET", "select_backends", "backends",
    "set_kernel_mode", "get_kernel_mode", "backend_for", "backend_report",
    "mosaic", "gaussian_blur", "add_noise", "bn_leaky_relu", "ssim_psnr", "batch_hard_triplet",
    "BatchHardTriplet", "pairwise_euclidean", "identity_masks",
]
