"""Triton fused kernels for the training and evaluation hot spots (see kernels/README.md).

Every op takes ``backend=None | 'triton' | 'torch'`` (None: the process-wide mode, see
:mod:`.dispatch`), runs its Triton kernel on CUDA tensors and its torch reference
elsewhere, and imports fine without Triton or a GPU. ``OPS`` lists them for tests and
benchmarks.
"""
from .dispatch import (  # noqa: F401
    BACKENDS,
    ENV_VAR,
    HAS_TRITON,
    INTERPRET,
    MODES,
    get_kernel_mode,
    resolve_backend,
    set_kernel_mode,
    use_triton,
)
from .ops import OPS, KernelOp  # noqa: F401  (imports every op module)
from .add_noise import add_noise  # noqa: F401
from .batch_hard_triplet import BatchHardTriplet, batch_hard_triplet  # noqa: F401
from .bn_leaky_relu import bn_leaky_relu  # noqa: F401
from .desensitize import desensitize_normalized  # noqa: F401
from .gaussian_blur import gaussian_blur  # noqa: F401
from .mosaic import mosaic  # noqa: F401
from .ssim_psnr import ssim_psnr  # noqa: F401
from .tanh_denormalize import TanhDenormalize, tanh_denormalize  # noqa: F401

__all__ = [
    "OPS", "KernelOp", "MODES", "BACKENDS", "ENV_VAR", "HAS_TRITON", "INTERPRET", "set_kernel_mode",
    "get_kernel_mode", "resolve_backend", "use_triton",
    "mosaic", "gaussian_blur", "add_noise", "desensitize_normalized", "bn_leaky_relu", "tanh_denormalize",
    "ssim_psnr", "batch_hard_triplet", "TanhDenormalize", "BatchHardTriplet",
]
