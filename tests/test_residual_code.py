"""``residual_code``: P = M(O) + a bounded residual that sees O only through a quantized code."""
import copy
import math

import pytest
import torch

from torchreid_privacy.config import ConfigError, load_config
from torchreid_privacy.models.nets import build_generator
from torchreid_privacy.registry import ANONYMIZERS, DESENSITIZERS
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config
from torchreid_privacy.utils.images import from_gan, to_gan


def _net(**kw):
    torch.manual_seed(0)
    return ANONYMIZERS.get("residual_code")(lambda x: DESENSITIZERS.get("mosaic")(x, block=4), ngf=8, **kw).eval()


def _images(n=4):
    return torch.rand(n, 3, 64, 32, generator=torch.Generator().manual_seed(1))


def test_output_is_m_plus_a_residual_within_the_bound():
    net = _net(bound=0.05)
    o = _images()
    with torch.no_grad():
        p = from_gan(net(to_gan(o)))
    m = DESENSITIZERS.get("mosaic")(o, block=4)
    assert (p - m).abs().max() <= 0.05 + 1e-6
    assert (p - m).abs().max() > 1e-6  # the residual is there (small at pix2pix's init: P starts as M)


def test_code_takes_only_the_quantized_levels():
    net = _net(code_size=8, code_levels=4)
    assert net.code_bits == 16
    with torch.no_grad():
        code = net.code(to_gan(_images()))
    levels = torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0])
    assert code.shape == (4, 8)
    assert torch.isclose(code[..., None], levels, atol=1e-6).any(-1).all()


@pytest.mark.parametrize("name,changes", [("residual_code", False), ("unet_128", True)])
def test_no_path_carries_pixels_the_mosaic_erases(name, changes):
    """Change a pixel the mosaic overwrites (not a cell's top-left one), too little to move the code:
    residual_code's P stays the same to the bit; a U-Net's P (skip paths) changes."""
    torch.manual_seed(0)
    net = (_net() if name == "residual_code" else ANONYMIZERS.get(name)(ngf=8, num_downs=4)).eval()
    o = _images(1)
    o2 = o.clone()
    o2[0, :, 1, 1] += 1e-3  # inside the first 4x4 mosaic cell, not its top-left pixel
    with torch.no_grad():
        if name == "residual_code":
            assert torch.equal(net.code(to_gan(o)), net.code(to_gan(o2)))
        p, p2 = net(to_gan(o)), net(to_gan(o2))
    assert (not torch.equal(p, p2)) == changes


def test_build_generator_puts_the_runs_desensitizer_under_the_residual():
    cfg = load_config(packaged_config(QUICKSTART), [
        "privacy.generator.name", "residual_code", "privacy.generator.ngf", "8",
        "privacy.generator.params", "{code_size: 4, bound: 0.01}",
        "privacy.desensitizer.name", "blur", "privacy.desensitizer.params", "{radius: 2.0}"])
    net = build_generator(cfg).eval()
    assert net.code_size == 4 and math.isclose(net.bound, 0.01)
    o = _images(2)
    with torch.no_grad():
        p = from_gan(net(to_gan(o)))
    assert (p - DESENSITIZERS.get("blur")(o, radius=2.0)).abs().max() <= 0.01 + 1e-6


@pytest.mark.parametrize("params,culprit", [("{bound: 2.0}", "bound"), ("{code_levels: 1}", "code_levels"),
                                            ("{colour: 3}", "colour")])
def test_bad_params_name_the_key(params, culprit):
    cfg = load_config(packaged_config(QUICKSTART), ["privacy.generator.name", "residual_code",
                                                     "privacy.generator.params", params])
    with pytest.raises(ConfigError, match=rf"privacy\.generator.*{culprit}"):
        build_generator(cfg)


def _separation(engine, imgs, pids):
    """(mean same-identity / mean other-identity distance between codes, leave-one-out rank-1 of
    the codes) on a fixed set of images; G measured on a copy (its BatchNorm statistics untouched)."""
    gen = copy.deepcopy(engine.nets["generator"]).train()
    with torch.no_grad():
        _, code = gen(to_gan(engine.inference.to01(imgs)), with_code=True)
    d = torch.cdist(code, code)
    same, eye = pids[:, None] == pids[None], torch.eye(len(pids), dtype=torch.bool)
    ratio = float(d[same & ~eye].mean() / d[~same].mean())
    rank1 = float((pids[d.masked_fill(eye, float("inf")).argmin(1)] == pids).float().mean())
    return ratio, rank1


def _trained(tiny_cfg, steps, *overrides):
    """A residual_code engine's code separation before and after ``steps`` training steps."""
    from torchreid_privacy.builder import build_privacy_engine

    engine = build_privacy_engine(tiny_cfg("privacy.mode", "joint", "privacy.recovery", "sealed",
                                           "privacy.generator.name", "residual_code", *overrides))
    engine.set_model_mode("train")
    held = [engine.parse_data_for_train(next(iter(engine.train_loader))) for _ in range(3)]
    imgs, pids = torch.cat([h[0] for h in held]), torch.cat([h[1] for h in held])
    before = _separation(engine, imgs, pids)
    outs = [engine.forward_backward(next(iter(engine.train_loader))) for _ in range(steps)]
    return before, _separation(engine, imgs, pids), outs


