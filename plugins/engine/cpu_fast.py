"""CPU fast paths of the training step: channels-last nets and fused Adam.

Measured on the quickstart joint step (64x32, batch 32, one thread): 302 -> 258 ms per step
(4.2x -> 3.6x torchreid's plain triplet step). oneDNN's convolutions run their native NHWC
layout with channels-last weights and activations (about 12 of those 15 points, in every
net); Adam's fused CPU kernel (one pass per parameter instead of a dozen elementwise ops, 15 ->
8 ms) the rest. Both change float rounding only (summation order), not the method.

Channels-last is applied to every net the engine trains whose training forward and backward
work on a channels-last input: a few torchreid backbones (``pcb_*``, ``mudeep``) ``view`` their
feature maps in ways only the contiguous layout allows, so C is probed first on a copy.
"""
from __future__ import annotations

import copy
from typing import Any, Iterable, Sequence

import torch

CHANNELS_LAST = torch.channels_last


def to_channels_last(x: Any) -> Any:
    """A 4-D tensor in channels-last layout (a no-op when it already is); anything else as is."""
    if isinstance(x, torch.Tensor) and x.dim() == 4:
        return x.contiguous(memory_format=CHANNELS_LAST)
    return x


def channels_last_works(net: torch.nn.Module, sample: torch.Tensor) -> bool:
    """Whether a copy of ``net`` runs a training forward and backward on channels-last ``sample``.

    The copy is thrown away and the CPU RNG state restored (dropout draws from it), so the
    probe leaves no trace in the run. Only CPU runs probe (``cpu_fast`` is a CPU path).
    """
    probe = copy.deepcopy(net).train().to(memory_format=CHANNELS_LAST)
    with torch.random.fork_rng(devices=[]):
        try:
            out = probe(to_channels_last(sample))
            outs = out if isinstance(out, (tuple, list)) else (out,)
            tensors = [o for o in outs if isinstance(o, torch.Tensor) and o.is_floating_point()]
            if not tensors:
                return False
            sum(t.float().sum() for t in tensors).backward()
        except RuntimeError:  # e.g. "view size is not compatible with input tensor's size and stride"
            return False
    return True


def nets_to_channels_last(nets: Iterable[torch.nn.Module]) -> None:
    """Convert in place: the same Parameter objects, so optimizers and checkpoints are unaffected
    (state-dict keys and values are the same; only the strides differ)."""
    for net in nets:
        net.to(memory_format=CHANNELS_LAST)


def use_fused_adam(optimizers: Sequence[Any]) -> int:
    """Switch ``torch.optim.Adam``/``AdamW`` optimizers whose ``foreach`` and ``fused`` are unset
    (torch's per-tensor loop on a CPU) to the fused kernel; returns how many were switched.

    Left alone: other optimizers, explicit ``foreach``/``fused`` choices, ``differentiable``,
    and parameters off the CPU or not floating point.
    """
    switched = 0
    for opt in optimizers:
        if type(opt) not in (torch.optim.Adam, torch.optim.AdamW):
            continue
        groups = opt.param_groups
        if any(g.get("foreach") or g.get("fused") or g.get("differentiable") for g in groups):
            continue
        params = [p for g in groups for p in g["params"]]
        if not params or not all(p.device.type == "cpu" and p.is_floating_point() for p in params):
            continue
        for g in groups:
            g["foreach"], g["fused"] = False, True
        opt.defaults.update(foreach=False, fused=True)
        switched += 1
    return switched
