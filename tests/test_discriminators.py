"""Conditional PatchGANs D1 / D2: every registered discriminator is tested automatically."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from torchreid_privacy.plugins.norm_act import BatchNormAct2d
from torchreid_privacy.registry import DISCRIMINATORS

NAMES = DISCRIMINATORS.names()
# patch-map sizes of the built-ins, worked out by hand from the pix2pix layer lists
KNOWN_SHAPES = {
    ("basic", 64, 32): (6, 2), ("basic", 256, 128): (30, 14),
    ("n_layers", 64, 32): (6, 2), ("n_layers", 256, 128): (30, 14),
    ("pixel", 64, 32): (64, 32), ("pixel", 256, 128): (256, 128),
    ("basic", 128, 64): (14, 6), ("basic", 96, 48): (10, 4), ("basic", 97, 49): (10, 4),
    ("basic", 224, 224): (26, 26),
}


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pair(n: int = 2, height: int = 64, width: int = 32):
    return torch.rand(n, 3, height, width) * 2 - 1, torch.rand(n, 3, height, width) * 2 - 1


# every input size torchreid configs use, plus odd sides
SIZES = [(64, 32), (256, 128), (384, 128), (128, 64), (160, 64), (224, 224), (96, 48), (97, 49)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_patch_output_shape(name, size):
    disc = DISCRIMINATORS.get(name)(ndf=8)
    cond, img = pair(2, *size)
    with torch.no_grad():
        out = disc(cond, img)
    assert out.shape == (2, 1, *disc.output_shape(*size))
    assert min(out.shape[-2:]) >= 1
    if (name, *size) in KNOWN_SHAPES:
        assert out.shape[-2:] == KNOWN_SHAPES[(name, *size)]


@pytest.mark.parametrize("name", NAMES)
def test_takes_condition_then_image_concatenated(name):
    disc = DISCRIMINATORS.get(name)(ndf=8)
    cond, img = pair()
    with torch.no_grad():
        torch.testing.assert_close(disc(cond, img), disc.model(torch.cat([cond, img], dim=1)))
        assert not torch.allclose(disc(cond, img), disc(img, cond))


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_condition_and_image(name):
    disc = DISCRIMINATORS.get(name)(ndf=8)
    cond, img = (t.requires_grad_(True) for t in pair())
    disc(cond, img).mean().backward()
    assert cond.grad.abs().sum() > 0 and img.grad.abs().sum() > 0


@pytest.mark.parametrize("name", NAMES)
def test_init_statistics_and_fused_norms(name):
    disc = DISCRIMINATORS.get(name)(ndf=64)
    weights = torch.cat([m.weight.flatten() for m in disc.modules() if isinstance(m, nn.Conv2d)])
    assert weights.std().item() == pytest.approx(0.02, rel=0.05)
    norms = [m for m in disc.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(type(m) is BatchNormAct2d and m.act == "leaky_relu" for m in norms)
    assert torch.cat([m.weight for m in norms]).std().item() == pytest.approx(0.02, rel=0.3)


@pytest.mark.parametrize("name", NAMES)
def test_bad_inputs_raise_value_error(name):
    disc = DISCRIMINATORS.get(name)(ndf=8)
    cond, img = pair()
    with pytest.raises(ValueError, match="input_nc"):
        disc(cond, torch.cat([img, img], dim=1))
    with pytest.raises(ValueError, match="cond and img"):
        disc(cond, img[:, :, :32])
    with pytest.raises(ValueError, match="ndf"):
        DISCRIMINATORS.get(name)(ndf=0)


def test_basic_matches_pix2pix_parameter_count():
    # pix2pix prints 2.769 M for its 6-channel basic PatchGAN
    disc = DISCRIMINATORS.get("basic")()
    convs = [(6, 64, True), (64, 128, False), (128, 256, False), (256, 512, False), (512, 1, True)]
    expected = sum(i * o * 16 + (o if bias else 0) for i, o, bias in convs) + 2 * (128 + 256 + 512)
    assert sum(p.numel() for p in disc.parameters()) == expected == 2_768_705


def test_n_layers_depth_and_too_small_input():
    deep = DISCRIMINATORS.get("n_layers")(ndf=8, n_layers=4)
    assert deep(*pair(1, 256, 128)).shape[-2:] == (14, 6)
    with pytest.raises(ValueError, match=r"64x32.*privacy\.discriminator\.n_layers in 1\.\.3"):
        deep(*pair(1, 64, 32))
    with pytest.raises(ValueError, match="n_layers"):
        DISCRIMINATORS.get("basic")(n_layers=4)
    with pytest.raises(ValueError, match="n_layers"):
        DISCRIMINATORS.get("pixel")(n_layers=2)
