"""How invertible protected images are: an attacker U-Net trained with L1 on leaked (X, O) pairs.

Why a metric of its own: the attacks (``attacks.recover``, on a finished run) and the inversion
gate of the progressive upgrade (during training) must measure invertibility with the same
attacker, so their numbers compare. The attacker is a fresh U-Net of the decoder's family and
size (``privacy.decoder``), trained on X (published P, or the conventional M: the yardstick) with
L1 only -- L1 maximizes PSNR, a GAN term would only lower it -- and scored by PSNR/SSIM(O,
attacker(X)) on images it never saw. It is never the adversary G trains against.
"""
from __future__ import annotations

from typing import Any, Dict, List, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from torchreid_privacy.config import Config
from torchreid_privacy.metrics.image import ImageMetricAccumulator
from torchreid_privacy.utils.images import from_gan, to_gan

LR, BETAS = 2e-4, (0.5, 0.999)  # pix2pix's Adam settings


def build_attacker(cfg: Config, seed: int) -> nn.Module:
    """A fresh U-Net like G_R (``privacy.decoder``), initialized from ``seed`` (global RNG untouched)."""
    from torchreid_privacy.registry import ANONYMIZERS, load_plugins

    load_plugins()
    d = cfg.privacy.decoder
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ANONYMIZERS.get(d.name)(ngf=d.ngf, num_downs=d.num_downs)


def train_attacker(net: nn.Module, x01: torch.Tensor, o01: torch.Tensor, steps: int, batch_size: int,
                   seed: int) -> Tuple[nn.Module, List[float]]:
    """L1 training in GAN space on minibatches drawn with replacement; returns (net, per-step L1)."""
    net.train()
    opt = torch.optim.Adam(net.parameters(), lr=LR, betas=BETAS)
    gen = torch.Generator().manual_seed(seed)
    losses = []
    with torch.enable_grad():
        for _ in range(steps):
            idx = torch.randint(len(x01), (batch_size,), generator=gen).to(x01.device)
            loss = F.l1_loss(net(to_gan(x01[idx])), to_gan(o01[idx]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    return net.eval(), losses


@torch.no_grad()
def attacker_metrics(net: nn.Module, x01: torch.Tensor, o01: torch.Tensor, batch_size: int = 64) -> Dict[str, Any]:
    """PSNR/SSIM(O, net(X)) over held-out images (``ImageMetricAccumulator.result()``)."""
    net.eval()
    acc = ImageMetricAccumulator()
    for i in range(0, len(x01), batch_size):
        acc.update(o01[i:i + batch_size], from_gan(net(to_gan(x01[i:i + batch_size]))))
    return acc.result()


def inversion_psnr(cfg: Config, train: Tuple[torch.Tensor, torch.Tensor], held_out: Tuple[torch.Tensor, torch.Tensor],
                   steps: int, batch_size: int = 16, seed: int = 0) -> float:
    """PSNR (dB) of a fresh attacker trained on ``train = (X, O)`` pairs, scored on ``held_out``."""
    net = build_attacker(cfg, seed).to(train[0].device)
    net, _ = train_attacker(net, train[0], train[1], steps, batch_size, seed)
    return float(attacker_metrics(net, *held_out)["psnr"])
