"""Conversions between torchreid's normalized batches, [0,1] images and GAN space [-1,1].

torchreid feeds ``(x - mean) / std``; desensitizers and image metrics work on [0,1];
pix2pix generators and discriminators work on [-1,1]. Keeping the three spaces explicit
avoids the classic bug of computing PSNR on normalized tensors.
"""
from __future__ import annotations

import os
from typing import Sequence, Union

import torch

MeanStd = Union[Sequence[float], torch.Tensor]


def _as_tensor(v: MeanStd, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return t.view(1, -1, 1, 1)


def denormalize(x: torch.Tensor, mean: MeanStd, std: MeanStd) -> torch.Tensor:
    """torchreid-normalized batch -> [0,1] images (clamped: random erasing may overshoot)."""
    return (x * _as_tensor(std, x) + _as_tensor(mean, x)).clamp_(0.0, 1.0)


def normalize(x01: torch.Tensor, mean: MeanStd, std: MeanStd) -> torch.Tensor:
    return (x01 - _as_tensor(mean, x01)) / _as_tensor(std, x01)


def to_gan(x01: torch.Tensor) -> torch.Tensor:
    return x01 * 2.0 - 1.0


def from_gan(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def save_grid(path: str, columns: Sequence[torch.Tensor]) -> None:
    """Save a PNG whose rows are images and whose columns are O | M | P | R ([0,1] tensors)."""
    from torchvision.utils import save_image

    n = min(c.shape[0] for c in columns)
    rows = torch.stack([c[:n].detach().float().cpu() for c in columns], dim=1)  # n, k, C, H, W
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp.png"
    save_image(rows.flatten(0, 1), tmp, nrow=len(columns), padding=2)
    os.replace(tmp, path)
