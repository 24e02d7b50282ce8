"""GAN, reconstruction and ReID losses against their reference formulas."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchreid_privacy import bridge, kernels
from torchreid_privacy.plugins.losses import (BatchHardTripletLoss, CenterLoss, GANLoss,
                                              LabelSmoothCrossEntropyLoss, ReIDLoss,
                                              WeightedRegularizedTripletLoss)
from torchreid_privacy.registry import LOSSES


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
    kernels.set_kernel_mode(None)  # tests that select a backend table must not leak it


# the table a CUDA run gets with privacy.kernels=auto, on this CPU through Triton's interpreter
CUDA_PATH = pytest.mark.skipif(not (kernels.HAS_TRITON and kernels.INTERPRET),
                               reason="needs Triton with TRITON_INTERPRET=1 (set by tests/conftest.py)")


def pk_batch(ids: int = 4, per_id: int = 4, dim: int = 8, dtype=torch.float32):
    """An identity-sampler style batch: ``ids`` x ``per_id`` features and their labels."""
    targets = torch.arange(ids).repeat_interleave(per_id)
    return torch.randn(ids * per_id, dim, dtype=dtype), targets


def test_registered_names():
    assert {"gan", "l1", "cross_entropy", "triplet", "weighted_triplet", "center", "reid"} <= set(LOSSES.names())


# ----------------------------------------------------------------------------- GAN / L1
def test_gan_vanilla_is_bce_with_logits_on_ones_and_zeros():
    pred = torch.randn(3, 1, 6, 2)
    loss = LOSSES.get("gan")(mode="vanilla")
    torch.testing.assert_close(loss(pred, True), nn.BCEWithLogitsLoss()(pred, torch.ones_like(pred)))
    torch.testing.assert_close(loss(pred, False), nn.BCEWithLogitsLoss()(pred, torch.zeros_like(pred)))


def test_gan_lsgan_is_mse():
    pred = torch.randn(3, 1, 6, 2)
    loss = GANLoss("lsgan")
    torch.testing.assert_close(loss(pred, True), F.mse_loss(pred, torch.ones_like(pred)))
    torch.testing.assert_close(loss(pred, False), (pred ** 2).mean())


def test_gan_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        GANLoss("wgan")
    with pytest.raises(ValueError, match="target_is_real"):
        GANLoss()(torch.zeros(2), torch.tensor(1.0))


def test_l1_is_mean_absolute_error():
    a, b = torch.randn(2, 3, 8, 4), torch.randn(2, 3, 8, 4)
    torch.testing.assert_close(LOSSES.get("l1")()(a, b), (a - b).abs().mean())


# ----------------------------------------------------------------------------- center loss
def test_center_loss_zero_at_centers_and_pulls_toward_them():
    center = CenterLoss(num_classes=5, feat_dim=8)
    targets = torch.tensor([0, 1, 1, 4, 2, 0])
    at_centers = center.centers[targets].detach().clone()
    assert center(at_centers, targets).item() == 0.0

    feats = torch.randn(6, 8, requires_grad=True)
    loss = center(feats, targets)
    expected = sum(((feats[i] - center.centers[t]) ** 2).sum() for i, t in enumerate(targets)) / 6
    torch.testing.assert_close(loss, expected)
    loss.backward()
    toward = (center.centers[targets] - feats).detach()
    assert F.cosine_similarity(-feats.grad, toward, dim=1).min() > 0.9999
    # centers move toward their features too; an unused class gets no gradient
    assert center.centers.grad[3].abs().sum() == 0
    stepped = feats.detach() - 0.1 * feats.grad
    assert center(stepped, targets) < loss


def test_center_loss_matches_bot_distmat_formula():
    center = CenterLoss(num_classes=6, feat_dim=4)
    feats, targets = torch.randn(5, 4), torch.tensor([0, 2, 2, 5, 1])
    c = center.centers.detach()
    distmat = (feats ** 2).sum(1, keepdim=True) + (c ** 2).sum(1) - 2 * feats @ c.t()
    mask = F.one_hot(targets, 6).float()
    bot = (distmat * mask).clamp(min=1e-12, max=1e12).sum() / 5
    torch.testing.assert_close(center(feats, targets), bot, atol=1e-5, rtol=1e-5)


# ----------------------------------------------------------------------------- cross entropy
@pytest.mark.parametrize("label_smooth", [True, False])
def test_cross_entropy_matches_manual_label_smoothing(label_smooth):
    logits, targets = torch.randn(7, 5), torch.tensor([0, 4, 2, 2, 1, 3, 0])
    loss = LOSSES.get("cross_entropy")(num_classes=5, label_smooth=label_smooth)
    eps = 0.1 if label_smooth else 0.0
    smooth = (1 - eps) * F.one_hot(targets, 5).float() + eps / 5
    manual = -(smooth * logits.log_softmax(dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(loss(logits, targets), manual)
    reference = bridge.CrossEntropyLoss(5, use_gpu=False, label_smooth=label_smooth)
    torch.testing.assert_close(loss(logits, targets), reference(logits, targets))
    assert isinstance(loss, bridge.CrossEntropyLoss)


def test_cross_entropy_rejects_wrong_class_count():
    with pytest.raises(ValueError, match="num_classes"):
        LabelSmoothCrossEntropyLoss(5)(torch.randn(2, 4), torch.tensor([0, 1]))


# ----------------------------------------------------------------------------- triplets
def test_batch_hard_triplet_matches_torchreid_value_and_gradient():
    feats, targets = pk_batch()
    targets = targets[torch.randperm(len(targets))]
    ours_in = feats.clone().requires_grad_(True)
    ref_in = feats.clone().requires_grad_(True)
    ours = LOSSES.get("triplet")(margin=0.3)(ours_in, targets)
    ref = bridge.TripletLoss(margin=0.3)(ref_in, targets)
    torch.testing.assert_close(ours, ref)
    ours.backward(), ref.backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad)
    assert ours.item() > 0


def _weighted_triplet_loop(feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AGW's weighted regularized triplet, one anchor at a time."""
    n, losses = len(targets), []
    for i in range(n):
        d = [torch.linalg.vector_norm(feats[i] - feats[j]) for j in range(n)]
        pos = [d[j] for j in range(n) if targets[j] == targets[i]]
        neg = [d[j] for j in range(n) if targets[j] != targets[i]]
        z_pos = sum(math.exp(p.item()) for p in pos)
        z_neg = sum(math.exp(-q.item()) for q in neg)
        d_ap = sum(p * math.exp(p.item()) / z_pos for p in pos)
        d_an = sum(q * math.exp(-q.item()) / z_neg for q in neg)
        losses.append(math.log1p(math.exp(d_ap - d_an)))
    return torch.tensor(sum(losses) / n, dtype=feats.dtype)


