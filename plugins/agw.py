"""AGW (Ye et al., "Deep Learning for Person Re-identification: A Survey and Outlook"), the
ReID backbone of the paper, registered into torchreid's model factory as ``resnet50_agw``.

Why our own module: torchreid ships no AGW, and the paper's numbers are AGW's. The network is
the original ``mangye16/ReID-Survey`` model, layer for layer:

- a torchvision ResNet-50 (Bottleneck v1.5, layers [3, 4, 6, 3]) with the last stride set to 1
  (a 256x128 input gives a 16x8 map before pooling);
- non-local blocks after the last 2 blocks of layer2 and the last 3 of layer3 (the original's
  ``non_layers=[0, 2, 3, 0]``); each starts as the identity (its output BatchNorm is zero);
- learnable GeM pooling (p = 3, eps 1e-6), a BNNeck (BatchNorm1d with a frozen bias) and a
  bias-free classifier.

Train mode returns ``(logits, pre-BN feature)`` for ``loss='triplet'`` (CE on the BN feature,
triplet and center on the pre-BN one) and ``logits`` for ``loss='softmax'``; eval mode returns
the BN feature (torchreid's contract, see ``plugins/backbones.py``).

Weights: the backbone's names are torchvision's (``conv1``, ``bn1``, ``layer1`` ... ``layer4``),
so a torchvision ResNet-50 state dict loads with ``model.load_weights PATH`` (its ``fc.*`` is
skipped; non-local and head layers keep their init). The head and non-local names are AGW's
(``NL_2``/``NL_3``, ``gap``, ``bottleneck``, ``classifier``), so a released AGW checkpoint loads
after :func:`from_agw_state_dict` strips its ``base.`` prefix.

Example::

    from torchreid_privacy import bridge
    model = bridge.build_model("resnet50_agw", num_classes=751, loss="triplet")
    logits, feat = model(images)        # train mode
    emb = model.eval()(images)           # (N, 2048) BN feature
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.models.resnet import Bottleneck, ResNet

from torchreid_privacy import bridge

# torchvision's ImageNet ResNet-50 (IMAGENET1K_V1, the weights AGW started from)
IMAGENET_URL = "https://download.pytorch.org/models/resnet50-0676ba61.pth"
BACKBONE = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
LOSSES = ("softmax", "triplet")


class NonLocal(nn.Module):
    """AGW's ``Non_local`` block: ``x + W(softmax-free attention(x))``, f = theta^T phi / N.

    ``inter_channels`` defaults to 1: the original computes its width as
    ``reduc_ratio // reduc_ratio`` (= 1 channel, not ``in_channels / 2`` as in Wang et al.).
    That quirk is kept so released AGW weights fit and the parameter count is AGW's; pass
    ``in_channels // 2`` for the textbook block (``resnet50_agw_nl2``).
    Attribute names (``g``, ``theta``, ``phi``, ``W``) are the original's, for its checkpoints.
    """

    def __init__(self, in_channels: int, inter_channels: int = 1) -> None:
        super().__init__()
        if inter_channels < 1:
            raise ValueError(f"inter_channels must be >= 1, got {inter_channels}")
        self.in_channels, self.inter_channels = in_channels, inter_channels
        self.g = nn.Sequential(nn.Conv2d(in_channels, inter_channels, kernel_size=1))
        self.theta = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        self.phi = nn.Conv2d(in_channels, inter_channels, kernel_size=1)
        self.W = nn.Sequential(nn.Conv2d(inter_channels, in_channels, kernel_size=1), nn.BatchNorm2d(in_channels))
        nn.init.zeros_(self.W[1].weight)  # zero output: the block starts as the identity
        nn.init.zeros_(self.W[1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        g = self.g(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        theta = self.theta(x).flatten(2).transpose(1, 2)  # (N, HW, C')
        phi = self.phi(x).flatten(2)  # (N, C', HW)
        f = torch.matmul(theta, phi) / (h * w)  # (N, HW, HW), "dot product" pairwise function
        y = torch.matmul(f, g).transpose(1, 2).reshape(n, self.inter_channels, h, w)
        return x + self.W(y)


class GeM(nn.Module):
    """Generalized-mean pooling with a learnable exponent: ``mean(clamp(x, eps)^p)^(1/p)``.

    p = 1 is average pooling, p -> inf max pooling; AGW starts at p = 3.
    """

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x.clamp(min=self.eps).pow(self.p), 1).pow(1.0 / self.p)

    def extra_repr(self) -> str:
        return f"p={float(self.p.detach()[0]):.4f}, eps={self.eps}"


class AGW(nn.Module):
    """ResNet-50 + non-local + GeM + BNNeck; see the module docstring."""

    def __init__(self, num_classes: int, loss: str = "softmax", last_stride: int = 1,
                 non_layers: Sequence[int] = (0, 2, 3, 0), nl_reduction: Optional[int] = None,
                 gem_p: float = 3.0) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise KeyError(f"loss: unsupported loss '{loss}' ({', '.join(LOSSES)})")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
        if last_stride not in (1, 2):
            raise ValueError(f"last_stride must be 1 or 2, got {last_stride!r}")
        if len(non_layers) != 4:
            raise ValueError(f"non_layers needs one count per stage (4), got {list(non_layers)}")
        self.loss = loss
        # torchvision's ResNet gives the names and the init (kaiming fan_out convs, BN 1/0)
        net = ResNet(Bottleneck, [3, 4, 6, 3])
        if last_stride == 1:
            net.layer4[0].conv2.stride = (1, 1)
            net.layer4[0].downsample[0].stride = (1, 1)
        for name in BACKBONE:
            setattr(self, name, getattr(net, name))
        self.relu, self.maxpool = net.relu, net.maxpool
        self.nl_idx: List[List[int]] = []
        for stage, count in enumerate(non_layers, start=1):
            blocks = len(getattr(self, f"layer{stage}"))
            if not 0 <= count <= blocks:
                raise ValueError(f"non_layers[{stage - 1}]={count}: layer{stage} has {blocks} blocks")
            width = 64 * 2 ** (stage - 1) * Bottleneck.expansion
            inter = 1 if nl_reduction is None else max(1, width // nl_reduction)
            setattr(self, f"NL_{stage}", nn.ModuleList(NonLocal(width, inter) for _ in range(count)))
            self.nl_idx.append(sorted(blocks - 1 - i for i in range(count)))  # the last `count` blocks
        for m in self.modules():
            if isinstance(m, NonLocal):
                for conv in (m.g[0], m.theta, m.phi, m.W[0]):
                    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
                    nn.init.zeros_(conv.bias)
        self.feature_dim = 512 * Bottleneck.expansion
        self.gap = GeM(gem_p)
        self.bottleneck = nn.BatchNorm1d(self.feature_dim)  # the BNNeck
        self.bottleneck.bias.requires_grad_(False)  # no shift: the BN feature stays centred
        self.classifier = nn.Linear(self.feature_dim, num_classes, bias=False)
        nn.init.ones_(self.bottleneck.weight)
        nn.init.zeros_(self.bottleneck.bias)
        nn.init.normal_(self.classifier.weight, std=0.001)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The backbone's last map, (N, 2048, H/16, W/16) with last stride 1."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            nls, idx = getattr(self, f"NL_{stage}"), self.nl_idx[stage - 1]
            for i, block in enumerate(getattr(self, f"layer{stage}")):
                x = block(x)
                if i in idx:
                    x = nls[idx.index(i)](x)
        return x

    def forward(self, x: torch.Tensor) -> Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]:
        global_feat = self.gap(self.feature_map(x)).flatten(1)
        feat = self.bottleneck(global_feat)
        if not self.training:
            return feat
        logits = self.classifier(feat)
        return logits if self.loss == "softmax" else (logits, global_feat)

    def backbone_keys(self) -> List[str]:
        """State-dict names of the torchvision part (what an ImageNet state dict fills)."""
        return [k for k in self.state_dict() if k.split(".", 1)[0] in BACKBONE]

    def load_imagenet(self, state: Dict[str, torch.Tensor]) -> None:
        """Load a torchvision ResNet-50 state dict into the backbone; ``fc.*`` is ignored.

        Every backbone tensor must be in ``state`` with its shape, else a ``ValueError`` names
        the first missing or mismatched key; non-local and head layers keep their init.
        """
        own = self.state_dict()
        for key in self.backbone_keys():
            if key not in state or state[key].shape != own[key].shape:
                got = "missing" if key not in state else f"shape {tuple(state[key].shape)}"
                raise ValueError(f"ImageNet state dict does not fit resnet50_agw: {key} is {got}, "
                                 f"expected {tuple(own[key].shape)}")
        self.load_state_dict({**own, **{k: state[k] for k in self.backbone_keys()}})


def from_agw_state_dict(state: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Names of an original AGW checkpoint (``[module.]base.layer1...``) -> this module's."""
    out = {}
    for key, value in state.items():
        key = key[len("module."):] if key.startswith("module.") else key
        out[key[len("base."):] if key.startswith("base.") else key] = value
    return out


