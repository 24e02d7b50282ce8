"""Generators G / G_R: every registered anonymizer is tested automatically."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from torchreid_privacy.plugins.anonymizers import (UnetGenerator, check_fits, init_pix2pix_weights,
                                                   pad_to_multiple)
from torchreid_privacy.plugins.norm_act import BatchNormAct2d, create_norm_act
from torchreid_privacy.registry import ANONYMIZERS

NAMES = ANONYMIZERS.names()


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def small_generator(name: str, height: int = 64, width: int = 32, **kwargs) -> nn.Module:
    """``name`` with ngf 8, as deep as its default allows for ``height`` x ``width``."""
    build = ANONYMIZERS.get(name)
    gen = build(ngf=8, **kwargs)
    depth = getattr(gen, "num_downs", 0)
    if height % 2 ** depth or width % 2 ** depth:
        fit = min(h.bit_length() - 1 for h in (height & -height, width & -width))
        gen = build(ngf=8, num_downs=fit, **kwargs)
    return gen


def gan_images(n: int = 2, height: int = 64, width: int = 32) -> torch.Tensor:
    return torch.rand(n, 3, height, width) * 2 - 1


# ----------------------------------------------------------------------------- every generator
@pytest.mark.parametrize("name", NAMES)
def test_shape_range_and_gradient_at_64x32(name):
    gen = small_generator(name)
    x = gan_images().requires_grad_(True)
    y = gen(x)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1
    assert y.std() > 1e-4  # not a constant map
    y.square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    assert all(p.grad is not None for p in gen.parameters())
    with torch.no_grad():  # eval mode normalizes with the running statistics
        assert gen.eval()(x).shape == x.shape


# every input size torchreid configs use: the generators pad inside and crop back
SIZES = [(256, 128), (384, 128), (128, 64), (160, 64), (224, 224), (96, 48)]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_default_depth_runs_at_every_input_size(name, size):
    """``num_downs`` left null: the name's default depth at any size, output size = input size."""
    gen = ANONYMIZERS.get(name)(ngf=4)
    x = gan_images(2, *size)
    y = gen(x)
    assert y.shape == x.shape
    assert y.min() >= -1 and y.max() <= 1 and y.std() > 1e-4
    with torch.no_grad():
        assert gen.eval()(x).shape == x.shape


@pytest.mark.parametrize("name", NAMES)
def test_gradient_reaches_every_pixel_through_the_padding(name):
    gen = ANONYMIZERS.get(name)(ngf=4)
    x = gan_images(2, 96, 48).requires_grad_(True)
    gen(x).square().sum().backward()
    assert torch.isfinite(x.grad).all() and (x.grad.abs().sum(dim=1) > 0).float().mean() > 0.99


def test_unet_128_unchanged_at_256x128():
    """A size that divides is not padded: same parameters, same output as pix2pix's order."""
    gen = ANONYMIZERS.get("unet_128")()
    assert gen.num_downs == 7 and not gen.explicit_depth
    assert sum(p.numel() for p in gen.parameters()) == 41_828_995
    small = ANONYMIZERS.get("unet_128")(ngf=4)
    x = gan_images(2, 256, 128)
    with torch.no_grad():
        got = small(x)
        assert got.shape == (2, 3, 256, 128)
        torch.testing.assert_close(got, _pix2pix_unet(small, x.clone()), atol=1e-5, rtol=1e-4)


def test_explicit_depth_that_fits_pads_like_the_quickstart():
    """The quickstart's num_downs 5 at 96x48 (48 is not a multiple of 32) pads to 96x64 and crops."""
    gen = ANONYMIZERS.get("unet_128")(ngf=4, num_downs=5)
    x = gan_images(2, 96, 48)
    with torch.no_grad():
        got = gen(x)
        expected = gen.body(F.pad(x, (8, 8, 0, 0), mode="reflect"))[..., 8:56]
    assert got.shape == x.shape
    torch.testing.assert_close(got, expected)


@pytest.mark.parametrize("size,multiple,mode", [((96, 48), 32, "reflect"), ((50, 30), 32, "reflect"),
                                                ((96, 48), 256, "replicate"), ((64, 32), 32, None)])
