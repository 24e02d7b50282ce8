"""Training through the publication channel: P as published in the forward pass, a
differentiable stand-in for the channel in the backward pass.

Why: a G trained on float P learns to carry identity in details that 8-bit rounding and JPEG
destroy (measured on the demo: JPEG 95 cost the progressive run 13 to 17 rank-1 points on O->P
and P->O). G's ReID and adversary terms therefore see P exactly as the published file decodes
(:meth:`PublishChannel.publish`), while gradients flow through straight-through 8-bit rounding
and kornia's differentiable JPEG (``kornia.enhance.jpeg_codec_differentiable``, the same
quality). WebP has no differentiable codec in kornia; its gradient is JPEG's at the same quality.
"""
from __future__ import annotations

import torch

from torchreid_privacy.publish.channel import PublishChannel


def straight_through_round(x01: torch.Tensor) -> torch.Tensor:
    """Rounded to 8-bit levels in the forward pass, the identity in the backward pass."""
    return x01 + ((x01 * 255.0).round() / 255.0 - x01).detach()


def differentiable_channel(x01: torch.Tensor, channel: PublishChannel) -> torch.Tensor:
    """The differentiable stand-in alone: 8-bit rounding (straight-through), then kornia's JPEG."""
    y = straight_through_round(x01.clamp(0.0, 1.0))
    if channel.lossless:
        return y
    from kornia.enhance import jpeg_codec_differentiable

    quality = torch.tensor([float(channel.quality)], device=y.device, dtype=torch.float32)
    return jpeg_codec_differentiable(y.float(), quality).to(x01.dtype)


def through_channel(x01: torch.Tensor, channel: PublishChannel) -> torch.Tensor:
    """Forward: exactly ``channel.publish(x01)``; backward: the gradient of :func:`differentiable_channel`."""
    proxy = differentiable_channel(x01, channel)
    exact = channel.publish(x01.detach())
    return proxy + (exact - proxy).detach()