def _build(num_classes: int, loss: str, pretrained: bool, nl_reduction: Optional[int]) -> AGW:
    model = AGW(num_classes, loss=loss, nl_reduction=nl_reduction)
    if pretrained:
        # torch.hub caches the file; offline, its error reaches bridge.build_model, which names
        # model.pretrained and the way out (model.load_weights with a local torchvision file)
        model.load_imagenet(torch.hub.load_state_dict_from_url(IMAGENET_URL, map_location="cpu", check_hash=True))
    return model


def resnet50_agw(num_classes: int, loss: str = "softmax", pretrained: bool = True, use_gpu: bool = True,
                 **kwargs) -> AGW:
    """The paper's AGW: 25,078,864 parameters at 751 classes (1-channel non-local blocks)."""
    return _build(num_classes, loss, pretrained, nl_reduction=None)


def resnet50_agw_nl2(num_classes: int, loss: str = "softmax", pretrained: bool = True, use_gpu: bool = True,
                     **kwargs) -> AGW:
    """AGW with textbook non-local blocks (inner width in_channels // 2, Wang et al.)."""
    return _build(num_classes, loss, pretrained, nl_reduction=2)


bridge.register_model("resnet50_agw", resnet50_agw)
bridge.register_model("resnet50_agw_nl2", resnet50_agw_nl2)
