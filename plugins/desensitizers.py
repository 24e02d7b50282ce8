"""Built-in desensitizers: the conventional privacy supervision M made from a raw batch O.

Each takes an (N, C, H, W) floating tensor in [0, 1] on any device and returns a new tensor
of the same shape, dtype and device, for the whole batch at once (the training engine calls
them on every batch). They reproduce the PIL operations the paper applied image by image, so
M matches the paper's supervision. The implementations are the kernels ops (the fused Triton
kernel where the run's backend table says so, the torch reference beside it otherwise; see
kernels/README.md). Input checking lives in :func:`torchreid_privacy.desensitize`, the public
entry point; the registered signatures define the accepted parameters and their defaults.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from torchreid_privacy import kernels
from torchreid_privacy.registry import DESENSITIZERS


@DESENSITIZERS.register("mosaic")
def mosaic(images: Tensor, block: int = 24) -> Tensor:
    """Fill every ``block`` x ``block`` cell with its top-left pixel (partial cells at the
    right and bottom edges included)."""
    return kernels.mosaic(images, block)


@DESENSITIZERS.register("blur")
def blur(images: Tensor, radius: float = 12.0) -> Tensor:
    """PIL ``ImageFilter.GaussianBlur(radius)`` (``radius`` = the Gaussian's sigma in pixels):
    PIL's three extended box blurs per axis on grey levels, within one grey level of PIL."""
    return kernels.gaussian_blur(images, radius)


@DESENSITIZERS.register("noise")
def noise(images: Tensor, sigma: float = 0.5, generator: Optional[torch.Generator] = None) -> Tensor:
    """Add N(0, ``sigma``) noise on the [0, 1] scale, then clip to [0, 1].

    ``generator`` (on the images' device) makes the draw reproducible on either backend.
    """
    return kernels.add_noise(images, sigma, generator=generator)
