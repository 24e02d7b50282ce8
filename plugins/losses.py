"""Losses of the method: GAN, L1 reconstruction, and the ReID objective (CE + triplet + center).

The ReID terms follow the BoT / AGW references the paper builds on:

* ``cross_entropy``: torchreid's label-smoothed CE (``(1-eps) * onehot + eps/K``), made
  device-agnostic (torchreid's builds its targets on the CPU and needs ``use_gpu``).
* ``triplet``: torchreid's batch-hard triplet (margin 0.3), as ``kernels.batch_hard_triplet``
  (torchreid's loops over anchors with one device sync each).
* ``weighted_triplet``: AGW's weighted regularized triplet: softmax-weighted positive and
  negative distances, soft margin ``softplus(d_ap - d_an)``.
* ``center``: BoT's center loss, ``mean_i ||f_i - c_{y_i}||^2`` (no 1/2 factor; the 0.0005
  weight was tuned with this convention). Centers are meant for their own SGD (lr 0.5) with
  the gradient rescaled by ``1 / weight`` first (``ReIDLoss.rescale_center_grad``), as BoT does.
"""
from __future__ import annotations

from typing import Dict, List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchreid_privacy import bridge, kernels
from torchreid_privacy.registry import LOSSES

GAN_MODES = ("vanilla", "lsgan")


@LOSSES.register("gan")
class GANLoss(nn.Module):
    """``vanilla``: BCE-with-logits against all-real / all-fake targets; ``lsgan``: MSE.

    Discriminators return raw logits, so ``vanilla`` never applies a separate sigmoid.
    """

    def __init__(self, mode: str = "vanilla", real_label: float = 1.0, fake_label: float = 0.0) -> None:
        super().__init__()
        if mode not in GAN_MODES:
            raise ValueError(f"mode must be one of {GAN_MODES}, got {mode!r}")
        self.mode, self.real_label, self.fake_label = mode, float(real_label), float(fake_label)

    def forward(self, pred: torch.Tensor, target_is_real: bool) -> torch.Tensor:
        if not isinstance(target_is_real, bool):
            raise ValueError(f"target_is_real must be a bool, got {type(target_is_real).__name__}")
        target = torch.full_like(pred, self.real_label if target_is_real else self.fake_label)
        if self.mode == "vanilla":
            return F.binary_cross_entropy_with_logits(pred, target)
        return F.mse_loss(pred, target)

    def extra_repr(self) -> str:
        return f"mode={self.mode}"


@LOSSES.register("l1")
def l1(reduction: str = "mean") -> nn.L1Loss:
    """L1 reconstruction loss (L1(P, M) and L1(R, O), each weighted x100 by the engine)."""
    return nn.L1Loss(reduction=reduction)


@LOSSES.register("cross_entropy")
class LabelSmoothCrossEntropyLoss(bridge.CrossEntropyLoss):
    """torchreid's ``CrossEntropyLoss`` on any device: ``-(((1-eps) onehot + eps/K) * log p)``,
    summed over classes and averaged over the batch (``F.cross_entropy``'s label smoothing is
    exactly this formula)."""

    def __init__(self, num_classes: int, eps: float = 0.1, label_smooth: bool = True) -> None:
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        super().__init__(num_classes, eps=eps, use_gpu=False, label_smooth=label_smooth)

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if inputs.dim() != 2 or inputs.shape[1] != self.num_classes:
            raise ValueError(f"inputs must be (batch, num_classes={self.num_classes}) logits, "
                             f"got {tuple(inputs.shape)}")
        return F.cross_entropy(inputs, targets, label_smoothing=self.eps)


@LOSSES.register("triplet")
class BatchHardTripletLoss(bridge.TripletLoss):
    """torchreid's ``TripletLoss`` (hardest positive, hardest negative, hinge with ``margin``):
    ``kernels.batch_hard_triplet``, the fused kernel or the vectorized torch reference as the
    run's backend table says; same value and gradient as torchreid's loop."""

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return kernels.batch_hard_triplet(inputs, targets, self.margin)


@LOSSES.register("cross_triplet")
class CrossDomainTripletLoss(nn.Module):
    """Batch-hard triplet *across* two views of one batch (O and P): each image of one view is an
    anchor against the other view's images only (hardest same-identity, hardest other-identity,
    Euclidean, hinge ``margin``), averaged over both directions.

    Why: the paper's ReID terms score O and P each on their own (CE + triplet per view), which ties
    the views together only through the shared classifier; O->P and P->O retrieval is exactly this
    loss, so it trains the crossed settings directly (``privacy.weights.cross``; 0 = the paper).
    """

    def __init__(self, margin: float = 0.3) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, feats_a: torch.Tensor, feats_b: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        dist = torch.cdist(feats_a, feats_b)
        same = targets[:, None] == targets[None, :]
        losses = []
        for d, s in ((dist, same), (dist.t(), same.t())):
            pos = d.masked_fill(~s, float("-inf")).max(dim=1).values
            neg = d.masked_fill(s, float("inf")).min(dim=1).values
            keep = torch.isfinite(pos) & torch.isfinite(neg)  # anchors with both a positive and a negative
            losses.append(F.relu(pos[keep] - neg[keep] + self.margin).mean() if keep.any() else d.sum() * 0)
        return (losses[0] + losses[1]) / 2

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


