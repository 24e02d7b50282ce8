"""torchreid's batch-hard triplet loss: distances and hardest positive/negative in one kernel.

torchreid builds the (N, N) distance matrix (norms, addmm, clamp, sqrt: five passes) and
then loops over the anchors in Python with a device sync each; the vectorized torch reference
below (same value and gradient as torchreid's ``TripletLoss``) still writes the matrix twice
more for the masked max/min. Here one kernel computes a block of anchors' distances tile by tile with
``tl.dot`` and keeps only the running hardest positive and negative (value and index): the
matrix never reaches memory. Backward needs only those indices: for anchor i with an
active hinge, ``d/dx_i (d_ip - d_in) = (x_i - x_p) / d_ip - (x_i - x_n) / d_in`` and the
opposite terms go to x_p and x_n. A second kernel gathers that as
``grad_k = sum_j S_kj (x_k - x_j)`` with the sparse symmetric ``S`` rebuilt from the indices
tile by tile (one ``tl.dot`` per tile, no atomics, deterministic).

Distances use float32 "ieee" dots, like torchreid's float32 ``addmm``. Differences from the
reference: ties between equally hard samples go to the first index (``amax``'s gradient
splits them); an anchor's own zero distance gets no gradient; and anchors without any
negative contribute zero instead of raising (the kernel path never syncs with the host).
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ._common import check_number
from .dispatch import INTERPRET, backend_for, launch_options, pow2_at_least, register_op, tl, triton

OP = register_op("batch_hard_triplet")
_MAX_ROWS = 128 if INTERPRET else 16  # anchors (and columns) per tile
_MAX_DIM = 512 if INTERPRET else 64  # feature dimensions per dot
_CLAMP = 1e-12  # torchreid clamps squared distances here before the sqrt


@triton.jit
def _hardest_kernel(f_ptr, pid_ptr, ap_ptr, an_ptr, ap_idx_ptr, an_idx_ptr, N, D, sfn, sfd,
                    BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    row_ok = rows < N
    pid_r = tl.load(pid_ptr + rows, mask=row_ok, other=-1)
    best_ap = tl.full([BM], float("-inf"), dtype=tl.float32)
    best_an = tl.full([BM], float("inf"), dtype=tl.float32)
    ap_idx = tl.zeros([BM], dtype=tl.int32)
    an_idx = tl.zeros([BM], dtype=tl.int32)
    for j0 in range(0, N, BN):
        cols = j0 + tl.arange(0, BN)
        col_ok = cols < N
        pid_c = tl.load(pid_ptr + cols, mask=col_ok, other=-1)
        gram = tl.zeros([BM, BN], dtype=tl.float32)
        sq_r = tl.zeros([BM], dtype=tl.float32)
        sq_c = tl.zeros([BN], dtype=tl.float32)
        for d0 in range(0, D, BD):
            dims = d0 + tl.arange(0, BD)
            d_ok = (dims < D)[None, :]
            fr = tl.load(f_ptr + rows[:, None] * sfn + dims[None, :] * sfd, mask=row_ok[:, None] & d_ok,
                         other=0.0).to(tl.float32)
            fc = tl.load(f_ptr + cols[:, None] * sfn + dims[None, :] * sfd, mask=col_ok[:, None] & d_ok,
                         other=0.0).to(tl.float32)
            gram += tl.dot(fr, tl.trans(fc), input_precision="ieee")
            sq_r += tl.sum(fr * fr, axis=1)
            sq_c += tl.sum(fc * fc, axis=1)
        dist = tl.sqrt_rn(tl.maximum(sq_r[:, None] + sq_c[None, :] - 2.0 * gram, 1e-12))
        same = pid_r[:, None] == pid_c[None, :]
        hardest_pos, pos_at = tl.max(tl.where(same & col_ok[None, :], dist, float("-inf")), axis=1,
                                     return_indices=True)
        hardest_neg, neg_at = tl.min(tl.where((~same) & col_ok[None, :], dist, float("inf")), axis=1,
                                     return_indices=True)
        better = hardest_pos > best_ap  # strict: the first of equal candidates wins
        best_ap = tl.where(better, hardest_pos, best_ap)
        ap_idx = tl.where(better, j0 + pos_at, ap_idx)
        better = hardest_neg < best_an
        best_an = tl.where(better, hardest_neg, best_an)
        an_idx = tl.where(better, j0 + neg_at, an_idx)
    tl.store(ap_ptr + rows, best_ap, mask=row_ok)
    tl.store(an_ptr + rows, best_an, mask=row_ok)
    tl.store(ap_idx_ptr + rows, ap_idx, mask=row_ok)
    tl.store(an_idx_ptr + rows, an_idx, mask=row_ok)


@triton.jit
def _grad_kernel(f_ptr, grad_ptr, ap_idx_ptr, an_idx_ptr, wp_ptr, wn_ptr, N, D, sfn, sfd,
                 BM: tl.constexpr, BN: tl.constexpr, BD: tl.constexpr):
    """grad_k = sum_j S_kj (x_k - x_j), S_kj = W_kj + W_jk, W_{i,ap(i)} = wp_i, W_{i,an(i)} = wn_i."""
    rows = tl.program_id(0) * BM + tl.arange(0, BM)
    row_ok = rows < N
    ap_r = tl.load(ap_idx_ptr + rows, mask=row_ok, other=-1)
    an_r = tl.load(an_idx_ptr + rows, mask=row_ok, other=-1)
    wp_r = tl.load(wp_ptr + rows, mask=row_ok, other=0.0)
    wn_r = tl.load(wn_ptr + rows, mask=row_ok, other=0.0)
    for d0 in range(0, D, BD):
        dims = d0 + tl.arange(0, BD)
        d_ok = (dims < D)[None, :]
        acc = tl.zeros([BM, BD], dtype=tl.float32)
        weight = tl.zeros([BM], dtype=tl.float32)
        for j0 in range(0, N, BN):
            cols = j0 + tl.arange(0, BN)
            col_ok = cols < N
            ap_c = tl.load(ap_idx_ptr + cols, mask=col_ok, other=-1)
            an_c = tl.load(an_idx_ptr + cols, mask=col_ok, other=-1)
            wp_c = tl.load(wp_ptr + cols, mask=col_ok, other=0.0)
            wn_c = tl.load(wn_ptr + cols, mask=col_ok, other=0.0)
            s = tl.where(ap_r[:, None] == cols[None, :], wp_r[:, None], 0.0)
            s += tl.where(an_r[:, None] == cols[None, :], wn_r[:, None], 0.0)
            s += tl.where(ap_c[None, :] == rows[:, None], wp_c[None, :], 0.0)
            s += tl.where(an_c[None, :] == rows[:, None], wn_c[None, :], 0.0)
            s = tl.where(col_ok[None, :], s, 0.0)
            weight += tl.sum(s, axis=1)
            fc = tl.load(f_ptr + cols[:, None] * sfn + dims[None, :] * sfd, mask=col_ok[:, None] & d_ok,
                         other=0.0).to(tl.float32)
            acc += tl.dot(s, fc, input_precision="ieee")
        fr = tl.load(f_ptr + rows[:, None] * sfn + dims[None, :] * sfd, mask=row_ok[:, None] & d_ok,
                     other=0.0).to(tl.float32)
        tl.store(grad_ptr + rows[:, None] * D + dims[None, :], weight[:, None] * fr - acc,
                 mask=row_ok[:, None] & d_ok)


def _blocks(n: int, d: int) -> Tuple[int, int]:
    """(rows per tile, dims per dot); tl.dot needs every side >= 16."""
    return max(16, min(_MAX_ROWS, pow2_at_least(n))), max(16, min(_MAX_DIM, pow2_at_least(d)))


def hardest_launch(features: Tensor, pids: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Per anchor: hardest positive and negative distance (float32) and their indices (int32)."""
    n, d = features.shape
    ap = torch.empty(n, dtype=torch.float32, device=features.device)
    an = torch.empty_like(ap)
    ap_idx = torch.empty(n, dtype=torch.int32, device=features.device)
    an_idx = torch.empty_like(ap_idx)
    bm, bd = _blocks(n, d)
    _hardest_kernel[(triton.cdiv(n, bm),)](features, pids, ap, an, ap_idx, an_idx, n, d, *features.stride(),
                                           BM=bm, BN=bm, BD=bd, **launch_options(4))
    return ap, an, ap_idx, an_idx


class BatchHardTripletFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, features, pids, margin):
        ap, an, ap_idx, an_idx = hardest_launch(features, pids)
        hinge = ap - an + margin
        ctx.save_for_backward(features, ap, an, ap_idx, an_idx, hinge)
        return hinge.clamp_min(0.0).mean()

    @staticmethod
    def backward(ctx, grad_loss):
        features, ap, an, ap_idx, an_idx, hinge = ctx.saved_tensors
        n, d = features.shape
        # torch's clamp_min passes the gradient where hinge >= 0; mean -> 1/n
        coef = (hinge >= 0).float() * (grad_loss.float() / n)
        anchors = torch.arange(n, device=features.device, dtype=ap_idx.dtype)
        own = (ap_idx == anchors) | (ap <= _CLAMP ** 0.5)  # clamped distances have no gradient
        wp = torch.where(own, torch.zeros_like(coef), coef / ap)
        wn = torch.where(an <= _CLAMP ** 0.5, torch.zeros_like(coef), -coef / an)
        grad = torch.empty((n, d), dtype=features.dtype, device=features.device)
        bm, bd = _blocks(n, d)
        _grad_kernel[(triton.cdiv(n, bm),)](features, grad, ap_idx, an_idx, wp, wn, n, d, *features.stride(),
                                            BM=bm, BN=bm, BD=bd, **launch_options(4))
        return grad, None, None


