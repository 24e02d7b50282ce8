"""Keyed recovery decoder: G_R(P, key) restores O only with the right secret key.

Any registered generator becomes keyed by giving it ``3 + key_channels`` input channels:
the key arrives as +-1 planes (``torchreid_privacy.sealing.keys.key_planes``) concatenated to P.
The engine trains it to restore O under the right key and to give back P (no information
beyond the protected image) under random wrong keys, so the decoder's weights alone do not
recover anyone.
"""
from __future__ import annotations

import torch
import torch.nn as nn


class KeyedDecoder(nn.Module):
    """``net(cat([p, key]))``; ``key`` is (C, H, W), shared by the batch, or (N, C, H, W)."""

    def __init__(self, net: nn.Module, key_channels: int) -> None:
        super().__init__()
        if key_channels < 1:
            raise ValueError(f"privacy.decoder.key_channels: must be >= 1, got {key_channels}")
        self.net = net
        self.key_channels = int(key_channels)

    def forward(self, p: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        if key.dim() == 3:
            key = key.unsqueeze(0).expand(p.shape[0], -1, -1, -1)
        if key.shape[1] != self.key_channels or key.shape[-2:] != p.shape[-2:]:
            raise ValueError(f"key planes of shape {tuple(key.shape)} do not fit images {tuple(p.shape)} "
                             f"with {self.key_channels} key channels")
        return self.net(torch.cat([p, key.to(p.dtype)], dim=1))
