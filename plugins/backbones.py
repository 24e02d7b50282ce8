"""Small ReID backbones registered into torchreid's model factory.

torchreid's smallest models (osnet_x0_25, mobilenetv2) are built for 256x128 and learn
slowly from scratch at the 64x32 resolution a CPU demo can afford. ``tiny_reid`` is a
plain 4-stage ResNet-style CNN with a BNNeck (Luo et al., BoT) that trains in minutes on
two cores. It follows torchreid's model contract: ``build(num_classes, loss, pretrained,
use_gpu)``; train mode returns logits (``softmax``) or ``(logits, features)``
(``triplet``); eval mode returns features.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

from torchreid_privacy import bridge


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
        self.skip = (nn.Identity() if stride == 1 and cin == cout else
                     nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.skip(x))


class TinyReID(nn.Module):
    """Stem + 4 residual stages + global average pooling + BNNeck + classifier."""

    def __init__(self, num_classes: int, loss: str = "softmax", widths: Sequence[int] = (32, 64, 128, 256)) -> None:
        super().__init__()
        if loss not in ("softmax", "triplet"):
            raise KeyError(f"loss: unsupported loss '{loss}' (softmax, triplet)")
        self.loss = loss
        self.stem = nn.Sequential(nn.Conv2d(3, widths[0], 3, 2, 1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU(inplace=True))
        stages, cin = [], widths[0]
        for i, w in enumerate(widths):
            stages.append(_BasicBlock(cin, w, 1 if i == 0 else 2))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = cin
        self.bnneck = nn.BatchNorm1d(cin)
        self.bnneck.bias.requires_grad_(False)
        self.classifier = nn.Linear(cin, num_classes, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.001)

    def forward(self, x: torch.Tensor):
        v = self.pool(self.stages(self.stem(x))).flatten(1)
        if not self.training:
            return self.bnneck(v)
        y = self.classifier(self.bnneck(v))
        return y if self.loss == "softmax" else (y, v)


def tiny_reid(num_classes: int, loss: str = "softmax", pretrained: bool = False, use_gpu: bool = False,
              **kwargs) -> TinyReID:
    if pretrained:
        raise ValueError("model.pretrained: tiny_reid has no pretrained weights; set model.pretrained false")
    return TinyReID(num_classes, loss=loss)


bridge.register_model("tiny_reid", tiny_reid)
