"""Kernel microbenchmarks: torch eager vs torch.compile vs Triton for every op in ``kernels.OPS``.

Batches of 64 and 256 at 3x256x128 (feature-map sizes of the unet_128 generator for
bn_leaky_relu); training ops also forward+backward. ``benchmark.extra_info`` holds the bytes
an ideal kernel moves (inputs read once, outputs written once) and the resulting GB/s.
Triton and torch.compile are timed on CUDA only (CPU interpreter timings mean nothing);
on the CPU torch.compile is opt-in (TORCHREID_PRIVACY_BENCH_COMPILE=1: it builds C++). Run:

    TRITON_INTERPRET=0 python -m pytest tests/benchmarks/kernels --benchmark-only -q

(tests/conftest.py turns the interpreter on by default, for the kernel tests).
"""
from __future__ import annotations

import os

import pytest
import torch

from torchreid_privacy.bench import kernels as bench
from torchreid_privacy.kernels import OPS, dispatch

CUDA = torch.cuda.is_available()
DEVICE = torch.device("cuda" if CUDA else "cpu")
CASES = [
    pytest.param(name, shape, mode, id=f"{name}-{'x'.join(map(str, shape[1:]))}-{mode}")
    for name, op in sorted(OPS.items())
    for shape in op.bench_shapes
    for mode in (("fwd", "fwd+bwd") if op.grad_args else ("fwd",))
]


def _skip_reason(impl: str):
    if impl == "triton":
        if not CUDA:
            return "Triton is timed on CUDA only (interpreter timings on the CPU mean nothing)"
        if dispatch.INTERPRET or not dispatch.HAS_TRITON:
            return "Triton kernels are interpreted (TRITON_INTERPRET=1) or missing: run with TRITON_INTERPRET=0"
    if impl == "compile" and not CUDA and os.environ.get("TORCHREID_PRIVACY_BENCH_COMPILE") != "1":
        return "torch.compile on the CPU is opt-in: set TORCHREID_PRIVACY_BENCH_COMPILE=1 (needs a C++ toolchain)"
    return None


@pytest.mark.parametrize("impl", ["eager", "compile", "triton"])
@pytest.mark.parametrize("batch", [64, 256])
@pytest.mark.parametrize("name,shape,mode", CASES)
def test_kernel_speed(benchmark, name, shape, mode, batch, impl):
    reason = _skip_reason(impl)
    if reason:
        pytest.skip(reason)
    op = OPS[name]
    shape = bench.bench_input_shape(shape, batch)
    benchmark.group = f"{name} {mode} {shape}"
    args, kwargs = op.example(DEVICE, torch.float32, shape)
    fn = {"eager": op.reference, "compile": torch.compile(op.reference), "triton": op.triton}[impl]
    grad_args = op.grad_args if mode == "fwd+bwd" else None
    step = bench.forward_backward(fn, args, kwargs, grad_args) if grad_args else (lambda: fn(*args, **kwargs))
    sync = torch.cuda.synchronize if CUDA else (lambda: None)

    def run():
        step()
        sync()

    run()  # compile / warm up outside the timing
    benchmark.pedantic(run, rounds=5 if batch == 256 else 10, warmup_rounds=1)
    moved = bench.moved_bytes(args, op.reference(*args, **kwargs), grad_args)
    benchmark.extra_info["bytes"] = moved
    benchmark.extra_info["GB/s"] = moved / benchmark.stats.stats.median / 1e9
    assert benchmark.extra_info["GB/s"] > 0