def test_weighted_triplet_matches_loop_reference():
    feats, targets = pk_batch(ids=3, per_id=3, dim=5, dtype=torch.float64)
    loss = LOSSES.get("weighted_triplet")()(feats, targets)
    torch.testing.assert_close(loss, _weighted_triplet_loop(feats, targets), atol=1e-6, rtol=1e-6)


def _agw_weighted_triplet(feats: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AGW's own formulation (exp(d - max) weights with a +1e-6 normaliser, SoftMarginLoss)."""
    dist = torch.cdist(feats, feats)
    pos = (targets[:, None] == targets[None]).float()
    neg = 1 - pos

    def agw_weights(d, mask):
        diff = d - (d * mask).max(dim=1, keepdim=True)[0]
        return torch.exp(diff) * mask / ((torch.exp(diff) * mask).sum(dim=1, keepdim=True) + 1e-6)

    d_ap = (dist * pos * agw_weights(dist * pos, pos)).sum(1)
    d_an = (dist * neg * agw_weights(-dist * neg, neg)).sum(1)
    return nn.SoftMarginLoss()(d_an - d_ap, torch.ones_like(d_an))


def test_weighted_triplet_matches_agw_normaliser_form():
    feats, targets = pk_batch(ids=4, per_id=4, dim=16)
    torch.testing.assert_close(WeightedRegularizedTripletLoss()(feats, targets), _agw_weighted_triplet(feats, targets),
                               atol=1e-4, rtol=1e-4)


def _value_and_grad(loss_fn, feats, targets):
    leaf = feats.detach().clone().requires_grad_(True)
    loss = loss_fn(leaf, targets)
    loss.backward()
    return loss.detach(), leaf.grad


@CUDA_PATH
def test_weighted_triplet_on_the_cuda_path_is_the_weighted_loss():
    """What a CUDA run computes (the Triton backend table) is the weighted loss, value and gradient:
    the same as the torch table's and as AGW's formulation (not batch-hard's, a different loss)."""
    feats, targets = pk_batch(ids=4, per_id=4, dim=16)
    targets = targets[torch.randperm(len(targets))]
    kernels.select_backends("torch", "cpu")
    want, want_grad = _value_and_grad(WeightedRegularizedTripletLoss(), feats, targets)
    kernels.select_backends("triton", "cpu")
    assert set(kernels.backend_report().values()) == {"triton"}
    got, grad = _value_and_grad(LOSSES.get("weighted_triplet")(), feats, targets)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(grad, want_grad, atol=1e-6, rtol=1e-6)
    agw, agw_grad = _value_and_grad(_agw_weighted_triplet, feats, targets)
    torch.testing.assert_close(got, agw, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(grad, agw_grad, atol=1e-4, rtol=1e-3)
    _, reid_terms = ReIDLoss(num_classes=4, feat_dim=16, weighted_triplet=True)(torch.randn(16, 4), feats, targets)
    torch.testing.assert_close(reid_terms["triplet"], want, atol=1e-6, rtol=1e-6)


@CUDA_PATH
def test_batch_hard_triplet_on_the_cuda_path_matches_torchreid():
    feats, targets = pk_batch(ids=4, per_id=4, dim=16)
    targets = targets[torch.randperm(len(targets))]
    want, want_grad = _value_and_grad(bridge.TripletLoss(margin=0.3), feats, targets)
    kernels.select_backends("triton", "cpu")
    got, grad = _value_and_grad(BatchHardTripletLoss(0.3), feats, targets)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, want_grad, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("cls", [BatchHardTripletLoss, WeightedRegularizedTripletLoss])
def test_triplets_need_two_identities(cls):
    with pytest.raises(ValueError, match="targets"):
        cls()(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


# ----------------------------------------------------------------------------- ReID objective
@pytest.mark.parametrize("weighted", [False, True])
def test_reid_loss_terms_present_finite_and_summed(weighted):
    reid = LOSSES.get("reid")(num_classes=4, feat_dim=8, weighted_triplet=weighted)
    feats, targets = pk_batch()
    total, terms = reid(torch.randn(16, 4), feats, targets)
    assert set(terms) == {"xent", "triplet", "center"}
    assert all(torch.isfinite(v) and v > 0 and not v.requires_grad for v in terms.values())
    torch.testing.assert_close(total, terms["xent"] + terms["triplet"] + 0.0005 * terms["center"])


def test_reid_loss_with_zero_center_weight_leaves_centers_out():
    reid = ReIDLoss(num_classes=4, feat_dim=8, weight_center=0.0)
    feats, targets = pk_batch()
    total, terms = reid(torch.randn(16, 4, requires_grad=True), feats.requires_grad_(True), targets)
    assert terms["center"] == 0
    total.backward()
    reid.rescale_center_grad()
    # the centers stay registered (an optimizer over them can still be built) but get no gradient
    assert [p.shape for p in reid.center_parameters()] == [(4, 8)]
    assert reid.center.centers.grad is None
    torch.optim.SGD(reid.parameters(), lr=0.5).step()
    with pytest.raises(ValueError, match="weight_center"):
        ReIDLoss(4, 8, weight_center=-1.0)


def test_rescale_center_grad_undoes_the_weight():
    reid = ReIDLoss(num_classes=4, feat_dim=8, weight_center=0.5)
    feats, targets = pk_batch()
    reid(torch.randn(16, 4), feats, targets)[0].backward()
    raw = torch.autograd.grad(reid.center(feats, targets), reid.center.centers)[0]
    reid.rescale_center_grad()
    torch.testing.assert_close(reid.center.centers.grad, raw)


@pytest.mark.parametrize("weighted", [False, True])
def test_tiny_model_trained_with_reid_loss_improves(weighted):
    ids, per_id, dim = 8, 4, 16
    means = torch.randn(ids, dim) * 2
    targets = torch.arange(ids).repeat_interleave(per_id)
    backbone, classifier = nn.Linear(dim, 32), nn.Linear(32, ids)
    reid = ReIDLoss(num_classes=ids, feat_dim=32, weighted_triplet=weighted)
    opt = torch.optim.Adam([*backbone.parameters(), *classifier.parameters()], lr=1e-2)
    opt_center = torch.optim.SGD(reid.center_parameters(), lr=0.5)
    history = []
    for _ in range(40):
        x = means[targets] + 0.5 * torch.randn(len(targets), dim)
        feats = backbone(x)
        total, _ = reid(classifier(feats), feats, targets)
        opt.zero_grad(), opt_center.zero_grad()
        total.backward()
        reid.rescale_center_grad()
        opt.step(), opt_center.step()
        history.append(total.item())
    assert sum(history[-5:]) / 5 < 0.5 * sum(history[:5]) / 5


def test_cross_triplet_matches_a_loop_over_anchors():
    """Each image of one view against the other view only: hardest positive, hardest negative."""
    from torchreid_privacy.registry import LOSSES

    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 5, generator=g), torch.randn(8, 5, generator=g)
    pids = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    loss = LOSSES.get("cross_triplet")(margin=0.3)(a, b, pids)

    def one_way(x, y):
        total = 0.0
        for i in range(len(x)):
            d = [float((x[i] - y[j]).norm()) for j in range(len(y))]
            pos = max(d[j] for j in range(len(y)) if pids[j] == pids[i])
            neg = min(d[j] for j in range(len(y)) if pids[j] != pids[i])
            total += max(0.0, pos - neg + 0.3)
        return total / len(x)

    assert float(loss) == pytest.approx((one_way(a, b) + one_way(b, a)) / 2, rel=1e-5)
    assert float(LOSSES.get("cross_triplet")(margin=0.3)(a, a + 10.0, pids)) > 1.0  # far apart views: large


def test_cross_weight_adds_the_crossed_term_to_the_step(tiny_cfg):
    from torchreid_privacy.builder import build_privacy_engine

    engine = build_privacy_engine(tiny_cfg("privacy.mode", "baseline", "privacy.weights.cross", "1"))
    engine.set_model_mode("train")
    out = engine.forward_backward(next(iter(engine.train_loader)))
    assert out["cross"] > 0
    paper = build_privacy_engine(tiny_cfg("privacy.mode", "baseline"))
    paper.set_model_mode("train")
    assert "cross" not in paper.forward_backward(next(iter(paper.train_loader)))  # weight 0: the paper's terms
