"""Normalization + activation as one module, so a fused kernel can replace the pair.

``BatchNormAct2d`` subclasses ``nn.BatchNorm2d`` (timm's ``layers/norm_act.py`` idea): it has
exactly BatchNorm2d's parameters and buffers, so its state dict loads into a plain
``nn.BatchNorm2d`` and back, and ``isinstance(m, nn.BatchNorm2d)`` keeps working for weight
init, SyncBatchNorm conversion and optimizers' no-decay rules.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from torchreid_privacy import kernels

ACTIVATIONS = ("leaky_relu", "relu", "identity")
NORMS = ("batch", "instance", "none")


def _check_act(act: str) -> str:
    if act not in ACTIVATIONS:
        raise ValueError(f"act must be one of {ACTIVATIONS}, got {act!r}")
    return act


def apply_act(x: torch.Tensor, act: str, slope: float, inplace: bool = False) -> torch.Tensor:
    """The activation named ``act`` (the same set ``BatchNormAct2d`` accepts)."""
    if act == "leaky_relu":
        # autograd refuses an in-place LeakyReLU backward with a slope <= 0
        return F.leaky_relu(x, slope, inplace=inplace and slope > 0)
    if act == "relu":
        return F.relu(x, inplace=inplace)
    return x


def _act_repr(act: str, slope: float) -> str:
    return f"act={act}" + (f", slope={slope}" if act == "leaky_relu" else "")


class BatchNormAct2d(nn.BatchNorm2d):
    """``act(batch_norm(x))`` with ``act`` in ``leaky_relu`` | ``relu`` | ``identity``.

    Weight-compatible with ``nn.BatchNorm2d`` (no extra parameters or buffers).
    ``leaky_relu``/``relu`` run as ``kernels.bn_leaky_relu`` (relu = slope 0): the fused Triton
    kernels or ``F.batch_norm`` then the activation in place, as the run's backend table says;
    ``identity`` is ``F.batch_norm`` alone.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, act: str = "relu",
                 slope: float = 0.2, device=None, dtype=None) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, device=device, dtype=dtype)
        self.act = _check_act(act)
        self.slope = float(slope)

    def batch_norm_args(self) -> Tuple[Optional[torch.Tensor], Optional[torch.Tensor], bool, float]:
        """``(running_mean, running_var, use_batch_stats, momentum)`` as ``nn.BatchNorm2d`` uses them.

        Also bumps ``num_batches_tracked`` in training, exactly like ``nn.BatchNorm2d.forward``;
        a fused kernel calls this once per forward and gets the same running-stat semantics.
        """
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        return (self.running_mean if track else None, self.running_var if track else None,
                use_batch_stats, factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(x)
        running_mean, running_var, use_batch_stats, factor = self.batch_norm_args()
        if self.act == "identity":
            return F.batch_norm(x, running_mean, running_var, self.weight, self.bias, use_batch_stats, factor,
                                self.eps)
        slope = self.slope if self.act == "leaky_relu" else 0.0
        return kernels.bn_leaky_relu(x, self.weight, self.bias, running_mean, running_var, slope,
                                     use_batch_stats, factor, self.eps)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {_act_repr(self.act, self.slope)}"


class SyncBatchNormAct2d(nn.SyncBatchNorm):
    """``act(sync_batch_norm(x))``: what a ``BatchNormAct2d`` becomes under SyncBatchNorm.

    Same parameters, buffers and state-dict keys as ``BatchNormAct2d``; made by
    ``convert_sync_batchnorm`` (torch's own converter would
    drop the activation). Statistics are reduced over the process group, so no fused kernel.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, act: str = "relu",
                 slope: float = 0.2, process_group=None) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=track_running_stats, process_group=process_group)
        self.act = _check_act(act)
        self.slope = float(slope)

    @classmethod
    def from_batchnorm_act(cls, bn: BatchNormAct2d, process_group=None) -> "SyncBatchNormAct2d":
        """Convert, keeping the very same Parameter objects so existing optimizers stay valid."""
        out = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats, bn.act, bn.slope,
                  process_group)
        if bn.affine:
            with torch.no_grad():
                out.weight, out.bias = bn.weight, bn.bias
        out.running_mean, out.running_var = bn.running_mean, bn.running_var
        out.num_batches_tracked = bn.num_batches_tracked
        out.train(bn.training)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return apply_act(super().forward(x), self.act, self.slope, inplace=True)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, {_act_repr(self.act, self.slope)}"


def act_module(act: str, slope: float = 0.2) -> nn.Module:
    """The ``nn`` module for ``act`` (used where no norm precedes the activation)."""
    if _check_act(act) == "leaky_relu":
        return nn.LeakyReLU(slope, inplace=True)
    return nn.ReLU(inplace=True) if act == "relu" else nn.Identity()


def create_norm_act(norm: str, num_features: int, act: str = "relu", slope: float = 0.2) -> nn.Module:
    """Norm + activation for ``norm`` in ``batch`` | ``instance`` | ``none`` (pix2pix's choices).

    ``instance`` is pix2pix's ``InstanceNorm2d(affine=False, track_running_stats=False)``.
    """
    if norm == "batch":
        return BatchNormAct2d(num_features, act=act, slope=slope)
    if norm == "instance":
        return nn.Sequential(nn.InstanceNorm2d(num_features, affine=False, track_running_stats=False),
                             act_module(act, slope))
    if norm == "none":
        return act_module(act, slope)
    raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")


def conv_bias(norm: str) -> bool:
    """Convs feeding a BatchNorm carry no bias (BN's shift replaces it), as in pix2pix."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    return norm != "batch"


def convert_sync_batchnorm(net: torch.nn.Module) -> torch.nn.Module:
    """``SyncBatchNorm.convert_sync_batchnorm`` that keeps the fused ``BatchNormAct2d`` activation.

    torch's converter turns every BatchNorm subclass into a plain ``SyncBatchNorm`` and
    would silently drop the LeakyReLU/ReLU a ``BatchNormAct2d`` carries; those become
    :class:`SyncBatchNormAct2d` (same state-dict keys) instead.
    """
    def convert(module: torch.nn.Module) -> torch.nn.Module:
        if isinstance(module, BatchNormAct2d):
            return SyncBatchNormAct2d.from_batchnorm_act(module)
        for name, child in module.named_children():
            module.add_module(name, convert(child))
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm) and not isinstance(module, torch.nn.SyncBatchNorm):
            return torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
        return module

    return convert(net)
