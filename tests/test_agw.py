"""``resnet50_agw``: the paper's AGW backbone in torchreid's model factory."""
from __future__ import annotations

import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision

from torchreid_privacy import bridge

from torchreid_privacy.utils import weights
from torchreid_privacy.models.nets import build_reid_model
from torchreid_privacy.config import load_config
from torchreid_privacy.studies.demo import QUICKSTART, packaged_config
from torchreid_privacy.plugins.agw import AGW, GeM, NonLocal, from_agw_state_dict
from torchreid_privacy.registry import load_plugins

load_plugins()

BACKBONE = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def count(model: torch.nn.Module, *prefixes: str) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if not prefixes or n.split(".")[0] in prefixes)


@pytest.fixture(scope="module")
def agw() -> AGW:
    return bridge.build_model("resnet50_agw", num_classes=751, loss="triplet")


def test_registered_in_torchreid_factory(agw):
    assert {"resnet50_agw", "resnet50_agw_nl2"} <= set(bridge.available_models())
    assert isinstance(agw, AGW) and agw.loss == "triplet"


def test_parameter_counts_equal_the_original(agw):
    assert count(agw) == 25_078_864
    assert count(agw, *BACKBONE, "NL_2", "NL_3") == 23_536_719
    assert count(agw, *BACKBONE) == 23_508_032  # torchvision ResNet-50 without fc
    assert count(agw, "NL_2", "NL_3") == 2 * (7 * 512 + 3) + 3 * (7 * 1024 + 3)  # 1-channel blocks
    assert count(agw, "gap") == 1
    assert count(agw, "bottleneck") == 4_096
    assert count(agw, "classifier") == 1_538_048 == 2048 * 751
    assert [len(agw.NL_1), len(agw.NL_2), len(agw.NL_3), len(agw.NL_4)] == [0, 2, 3, 0]
    assert agw.nl_idx == [[], [2, 3], [3, 4, 5], []]  # after the last blocks of layer2 / layer3


def test_textbook_non_local_variant():
    model = bridge.build_model("resnet50_agw_nl2", num_classes=751, loss="triplet")
    assert {m.inter_channels for m in model.NL_2} == {256} and {m.inter_channels for m in model.NL_3} == {512}
    nl = 2 * (3 * (512 * 256 + 256) + 256 * 512 + 512 + 2 * 512) + 3 * (3 * (1024 * 512 + 512) + 512 * 1024
                                                                       + 1024 + 2 * 1024)
    assert count(model) == 23_508_032 + nl + 1 + 4_096 + 1_538_048 == 32_408_641


def test_head_init_and_frozen_bnneck_bias(agw):
    assert not agw.bottleneck.bias.requires_grad and agw.bottleneck.weight.requires_grad
    assert torch.equal(agw.bottleneck.weight, torch.ones(2048)) and not agw.bottleneck.bias.any()
    assert agw.classifier.bias is None
    assert agw.classifier.weight.std().item() == pytest.approx(0.001, rel=0.02)
    assert sum(not p.requires_grad for p in agw.parameters()) == 1
    for nl in (*agw.NL_2, *agw.NL_3):
        assert not nl.W[1].weight.any() and not nl.W[1].bias.any()
    conv = agw.layer3[0].conv2.weight  # kaiming normal, fan_out
    assert conv.std().item() == pytest.approx((2 / (256 * 9)) ** 0.5, rel=0.02)


def test_feature_map_is_16x8_at_256x128_with_last_stride_1(agw):
    agw.eval()
    with torch.no_grad():
        fmap = agw.feature_map(torch.randn(2, 3, 256, 128))
    assert fmap.shape == (2, 2048, 16, 8)
    assert agw.layer4[0].conv2.stride == (1, 1) and agw.layer4[0].downsample[0].stride == (1, 1)


@pytest.mark.parametrize("loss", ["triplet", "softmax"])
def test_train_and_eval_outputs(loss):
    model = bridge.build_model("resnet50_agw", num_classes=10, loss=loss)
    x = torch.randn(2, 3, 128, 64)
    out = model.train()(x)
    if loss == "triplet":
        logits, feat = out
        assert logits.shape == (2, 10) and feat.shape == (2, 2048)
        bn = F.batch_norm(feat, None, None, model.bottleneck.weight, model.bottleneck.bias, True)
        torch.testing.assert_close(logits, model.classifier(bn))  # CE on BN feature, triplet on pre-BN
    else:
        assert isinstance(out, torch.Tensor) and out.shape == (2, 10)
    with torch.no_grad():
        emb = model.eval()(x)
        assert emb.shape == (2, 2048)
        expected = model.bottleneck(model.gap(model.feature_map(x)).flatten(1))
    torch.testing.assert_close(emb, expected)


def test_unknown_loss_names_the_loss():
    with pytest.raises(KeyError, match="loss"):
        bridge.build_model("resnet50_agw", num_classes=10, loss="arcface")


