"""The product's callers reach the kernels through the backend table, and only through it.

``select_backends('triton', 'cpu')`` under the interpreter is the table a CUDA run gets with
``auto``: every caller (desensitizers, losses, BatchNormAct2d, image metrics) must then launch
its kernel -- on CPU tensors, so the path does not depend on the tensor's device -- and give
the torch table's result; with the torch table no kernel may launch.
"""
import importlib

import pytest
import torch

import torchreid_privacy
from torchreid_privacy import kernels
from torchreid_privacy.kernels import dispatch
from torchreid_privacy.metrics.image import ImageMetricAccumulator, ssim
from torchreid_privacy.plugins.losses import BatchHardTripletLoss
from torchreid_privacy.plugins.norm_act import BatchNormAct2d
from torchreid_privacy.registry import DESENSITIZERS


def _module(name):
    return importlib.import_module(f"torchreid_privacy.kernels.{name}")


def _images(shape=(2, 3, 24, 16), seed=0):
    return torch.rand(shape, generator=torch.Generator().manual_seed(seed))


def _pair():
    a = _images()
    return a, (a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)


def _triplet():
    feats = torch.randn(16, 8, generator=torch.Generator().manual_seed(2))
    return BatchHardTripletLoss(0.3)(feats, torch.arange(4).repeat_interleave(4))


def _bn_act():
    torch.manual_seed(0)
    return BatchNormAct2d(3, act="leaky_relu")(_images() * 3 - 1)


def _accumulator():
    acc = ImageMetricAccumulator()
    acc.update(*_pair())
    return torch.tensor([acc.result()[k] for k in ("psnr", "psnr_dataset", "ssim")], dtype=torch.float64)


# (caller, module, launcher patched to count, tolerance on the result vs the torch table)
CALLERS = {
    "desensitizer mosaic": (lambda: DESENSITIZERS.get("mosaic")(_images(), block=5), "mosaic", "mosaic_launch", 0.0),
    "desensitize() blur": (lambda: torchreid_privacy.desensitize(_images(), "blur", radius=2.0),
                           "gaussian_blur", "blur_launch", 1.0 / 255 + 1e-6),
    "desensitizer noise": (lambda: DESENSITIZERS.get("noise")(torch.full((2, 3, 64, 32), 0.5), sigma=0.05,
                                                              generator=torch.Generator().manual_seed(3)),
                           "add_noise", "noise_launch", None),
    "triplet loss": (_triplet, "batch_hard_triplet", "hardest_launch", 1e-5),
    "BatchNormAct2d": (_bn_act, "bn_leaky_relu", "_forward", 1e-5),
    "metrics ssim": (lambda: ssim(*_pair()), "ssim_psnr", "ssim_psnr_launch", 1e-5),
    "ImageMetricAccumulator": (_accumulator, "ssim_psnr", "ssim_psnr_launch", 1e-5),
}


@pytest.mark.parametrize("caller", sorted(CALLERS))
def test_caller_launches_its_kernel_exactly_on_the_triton_table(caller, monkeypatch):
    fn, module_name, launcher, tol = CALLERS[caller]
    module = _module(module_name)
    calls = []
    real = getattr(module, launcher)
    monkeypatch.setattr(module, launcher, lambda *a, **k: calls.append(1) or real(*a, **k))
    kernels.select_backends("torch", "cpu")
    want = fn()
    assert calls == [], f"{caller} launched a kernel with the torch table"
    kernels.select_backends("triton", "cpu")
    got = fn()
    assert calls, f"{caller} did not launch its kernel with the triton table"
    if tol is None:  # noise: different generators, the same N(0, sigma)
        noise = got - 0.5
        assert abs(float(noise.mean())) < 0.003 and abs(float(noise.std()) - 0.05) < 0.003
        assert torch.equal(got, fn())  # seeded by the generator: reproducible
    else:
        torch.testing.assert_close(got.double(), want.double(), atol=tol, rtol=tol)


@pytest.mark.no_triton
def test_triton_on_cpu_is_the_table_of_a_cuda_run_with_auto(monkeypatch):
    monkeypatch.setattr(dispatch, "INTERPRET", True)
    monkeypatch.setattr(dispatch, "HAS_TRITON", True)
    interpreted = kernels.select_backends("triton", "cpu")
    monkeypatch.setattr(dispatch, "INTERPRET", False)
    assert kernels.select_backends("auto", "cuda") == interpreted
    assert set(interpreted.values()) == {"triton"} and set(interpreted) == set(kernels.OPS)