def test_the_engine_trains_the_code_as_an_identity_embedding(tiny_cfg):
    """The code term (batch-hard triplet, ``privacy.weights.code``) pulls an identity's codes
    together: measured over 10 steps, same/other-identity distance 0.86 -> 0.34 and rank-1 of
    the codes 0.65 -> 0.94; without the term (weight 0) 0.86 -> 0.81, rank-1 falls to 0.46."""
    (ratio0, rank0), (ratio, rank), outs = _trained(tiny_cfg, 10)
    assert all("code" in out and math.isfinite(out["code"]) for out in outs)
    assert ratio < 0.6 * ratio0 and rank > rank0 + 0.15, (ratio0, ratio, rank0, rank)
    (off0, _), (off, _), outs = _trained(tiny_cfg, 10, "privacy.weights.code", "0")
    assert off0 == ratio0 and "code" not in outs[0]  # the same start; no code term
    assert off > 0.85 * off0, (off0, off)  # the separation above is the code term's
    from torchreid_privacy.builder import build_privacy_engine

    unet = build_privacy_engine(tiny_cfg("privacy.mode", "joint", "privacy.recovery", "sealed"))
    unet.set_model_mode("train")
    assert "code" not in unet.forward_backward(next(iter(unet.train_loader)))  # no code to train


def test_blocks_render_moves_only_jpeg_dc_terms_and_survives_publication():
    """render=blocks: the residual is constant on JPEG's 8x8 cells, so publishing M + residual at
    JPEG 95 keeps each cell's shift within a few grey levels (the code's channel survives)."""
    from torchreid_privacy.publish.channel import PublishChannel

    net = _net(render="blocks", bound=0.15)
    with torch.no_grad():
        for p in net.cell_map.parameters():
            p.normal_(0, 1.0)  # a residual of full amplitude, not pix2pix's near-zero start
        res = net.residual(net.code(to_gan(_images())), (64, 32))
    cells = res.view(4, 3, 8, 8, 4, 8).permute(0, 1, 2, 4, 3, 5)
    assert torch.equal(cells, cells[..., :1, :1].expand_as(cells)) and res.abs().max() > 0.1
    flat = torch.full((4, 3, 64, 32), 0.5)
    channel = PublishChannel("jpeg", 95)
    shift = channel.publish(flat + res) - channel.publish(flat)
    means = lambda x: x.view(4, 3, 8, 8, 4, 8).mean((3, 5))  # noqa: E731
    # luma keeps each cell's DC; chroma (4:2:0) is averaged over 2x2 cells, so compare the luma
    y = lambda x: (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])  # noqa: E731
    assert (y(means(shift)) - y(means(res))).abs().max() < 3 / 255


def test_decode_term_trains_a_reader_of_the_published_code(tiny_cfg):
    """privacy.weights.decode: the reader learns the code from P as published (its share of
    symbols read back rises); consistency adds its term; both absent at weight 0."""
    from torchreid_privacy.builder import build_privacy_engine
    from torchreid_privacy.plugins.residual_code import code_readback

    engine = build_privacy_engine(tiny_cfg("privacy.mode", "joint", "privacy.recovery", "sealed",
                                           "privacy.generator.name", "residual_code",
                                           "privacy.generator.params", "{render: blocks, code_size: 8, reader: true}",
                                           "privacy.weights.decode", "1", "privacy.weights.consistency", "1",
                                           "privacy.weights.gan", "0"))
    engine.set_model_mode("train")
    imgs, _ = engine.parse_data_for_train(next(iter(engine.train_loader)))
    gen = engine.nets["generator"]

    def readback():  # on a copy in training mode (batch statistics; the engine's G untouched)
        g = copy.deepcopy(gen).train()
        with torch.no_grad():
            o = to_gan(engine.inference.to01(imgs))
            return code_readback(g, o, to_gan(engine.inference.publish(from_gan(g(o)))))

    before = readback()
    outs = [engine.forward_backward(next(iter(engine.train_loader))) for _ in range(30)]
    after = readback()
    assert all(math.isfinite(o["decode"]) and math.isfinite(o["consistency"]) for o in outs)
    assert outs[-1]["decode"] < outs[0]["decode"]
    assert after["bits_written"] == 16 and after["symbols_read"] > before["symbols_read"] + 0.1, (before, after)
    plain = build_privacy_engine(tiny_cfg("privacy.mode", "joint", "privacy.recovery", "sealed",
                                          "privacy.generator.name", "residual_code"))
    plain.set_model_mode("train")
    out = plain.forward_backward(next(iter(plain.train_loader)))
    assert "decode" not in out and "consistency" not in out


def test_a_perfect_reader_reads_every_bit():
    net = _net(code_size=8, code_levels=4)
    o = to_gan(_images())
    net.read_code = net.code  # reads exactly what was written
    from torchreid_privacy.plugins.residual_code import code_readback

    assert code_readback(net, o, o) == {"symbols_read": 1.0, "bits_written": 16.0, "bits_read": 16.0}