def test_pad_to_multiple_is_centred_and_crops_back(size, multiple, mode):
    x = torch.randn(2, 3, *size)
    padded, crop = pad_to_multiple(x, multiple)
    assert padded.shape[-2] % multiple == 0 and padded.shape[-1] % multiple == 0
    assert torch.equal(crop(padded), x)
    if mode is None:
        assert padded is x
    else:
        ph, pw = padded.shape[-2] - size[0], padded.shape[-1] - size[1]
        pads = (pw // 2, pw - pw // 2, ph // 2, ph - ph // 2)
        assert torch.equal(padded, F.pad(x, pads, mode=mode))


def test_check_fits_names_key_size_and_fitting_values():
    gen = ANONYMIZERS.get("unet_128")(ngf=4, num_downs=7)
    with pytest.raises(ValueError, match=r"^privacy\.generator\.num_downs=7 .*128x64.*values that fit: 2\.\.6"):
        check_fits(gen, 128, 64, "privacy.generator.num_downs")
    check_fits(gen, 256, 128, "privacy.generator.num_downs")  # fits: no error
    res = ANONYMIZERS.get("resnet_9blocks")(ngf=4, num_downs=6)
    with pytest.raises(ValueError, match=r"privacy\.decoder\.num_downs=6 .*96x48.*values that fit: 1\.\.5"):
        check_fits(res, 96, 48, "privacy.decoder.num_downs")
    check_fits(ANONYMIZERS.get("unet_128")(ngf=4), 64, 32, "privacy.generator.num_downs")  # null always fits


@pytest.mark.parametrize("name", NAMES)
def test_init_statistics(name):
    gen = ANONYMIZERS.get(name)(ngf=16)
    convs = [m for m in gen.modules() if isinstance(m, nn.modules.conv._ConvNd)]
    weights = torch.cat([m.weight.flatten() for m in convs])
    assert weights.mean().abs() < 1e-3
    assert weights.std().item() == pytest.approx(0.02, rel=0.03)
    assert all(m.bias is None or not m.bias.any() for m in convs)
    norms = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms
    gamma = torch.cat([m.weight for m in norms])
    assert gamma.mean().item() == pytest.approx(1.0, abs=3e-3)
    assert gamma.std().item() == pytest.approx(0.02, rel=0.15)
    assert not torch.cat([m.bias for m in norms]).any()


@pytest.mark.parametrize("name", NAMES)
def test_every_batchnorm_is_a_fusable_batchnormact(name):
    gen = small_generator(name)
    norms = [m for m in gen.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(type(m) is BatchNormAct2d for m in norms)


@pytest.mark.parametrize("name", NAMES)
def test_bad_arguments_name_the_parameter(name):
    build = ANONYMIZERS.get(name)
    with pytest.raises(ValueError, match="ngf"):
        build(ngf=0)
    with pytest.raises(ValueError, match="norm"):
        build(ngf=8, norm="group")


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("norm", ["instance", "none"])
def test_other_norms_keep_shape(name, norm):
    gen = small_generator(name, norm=norm)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in gen.modules())
    with torch.no_grad():
        assert gen(gan_images()).shape == (2, 3, 64, 32)


# ----------------------------------------------------------------------------- U-Net specifics
def test_unet_too_deep_for_input_raises_naming_num_downs():
    gen = ANONYMIZERS.get("unet_128")(ngf=8, num_downs=6)
    with pytest.raises(ValueError, match=r"num_downs=6.*64x32.*values that fit: 2\.\.5"):
        gen(gan_images())
    with pytest.raises(ValueError, match="num_downs"):
        UnetGenerator(num_downs=1)


def _pix2pix_unet_params(in_nc: int, out_nc: int, num_downs: int, ngf: int) -> int:
    """Parameter count of pix2pix's UnetGenerator with BatchNorm, layer by layer."""
    k = 16  # 4x4 kernels
    total = in_nc * ngf * k + 2 * ngf * out_nc * k + out_nc  # outermost: bias-free down, biased up
    widths = [ngf * min(2 ** i, 8) for i in range(max(num_downs, 5))]
    for i in range(1, len(widths)):
        outer, inner = widths[i - 1], widths[i]
        innermost = i == len(widths) - 1
        total += outer * inner * k + (0 if innermost else 2 * inner)  # downconv (+ downnorm)
        total += (1 if innermost else 2) * inner * outer * k + 2 * outer  # upconv + upnorm
    return total


@pytest.mark.parametrize("name,num_downs,known", [("unet_128", 7, 41_828_995), ("unet_256", 8, 54_413_955)])
def test_unet_parameter_count_matches_pix2pix(name, num_downs, known):
    gen = ANONYMIZERS.get(name)()
    count = sum(p.numel() for p in gen.parameters())
    assert count == _pix2pix_unet_params(3, 3, num_downs, 64) == known  # pix2pix prints 54.414 M for unet_256


@pytest.mark.parametrize("norm,known", [("batch", 11_383_427), ("instance", 11_378_179)])
def test_resnet_9blocks_parameter_count_matches_pix2pix(norm, known):
    # 11.378 M is what CycleGAN (instance norm) reports for resnet_9blocks
    gen = ANONYMIZERS.get("resnet_9blocks")(norm=norm)
    assert sum(p.numel() for p in gen.parameters()) == known


def _plain_bn(m: BatchNormAct2d, x: torch.Tensor) -> torch.Tensor:
    return F.batch_norm(x, None, None, m.weight, m.bias, True, 0.0, m.eps)


def _pix2pix_level(level, x: torch.Tensor) -> torch.Tensor:
    """pix2pix's UnetSkipConnectionBlock, literally: LeakyReLU *in place* -> conv -> BN -> inner ->
    ReLU -> upconv -> BN, returning cat([x, ...]) (x has been overwritten by the LeakyReLU)."""
    F.leaky_relu_(x, 0.2)
    d = level.down(x)
    if level.submodule is None:
        inner = d
    else:
        inner = _pix2pix_level(level.submodule, _plain_bn(level.down_norm, d))
    u = _plain_bn(level.up_norm, level.up(F.relu(inner)))
    return torch.cat([x, u], dim=1)


def _pix2pix_unet(gen: UnetGenerator, x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(gen.up_out(F.relu(_pix2pix_level(gen.inner, gen.down_in(x)))))


@pytest.mark.parametrize("num_downs", [5, 2])
def test_fused_unet_equals_literal_pix2pix_forward(num_downs):
    gen = UnetGenerator(3, 3, num_downs=num_downs, ngf=8)
    for m in gen.modules():  # non-trivial affine params so a misplaced norm would show
        if isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.3)
            nn.init.normal_(m.bias, 0.0, 0.3)
    x = gan_images(3)
    with torch.no_grad():
        expected = _pix2pix_unet(gen, x.clone())
        got = gen(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_unet_dropout_sits_where_pix2pix_puts_it():
    drops = lambda g: sum(isinstance(m, nn.Dropout) for m in g.modules())  # noqa: E731
    assert drops(ANONYMIZERS.get("unet_128")(ngf=4, use_dropout=True)) == 7 - 5
    assert drops(ANONYMIZERS.get("unet_256")(ngf=4, use_dropout=True)) == 8 - 5
    assert drops(ANONYMIZERS.get("unet_128")(ngf=4)) == 0
    assert drops(ANONYMIZERS.get("resnet_6blocks")(ngf=4, use_dropout=True)) == 6


def test_unet_fuses_down_leaky_and_up_relu_pairs():
    gen = UnetGenerator(num_downs=7, ngf=4)
    acts = [m.act for m in gen.modules() if isinstance(m, BatchNormAct2d)]
    assert acts.count("leaky_relu") == 7 - 2  # every level except outermost and innermost
    assert acts.count("relu") == 7 - 1  # every up path below the outermost


# ----------------------------------------------------------------------------- BatchNormAct2d
def test_batchnormact_state_dict_round_trips_with_batchnorm2d():
    fused = init_pix2pix_weights(BatchNormAct2d(6, act="leaky_relu"))
    fused.running_mean.normal_()
    plain = nn.BatchNorm2d(6)
    plain.load_state_dict(fused.state_dict(), strict=True)
    for key, value in fused.state_dict().items():
        torch.testing.assert_close(plain.state_dict()[key], value)
    back = BatchNormAct2d(6, act="relu")
    back.load_state_dict(plain.state_dict(), strict=True)
    torch.testing.assert_close(back.weight, plain.weight)
    assert set(back.state_dict()) == set(nn.BatchNorm2d(6).state_dict())


@pytest.mark.parametrize("act,fn", [("identity", lambda t: t), ("relu", F.relu),
                                    ("leaky_relu", lambda t: F.leaky_relu(t, 0.2))])
def test_batchnormact_equals_batchnorm_then_activation(act, fn):
    fused, plain = BatchNormAct2d(5, act=act), nn.BatchNorm2d(5)
    nn.init.normal_(plain.weight)
    nn.init.normal_(plain.bias)
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(4, 5, 6, 3)
    for train in (True, False):
        fused.train(train), plain.train(train)
        torch.testing.assert_close(fused(x), fn(plain(x)))
    torch.testing.assert_close(fused.running_var, plain.running_var)
    assert fused.num_batches_tracked == plain.num_batches_tracked == 1


def test_batchnormact_rejects_unknown_activation():
    with pytest.raises(ValueError, match="act"):
        BatchNormAct2d(4, act="gelu")
    with pytest.raises(ValueError, match="norm"):
        create_norm_act("layer", 4)
