"""CPU fast paths of the step: channels-last nets, fused Adam, same losses as torch's defaults."""
import pytest
import torch

from torchreid_privacy import bridge
from torchreid_privacy.builder import build_privacy_engine
from torchreid_privacy.plugins.engine import step as step_module
from torchreid_privacy.plugins.engine.cpu_fast import channels_last_works, use_fused_adam

# measured on the tiny config: first-step losses differ by <= 3e-6 relative (summation order)
TOLERANCE = 1e-4


class _FlattensMaps(torch.nn.Module):
    """Like torchreid's pcb / mudeep: ``view`` across channels and space of a feature map."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        f = self.conv(x)
        return f.view(f.size(0), -1)


class _FlatteningReID(torch.nn.Module):
    """A torchreid-contract backbone (train: logits, features; eval: features) that flattens its
    feature map with ``view``, as ``pcb_*`` and ``mudeep`` do."""

    def __init__(self, num_classes: int, loss: str = "triplet", **_) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 4, stride=4), torch.nn.BatchNorm2d(8),
                                        torch.nn.ReLU(inplace=True), torch.nn.AdaptiveAvgPool2d((4, 2)))
        self.classifier = torch.nn.Linear(64, num_classes)

    def forward(self, x):
        f = self.body(x)
        v = f.view(f.size(0), -1)
        return (self.classifier(v), v) if self.training else v


def flattening_reid(num_classes, loss="triplet", pretrained=False, use_gpu=False, **kwargs):
    return _FlatteningReID(num_classes, loss)


@pytest.fixture
def flattening_registered():
    bridge.register_model("test_flattening_reid", flattening_reid)  # conftest removes it afterwards


def test_channels_last_probe():
    x = torch.linspace(-1, 1, 2 * 3 * 8 * 4).view(2, 3, 8, 4)
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    assert channels_last_works(conv, x)
    assert not channels_last_works(_FlattensMaps(), x)
    assert conv[0].weight.is_contiguous()  # the probe works on a copy
    assert int(conv[1].num_batches_tracked) == 0


def test_fused_adam_only_where_unset():
    p = [torch.nn.Parameter(torch.randn(3))]
    plain, explicit, sgd = torch.optim.Adam(p), torch.optim.Adam(p, foreach=True), torch.optim.SGD(p, lr=0.1)
    assert use_fused_adam([plain, explicit, sgd]) == 1
    assert plain.param_groups[0]["fused"] and not explicit.param_groups[0].get("fused")


REAL_INIT = step_module.PrivacyEngine.__init__


def _engine(tiny_cfg, monkeypatch, cpu_fast, *overrides):
    """The builder's engine with ``cpu_fast`` forced (it is not a config key)."""
    def init(self, *args, **kwargs):
        REAL_INIT(self, *args, cpu_fast=cpu_fast, **kwargs)

    monkeypatch.setattr(step_module.PrivacyEngine, "__init__", init)
    engine = build_privacy_engine(tiny_cfg("privacy.mode", "joint", *overrides))
    engine.set_model_mode("train")
    return engine


def test_fast_paths_train_like_torch_defaults(tiny_cfg, monkeypatch):
    fast, plain = _engine(tiny_cfg, monkeypatch, True), _engine(tiny_cfg, monkeypatch, False)
    assert fast._channels_last == {"model", "generator", "decoder", "disc_op", "disc_pr"}
    conv = next(m for m in fast.nets["generator"].modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert plain._channels_last == frozenset() and conv.weight.shape == next(
        m for m in plain.nets["generator"].modules() if isinstance(m, torch.nn.Conv2d)).weight.shape
    adams = [o for o in bridge.engine_optimizers(fast).values() if isinstance(o, torch.optim.Adam)]
    assert adams and all(g["fused"] for o in adams for g in o.param_groups)
    data = next(iter(fast.train_loader))
    want, got = plain.forward_backward(data), fast.forward_backward(data)
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=TOLERANCE, abs=1e-6), k
    # checkpoints: the same keys and values whatever the layout; a reload keeps Adam fused
    state = fast.state()
    fast.load_state(state, resume=True)
    assert all(g["fused"] for o in adams for g in o.param_groups)
    for name, net in bridge.engine_models(fast).items():
        assert list(net.state_dict()) == list(bridge.engine_models(plain)[name].state_dict()), name


def test_backbone_without_channels_last_stays_contiguous(tiny_cfg, monkeypatch, flattening_registered):
    engine = _engine(tiny_cfg, monkeypatch, True, "model.name", "test_flattening_reid")
    assert "model" not in engine._channels_last and "generator" in engine._channels_last
    out = engine.forward_backward(next(iter(engine.train_loader)))
    assert all(torch.isfinite(torch.tensor(v)) for v in out.values())
