"""tanh -> [0, 1] -> normalized, fused: equal to the engine's normalize(from_gan(tanh(x)))."""
import pytest
import torch

from torchreid_privacy import kernels
from torchreid_privacy.images import from_gan, normalize

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


@pytest.mark.parametrize("clamp", [True, False])
def test_matches_the_engine_chain_including_saturation(clamp):
    x = torch.cat([torch.randn(1, 3, 9, 7) * 2, torch.full((1, 3, 9, 7), 30.0), torch.full((1, 3, 9, 7), -30.0)])
    leaf, ref_leaf = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    got = kernels.tanh_denormalize(leaf, MEAN, STD, clamp=clamp, backend="triton")
    t = torch.tanh(ref_leaf)
    want = normalize(from_gan(t) if clamp else (t + 1) * 0.5, MEAN, STD)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    dy = torch.randn_like(got)
    got.backward(dy)
    want.backward(dy)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, atol=1e-6, rtol=1e-5)
    assert float(leaf.grad[1:].abs().max()) < 1e-20  # saturated: (almost) no gradient, like tanh's


def test_module_with_tensor_stats_follows_the_device_of_its_buffers():
    module = kernels.TanhDenormalize(torch.tensor(MEAN), torch.tensor(STD))
    assert not module.state_dict()  # constants, not checkpoint state
    x = torch.randn(2, 3, 5, 4)
    kernels.set_kernel_mode("triton")
    torch.testing.assert_close(module(x), normalize(from_gan(torch.tanh(x)), MEAN, STD), atol=1e-6, rtol=1e-6)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="x"):
        kernels.tanh_denormalize(torch.randn(3, 4), MEAN, STD)
    with pytest.raises(ValueError, match="mean"):
        kernels.tanh_denormalize(torch.randn(1, 3, 4, 4), (0.5, 0.5), STD, backend="triton")