def test_gem_parameter_and_special_cases():
    gem = GeM()
    assert isinstance(gem.p, torch.nn.Parameter) and gem.p.requires_grad and gem.p.tolist() == [3.0]
    assert gem.eps == 1e-6
    x = torch.rand(2, 5, 4, 3) + 0.01
    torch.testing.assert_close(gem(x), x.pow(3).mean((2, 3), keepdim=True).pow(1 / 3))
    with torch.no_grad():
        gem.p.fill_(1.0)
    torch.testing.assert_close(gem(x), F.adaptive_avg_pool2d(x, 1))
    with torch.no_grad():
        gem.p.fill_(3.0)
    gem(x).sum().backward()
    assert gem.p.grad is not None and gem.p.grad.abs().item() > 0


def _agw_non_local(block: NonLocal, x: torch.Tensor) -> torch.Tensor:
    """The original ``Non_local.forward`` (ReID-Survey), line by line."""
    b, c = x.size(0), block.inter_channels
    g_x = block.g(x).view(b, c, -1).permute(0, 2, 1)
    theta_x = block.theta(x).view(b, c, -1).permute(0, 2, 1)
    phi_x = block.phi(x).view(b, c, -1)
    f = torch.matmul(theta_x, phi_x)
    y = torch.matmul(f / f.size(-1), g_x).permute(0, 2, 1).contiguous().view(b, c, *x.size()[2:])
    return block.W(y) + x


@pytest.mark.parametrize("inter", [1, 8])
def test_non_local_is_identity_at_init_and_matches_the_original(inter):
    block = NonLocal(16, inter)
    x = torch.randn(2, 16, 6, 4)
    assert torch.equal(block(x), x)
    torch.nn.init.normal_(block.W[1].weight)
    torch.nn.init.normal_(block.W[1].bias)
    got = block(x)
    assert not torch.allclose(got, x)
    torch.testing.assert_close(got, _agw_non_local(block, x))


def test_non_local_blocks_leave_the_fresh_backbone_unchanged():
    model = bridge.build_model("resnet50_agw", num_classes=10, loss="triplet").eval()
    x = torch.randn(1, 3, 128, 64)
    with torch.no_grad():
        with_nl = model.feature_map(x)
        model.nl_idx = [[], [], [], []]
        without_nl = model.feature_map(x)
    assert torch.equal(with_nl, without_nl)


@pytest.fixture(scope="module")
def torchvision_file(tmp_path_factory) -> tuple:
    torch.manual_seed(1)
    state = torchvision.models.resnet50(weights=None).state_dict()
    path = tmp_path_factory.mktemp("tv") / "resnet50.pth"
    torch.save(state, path)
    return str(path), state


def test_torchvision_state_dict_loads_via_model_load_weights(torchvision_file):
    path, state = torchvision_file
    cfg = load_config(packaged_config(QUICKSTART), ["model.name", "resnet50_agw", "model.load_weights", path])
    model = build_reid_model(cfg, num_classes=751, loss="triplet")
    own = model.state_dict()
    keys = model.backbone_keys()
    assert keys and set(keys) == {k for k in state if not k.startswith("fc.")}
    for k in keys:
        assert torch.equal(own[k], state[k]), k
    for nl in (*model.NL_2, *model.NL_3):  # non-local and head layers keep their init
        assert not nl.W[1].weight.any()
    assert torch.equal(model.bottleneck.weight, torch.ones(2048))
    matched, discarded = weights.load_backbone_weights(model, path)
    assert sorted(matched) == sorted(keys) and sorted(discarded) == ["fc.bias", "fc.weight"]


def test_pretrained_without_network_is_a_clear_error(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ConnectionError, match=r"model\.pretrained.*resnet50_agw.*model\.load_weights"):
        bridge.build_model("resnet50_agw", num_classes=10, loss="triplet", pretrained=True)


def test_pretrained_loads_torchvision_imagenet_weights(monkeypatch, torchvision_file):
    _, state = torchvision_file
    seen = []

    def cached(url, **kwargs):
        seen.append(url)
        return state

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", cached)
    model = bridge.build_model("resnet50_agw", num_classes=10, loss="triplet", pretrained=True)
    assert seen == ["https://download.pytorch.org/models/resnet50-0676ba61.pth"]
    assert torch.equal(model.layer4[2].conv3.weight, state["layer4.2.conv3.weight"])
    with pytest.raises(ValueError, match="layer1.0.conv1.weight"):
        model.load_imagenet({k: v for k, v in state.items() if k != "layer1.0.conv1.weight"})


def test_original_agw_checkpoint_names_load(agw):
    """A released AGW checkpoint: ``module.base.<torchvision name>`` and ``module.<head name>``."""
    head = ("gap", "bottleneck", "classifier")
    released = {("module." if k.split(".")[0] in head else "module.base.") + k: v.clone() + 1
                for k, v in agw.state_dict().items()}
    model = AGW(751, loss="triplet")
    model.load_state_dict(from_agw_state_dict(released), strict=True)
    assert torch.equal(model.NL_3[2].theta.weight, agw.NL_3[2].theta.weight + 1)
    assert torch.equal(model.gap.p, agw.gap.p + 1)
