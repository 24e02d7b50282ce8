"""Batch-hard triplet kernel: loss and gradients equal to torchreid's TripletLoss (its loop)."""
import importlib

import pytest
import torch

from torchreid_privacy import bridge, kernels

triplet_module = importlib.import_module("torchreid_privacy.kernels.batch_hard_triplet")


def _pk_batch(identities, per_id, dim, seed=0, spread=0.7):
    gen = torch.Generator().manual_seed(seed)
    pids = torch.arange(identities).repeat_interleave(per_id)
    features = torch.randn(identities, dim, generator=gen)[pids] + spread * torch.randn(len(pids), dim, generator=gen)
    perm = torch.randperm(len(pids), generator=gen)
    return features[perm], pids[perm]


def _loss_and_grad(fn, features, pids):
    leaf = features.detach().clone().requires_grad_(True)
    loss = fn(leaf, pids)
    loss.backward()
    return loss.detach(), leaf.grad


@pytest.mark.parametrize("margin", [0.3, 5.0])
def test_equals_torchreid_loop_over_several_tiles(monkeypatch, margin):
    """More anchors and columns than one tile holds: the running hardest must carry across tiles."""
    monkeypatch.setattr(triplet_module, "_MAX_ROWS", 16)
    monkeypatch.setattr(triplet_module, "_MAX_DIM", 16)
    features, pids = _pk_batch(13, 4, 40)
    want_loss, want_grad = _loss_and_grad(bridge.TripletLoss(margin=margin), features, pids)
    loss, grad = _loss_and_grad(lambda f, p: kernels.batch_hard_triplet(f, p, margin, backend="triton"),
                                features, pids)
    torch.testing.assert_close(loss, want_loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(grad, want_grad, atol=1e-6, rtol=1e-4)


def test_inactive_hinges_give_zero_loss_and_gradient():
    features, pids = _pk_batch(4, 4, 8, spread=0.01)
    features = features * 100  # identities far apart: every hinge inactive at margin 0.3
    loss, grad = _loss_and_grad(lambda f, p: kernels.batch_hard_triplet(f, p, 0.3, backend="triton"),
                                features, pids)
    assert float(loss) == 0.0 and float(grad.abs().max()) == 0.0


def test_module_and_plugin_loss_run_the_kernel_on_the_triton_table(monkeypatch):
    from torchreid_privacy.plugins.losses import BatchHardTripletLoss

    calls = []
    real = triplet_module.BatchHardTripletFunction.apply
    monkeypatch.setattr(triplet_module.BatchHardTripletFunction, "apply", lambda *a: calls.append(1) or real(*a))
    features, pids = _pk_batch(6, 4, 32, seed=1)
    kernels.select_backends("torch", "cpu")
    want = BatchHardTripletLoss(0.3)(features, pids)
    assert calls == []
    kernels.select_backends("triton", "cpu")  # the table a CUDA run gets with auto
    torch.testing.assert_close(kernels.BatchHardTriplet(0.3)(features, pids), want, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(BatchHardTripletLoss(0.3)(features, pids), want, atol=1e-6, rtol=1e-5)
    assert calls == [1, 1]
    assert "margin=0.3" in repr(kernels.BatchHardTriplet(0.3))


def test_singleton_identity_uses_its_own_distance_as_positive():
    features, pids = _pk_batch(5, 3, 16, seed=2)
    pids = pids.clone()
    pids[0] = 99  # an identity with one image: hardest positive = itself (~0), as in torchreid
    want = bridge.TripletLoss(margin=0.3)(features, pids)
    got = kernels.batch_hard_triplet(features, pids, 0.3, backend="triton")
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_bad_inputs_raise_value_error():
    f, p = torch.randn(8, 4), torch.arange(8) // 4
    with pytest.raises(ValueError, match="features"):
        kernels.batch_hard_triplet(f[0], p)
    with pytest.raises(ValueError, match="targets"):
        kernels.batch_hard_triplet(f, p[:4])
    with pytest.raises(ValueError, match="targets"):
        kernels.batch_hard_triplet(f, p.float())
    with pytest.raises(ValueError, match="margin"):
        kernels.batch_hard_triplet(f, p, -1.0)
