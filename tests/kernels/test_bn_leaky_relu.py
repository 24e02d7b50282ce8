"""BatchNorm + LeakyReLU kernel: nn.BatchNorm2d semantics (running stats, eval, affine=False)
and its dispatch from BatchNormAct2d."""
import importlib

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchreid_privacy import kernels
from torchreid_privacy.plugins.norm_act import BatchNormAct2d

bn_module = importlib.import_module("torchreid_privacy.kernels.bn_leaky_relu")


def _pair(x, slope, training, affine=True, momentum=0.1):
    """Outputs, grads and running stats of the kernel and of F.batch_norm + F.leaky_relu."""
    results = []
    for backend in ("triton", "torch"):
        gen = torch.Generator().manual_seed(0)
        channels = x.shape[1]
        weight = (torch.rand(channels, generator=gen) + 0.5).requires_grad_(affine) if affine else None
        bias = torch.randn(channels, generator=gen).requires_grad_(affine) if affine else None
        rm, rv = torch.randn(channels, generator=gen), torch.rand(channels, generator=gen) + 0.5
        xi = x.detach().clone().requires_grad_(True)
        y = kernels.bn_leaky_relu(xi, weight, bias, rm, rv, slope, training, momentum, backend=backend)
        y.backward(torch.randn(y.shape, generator=gen))
        grads = [xi.grad] + ([weight.grad, bias.grad] if affine else [])
        results.append((y.detach(), grads, rm, rv))
    return results


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("slope", [0.2, 0.0])
def test_matches_batch_norm_then_leaky_relu(training, slope):
    x = torch.randn(4, 6, 11, 9) * 3 + 1
    (y, grads, rm, rv), (y_ref, grads_ref, rm_ref, rv_ref) = _pair(x, slope, training)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=2e-5)
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, atol=2e-5 * float(want.abs().max()), rtol=1e-4)
    torch.testing.assert_close(rm, rm_ref, atol=1e-6, rtol=1e-6)  # unchanged in eval, updated in training
    torch.testing.assert_close(rv, rv_ref, atol=1e-6, rtol=1e-6)


def test_without_affine_parameters():
    x = torch.randn(3, 5, 7, 4)
    (y, grads, *_), (y_ref, grads_ref, *_) = _pair(x, 0.1, True, affine=False)
    torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(grads[0], grads_ref[0], atol=1e-5, rtol=1e-4)


def test_many_partial_reductions_keep_precision(monkeypatch):
    """Small tiles: the per-channel Chan combine runs over many tiles, in several rounds, on
    data far from zero (where sum-of-squares variance loses all precision in float32); the
    kernel must be as close to the float64 result as torch's float32 batch norm is."""
    monkeypatch.setattr(bn_module, "_REDUCE_TILE", 64)
    monkeypatch.setattr(bn_module, "_MAX_PARTS_BLOCK", 16)
    torch.manual_seed(0)  # seeded: over 40 seeds the kernel/torch error ratio spans 0.29-1.64
    x = torch.randn(6, 3, 17, 13, dtype=torch.float64).mul(0.01).add(1000).float()
    exact = F.batch_norm(x.double(), None, None, None, None, True)
    torch_error = float((F.batch_norm(x, None, None, None, None, True).double() - exact).abs().max())
    rm, rv = torch.zeros(3), torch.ones(3)
    y = kernels.bn_leaky_relu(x, None, None, rm, rv, 1.0, True, momentum=1.0, backend="triton")
    assert float((y.double() - exact).abs().max()) <= 2.0 * torch_error
    torch.testing.assert_close(rv.double(), x.double().transpose(0, 1).flatten(1).var(1), atol=0, rtol=1e-3)
    torch.testing.assert_close(rm.double(), x.double().mean((0, 2, 3)), atol=1e-4, rtol=0)


def test_batch_norm_act_dispatches_to_the_kernel_when_forced(monkeypatch):
    calls = []
    real = bn_module.BNLeakyReLUFunction.apply
    monkeypatch.setattr(bn_module.BNLeakyReLUFunction, "apply", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    fused = BatchNormAct2d(4, act="leaky_relu", slope=0.2, momentum=None)  # cumulative average
    plain = BatchNormAct2d(4, act="leaky_relu", slope=0.2, momentum=None)
    plain.load_state_dict(fused.state_dict())
    kernels.set_kernel_mode("triton")
    for step in range(2):
        x = torch.randn(3, 4, 6, 5) + step
        xf, xp = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        y = fused(xf)
        kernels.set_kernel_mode("torch")
        y_ref = plain(xp)
        kernels.set_kernel_mode("triton")
        torch.testing.assert_close(y, y_ref, atol=2e-5, rtol=2e-5)
        y.square().sum().backward()
        y_ref.square().sum().backward()
        torch.testing.assert_close(xf.grad, xp.grad, atol=1e-4, rtol=1e-4)
    assert len(calls) == 2
    for key, value in plain.state_dict().items():  # same running stats and counter
        torch.testing.assert_close(fused.state_dict()[key], value, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(fused.weight.grad, plain.weight.grad, atol=1e-4, rtol=1e-4)
    fused.eval()
    plain.eval()
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(fused(x), F.leaky_relu(F.batch_norm(x, plain.running_mean, plain.running_var,
                                                                   plain.weight, plain.bias), 0.2))
    assert len(calls) == 3


@pytest.mark.parametrize("act,kernel", [("relu", True), ("identity", False)])
def test_batch_norm_act_kernel_only_for_rectifiers(monkeypatch, act, kernel):
    calls = []
    real = bn_module.BNLeakyReLUFunction.apply
    monkeypatch.setattr(bn_module.BNLeakyReLUFunction, "apply", lambda *a: calls.append(a[5]) or real(*a))
    module = BatchNormAct2d(3, act=act)
    plain = nn.BatchNorm2d(3)
    plain.load_state_dict(module.state_dict())  # weight-compatible both ways
    kernels.set_kernel_mode("triton")
    x = torch.randn(2, 3, 5, 5)
    want = plain(x)
    torch.testing.assert_close(module(x), want.relu() if act == "relu" else want, atol=2e-5, rtol=2e-5)
    assert calls == ([0.0] if kernel else [])  # relu = leaky_relu with slope 0


def test_default_mode_on_cpu_keeps_the_torch_path(monkeypatch):
    monkeypatch.delenv(kernels.ENV_VAR, raising=False)
    calls = []
    monkeypatch.setattr(bn_module.BNLeakyReLUFunction, "apply", lambda *a: calls.append(1))
    BatchNormAct2d(3, act="leaky_relu")(torch.randn(2, 3, 4, 4))
    assert calls == []


def test_bad_inputs_raise_value_error():
    x = torch.randn(1, 3, 1, 1)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        kernels.bn_leaky_relu(x, None, None, None, None, 0.2, True, backend="triton")
    with pytest.raises(ValueError, match="running_mean"):
        kernels.bn_leaky_relu(torch.randn(2, 3, 2, 2), None, None, None, None, 0.2, False, backend="triton")
    with pytest.raises(ValueError, match="slope"):
        kernels.bn_leaky_relu(torch.randn(2, 3, 2, 2), None, None, None, None, "0.2", True)
    with pytest.raises(ValueError, match=r"^x must be a floating \(N, C, H, W\) tensor"):
        kernels.bn_leaky_relu(torch.randn(2, 3, 2), None, None, None, None, 0.2, True)