def pairwise_euclidean(features: Tensor) -> Tensor:
    """Euclidean distance matrix as torchreid / AGW compute it (clamped at 1e-12 before sqrt)."""
    sq = features.pow(2).sum(dim=1, keepdim=True)
    dist = torch.addmm(sq + sq.t(), features, features.t(), beta=1, alpha=-2)
    return dist.clamp(min=_CLAMP).sqrt()


def identity_masks(features: Tensor, targets: Tensor) -> Tuple[Tensor, Tensor]:
    """``(same identity, different identity)`` (N, N) masks; raises ``ValueError`` naming
    ``targets`` for a batch in which some sample has no negative (one host sync)."""
    if features.dim() != 2 or targets.dim() != 1 or features.shape[0] != targets.shape[0]:
        raise ValueError(f"features must be (batch, dim) and targets (batch,), got {tuple(features.shape)} "
                         f"and {tuple(targets.shape)}")
    same = targets.unsqueeze(0) == targets.unsqueeze(1)
    if bool(same.all(dim=1).any()):
        raise ValueError("targets: every sample needs a negative; the batch must hold >= 2 identities")
    return same, ~same


def batch_hard_triplet_torch(features: Tensor, targets: Tensor, margin: float = 0.3) -> Tensor:
    """The reference: torchreid's ``TripletLoss`` vectorized (hardest positive and negative by
    masked max/min instead of its per-anchor loop); same value and gradient."""
    pos, neg = identity_masks(features, targets)
    dist = pairwise_euclidean(features)
    dist_ap = dist.masked_fill(neg, float("-inf")).amax(dim=1)
    dist_an = dist.masked_fill(pos, float("inf")).amin(dim=1)
    return F.margin_ranking_loss(dist_an, dist_ap, torch.ones_like(dist_an), margin=margin)


def batch_hard_triplet(features: Tensor, targets: Tensor, margin: float = 0.3, *,
                       backend: Optional[str] = None) -> Tensor:
    """torchreid's batch-hard triplet loss of (N, D) ``features`` with identity labels ``targets`` (N,).

    ``mean_i max(0, d(i, hardest positive) - d(i, hardest negative) + margin)`` with
    Euclidean distances; differentiable in ``features``.
    """
    if not isinstance(features, Tensor) or features.dim() != 2 or not features.is_floating_point():
        raise ValueError(f"features must be a floating (N, D) tensor, got {getattr(features, 'shape', None)}")
    if not isinstance(targets, Tensor) or targets.dim() != 1 or targets.shape[0] != features.shape[0]:
        raise ValueError(f"targets must be a ({features.shape[0]},) tensor, got {getattr(targets, 'shape', None)}")
    if targets.is_floating_point():
        raise ValueError(f"targets must be an integer tensor, got {targets.dtype}")
    check_number(margin, "margin", 0.0)
    if features.shape[0] == 0:
        raise ValueError("features must hold at least one sample")
    if backend_for(OP, backend) == "triton":
        return BatchHardTripletFunction.apply(features, targets.contiguous(), float(margin))
    return batch_hard_triplet_torch(features, targets, margin)


class BatchHardTriplet(nn.Module):
    """The loss as a module (torchreid's ``TripletLoss`` interface): ``loss = module(features, targets)``."""

    def __init__(self, margin: float = 0.3) -> None:
        super().__init__()
        check_number(margin, "margin", 0.0)
        self.margin = float(margin)

    def forward(self, inputs: Tensor, targets: Tensor) -> Tensor:
        return batch_hard_triplet(inputs, targets, self.margin)

    def extra_repr(self) -> str:
        return f"margin={self.margin}"


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """(N, D) features of N / 4 identities x 4 samples (torchreid's PK batches): ``(args, kwargs)``."""
    gen = torch.Generator().manual_seed(7)
    n, d = shape
    pids = torch.arange(n) // 4
    centers = torch.randn(n // 4 + 1, d, generator=gen)
    features = centers[pids] + 0.8 * torch.randn(n, d, generator=gen)
    perm = torch.randperm(n, generator=gen)
    return (features[perm].to(device=device, dtype=dtype), pids[perm].to(device)), {"margin": 0.3}