@LOSSES.register("weighted_triplet")
class WeightedRegularizedTripletLoss(nn.Module):
    """AGW's weighted regularized triplet: no margin to tune.

    Per anchor, positives are weighted by ``softmax(d)`` (far ones count more) and negatives by
    ``softmax(-d)`` (near ones count more); loss = mean ``softplus(d_ap - d_an)``. The softmax is
    a masked one; AGW's ``exp(d - max)`` with a ``+1e-6`` normaliser matches it to ~1e-6
    relative but underflows to zero weights when distances exceed ~88.

    Torch on every device and backend: there is no fused kernel for it (kernels/README.md says
    why), and batch-hard's kernel computes a different loss.
    """

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        pos, neg = kernels.identity_masks(inputs, targets)
        dist = kernels.pairwise_euclidean(inputs)
        w_ap = torch.softmax(dist.masked_fill(neg, float("-inf")), dim=1)
        w_an = torch.softmax((-dist).masked_fill(pos, float("-inf")), dim=1)
        dist_ap = (dist * w_ap).sum(dim=1)
        dist_an = (dist * w_an).sum(dim=1)
        return F.softplus(dist_ap - dist_an).mean()


@LOSSES.register("center")
class CenterLoss(nn.Module):
    """BoT's center loss: ``mean_i ||f_i - c_{y_i}||^2``; centers start N(0, 1) like BoT's."""

    def __init__(self, num_classes: int, feat_dim: int) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if feat_dim < 1:
            raise ValueError(f"feat_dim must be >= 1, got {feat_dim}")
        self.num_classes, self.feat_dim = num_classes, feat_dim
        self.centers = nn.Parameter(torch.randn(num_classes, feat_dim))

    def forward(self, features: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if features.dim() != 2 or features.shape[1] != self.feat_dim:
            raise ValueError(f"features must be (batch, feat_dim={self.feat_dim}), got {tuple(features.shape)}")
        return (features - self.centers[targets]).pow(2).sum(dim=1).mean()

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, feat_dim={self.feat_dim}"


@LOSSES.register("reid")
class ReIDLoss(nn.Module):
    """The paper's ReID objective: label-smoothed CE + triplet + ``weight_center`` x center.

    ``forward(logits, features, targets)`` returns ``(total, terms)`` where ``terms`` holds the
    detached, unweighted ``xent``, ``triplet`` and ``center`` values (``center`` is 0 and not
    computed when ``weight_center == 0``; the centers still exist so optimizers and checkpoints
    look the same for every weight). Call it once for C(O) and once for C(P): the centers are
    shared.

    The centers are parameters of this module; give them their own optimizer, not C's::

        reid = ReIDLoss(num_classes=751, feat_dim=2048)
        opt_center = torch.optim.SGD(reid.center_parameters(), lr=0.5)
        total, terms = reid(logits_o, feats_o, pids)
        total.backward()
        reid.rescale_center_grad()  # BoT: centers learn as if unweighted
        opt_center.step()
    """

    def __init__(self, num_classes: int, feat_dim: int, margin: float = 0.3, weight_center: float = 0.0005,
                 weighted_triplet: bool = False, label_smooth: bool = True) -> None:
        super().__init__()
        if weight_center < 0:
            raise ValueError(f"weight_center must be >= 0, got {weight_center}")
        self.weight_center = float(weight_center)
        self.xent = LabelSmoothCrossEntropyLoss(num_classes, label_smooth=label_smooth)
        self.triplet = WeightedRegularizedTripletLoss() if weighted_triplet else BatchHardTripletLoss(margin)
        self.center = CenterLoss(num_classes, feat_dim)

    def forward(self, logits: torch.Tensor, features: torch.Tensor,
                targets: torch.Tensor) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
        xent = self.xent(logits, targets)
        triplet = self.triplet(features, targets)
        if self.weight_center == 0:
            center = features.new_zeros(())
            total = xent + triplet
        else:
            center = self.center(features, targets)
            total = xent + triplet + self.weight_center * center
        return total, {"xent": xent.detach(), "triplet": triplet.detach(), "center": center.detach()}

    def center_parameters(self) -> List[nn.Parameter]:
        return list(self.center.parameters())

    def rescale_center_grad(self) -> None:
        """Undo ``weight_center`` on the centers' gradient (BoT/AGW do this before their SGD step)."""
        if self.weight_center == 0:
            return  # the centers took no part in the loss
        for p in self.center_parameters():
            if p.grad is not None:
                p.grad.mul_(1.0 / self.weight_center)
