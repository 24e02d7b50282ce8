"""privacy.recovery sealed: no G_R and no D2 are trained; the inversion adversary trains and
pushes G; the run's checkpoint loads for anonymizing, and learned recovery is refused."""
import math

import pytest
import torch

from torchreid_privacy import bridge


@pytest.fixture(scope="module")
def sealed_engine_cfg():
    return ["privacy.mode", "progressive", "privacy.recovery", "sealed", "privacy.inversion.enabled", "true",
            "privacy.r1_floor", "0.0"]


def test_sealed_run_trains_no_decoder(tiny_cfg, sealed_engine_cfg):
    from torchreid_privacy.builder import build_privacy_engine

    engine = build_privacy_engine(tiny_cfg(*sealed_engine_cfg))
    assert set(engine.nets) == {"generator", "disc_op", "inverter"}
    assert {"decoder", "disc_pr"}.isdisjoint(bridge.engine_models(engine))
    data = next(iter(engine.train_loader))
    inverter = engine.nets["inverter"]
    before = [p.detach().clone() for p in inverter.parameters()]
    g_before = [p.detach().clone() for p in engine.nets["generator"].parameters()]
    out = engine.forward_backward(data)
    assert {"gan", "rec_p", "inversion", "inversion_l1", "inverter_l1", "d_op", "reid_o", "reid_p"} <= set(out)
    assert "rec_r" not in out and "d_pr" not in out
    assert all(math.isfinite(v) for v in out.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, inverter.parameters())), "A did not train"
    assert any(not torch.equal(a, b) for a, b in zip(g_before, engine.nets["generator"].parameters()))
    assert all(p.requires_grad for p in inverter.parameters())  # unfrozen again after the G step


def test_inversion_term_is_a_bounded_hinge(tiny_cfg, sealed_engine_cfg):
    """With margin 0 the push vanishes (relu(0 - L1) = 0): the term can never reward G without bound."""
    from torchreid_privacy.builder import build_privacy_engine

    engine = build_privacy_engine(tiny_cfg(*sealed_engine_cfg, "privacy.inversion.margin", "0.0"))
    out = engine.forward_backward(next(iter(engine.train_loader)))
    assert out["inversion"] == 0.0 and out["inversion_l1"] > 0


def test_sealed_checkpoint_loads_without_decoder(tiny_cfg, sealed_engine_cfg, tmp_path):
    import torchreid_privacy
    from torchreid_privacy.builder import build_privacy_engine

    cfg = tiny_cfg(*sealed_engine_cfg, "train.max_epoch", "1")
    res = build_privacy_engine(cfg).run_privacy(save_dir=cfg.data.save_dir, max_epoch=1)
    image = res["test"]["synthetic_market"]["image"]
    assert "O-R" not in image and {"O-M", "O-P"} <= set(image)
    model = torchreid_privacy.load(cfg.data.save_dir)
    assert model.decoder is None and model.generator is not None
    x = torch.rand(2, 3, model.height, model.width)
    assert model.anonymize(x).shape == x.shape
    with pytest.raises(ValueError, match="--key-file"):
        model.recover(x)


def test_inversion_only_with_sealed_recovery(tiny_cfg):
    from torchreid_privacy.config import ConfigError

    with pytest.raises(ConfigError, match="privacy.inversion.enabled"):
        tiny_cfg("privacy.inversion.enabled", "true")
    with pytest.raises(ConfigError, match="privacy.decoder.keyed"):
        tiny_cfg("privacy.recovery", "sealed", "privacy.decoder.keyed", "true")
