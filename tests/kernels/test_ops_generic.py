"""Every op in ``kernels.OPS`` against its torch reference: forward, strides, gradients, dtypes.

Runs on the CPU in Triton's interpreter (fp32); the fp16/bf16 cases need a CUDA GPU with
compiled kernels (TRITON_INTERPRET=0). A new kernel is covered by adding its ``OPS`` entry.
"""
from __future__ import annotations

import pytest
import torch

from torchreid_privacy import kernels
from torchreid_privacy.kernels import OPS, dispatch

CPU = torch.device("cpu")
CASES = [pytest.param(name, shape, id=f"{name}-{'x'.join(map(str, shape))}")
         for name, op in sorted(OPS.items()) for shape in op.shapes]
GRAD_CASES = [case for case in CASES if OPS[case.values[0]].grad_args]


def _as_tuple(out):
    return out if isinstance(out, tuple) else (out,)


def check_outputs(op, reference, result, args, kwargs, atol=None, rtol=None):
    if op.compare is not None:
        op.compare(reference, result, *args, **kwargs)
        return
    for ref, res in zip(_as_tuple(reference), _as_tuple(result), strict=True):
        torch.testing.assert_close(res, ref, atol=op.atol if atol is None else atol,
                                   rtol=op.rtol if rtol is None else rtol)


def relayout(t, layout):
    """The same values in a non-contiguous tensor: channels-last, or a sliced view of a wider one."""
    if not isinstance(t, torch.Tensor) or t.dim() not in (2, 4) or not t.is_floating_point():
        return t
    if layout == "channels_last":
        return t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t.t().contiguous().t()
    wide = torch.zeros(*t.shape[:-1], t.shape[-1] + 5, dtype=t.dtype, device=t.device)
    view = wide[..., 2:2 + t.shape[-1]]
    view.copy_(t)
    return view


@pytest.mark.parametrize("name,shape", CASES)
def test_forward_matches_reference(name, shape):
    op = OPS[name]
    args, kwargs = op.example(CPU, torch.float32, shape)
    reference = op.reference(*args, **kwargs)
    args, kwargs = op.example(CPU, torch.float32, shape)  # fresh: some ops update state in place
    check_outputs(op, reference, op.triton(*args, **kwargs), args, kwargs)


@pytest.mark.parametrize("layout", ["channels_last", "sliced"])
@pytest.mark.parametrize("name", sorted(OPS))
def test_non_contiguous_inputs_give_the_contiguous_result(name, layout):
    op = OPS[name]
    shape = op.shapes[0]
    args, kwargs = op.example(CPU, torch.float32, shape)
    expected = op.triton(*args, **kwargs)
    args, kwargs = op.example(CPU, torch.float32, shape)
    strided = tuple(relayout(a, layout) for a in args)
    assert any(isinstance(a, torch.Tensor) and not a.is_contiguous() for a in strided)
    # same kernel, same logical input: the result must not depend on the strides
    for want, got in zip(_as_tuple(expected), _as_tuple(op.triton(*strided, **kwargs)), strict=True):
        torch.testing.assert_close(got, want, atol=op.atol, rtol=op.rtol)


def _grads(fn, args, kwargs, grad_args, seed=0):
    args = [a.detach().clone().requires_grad_(True) if i in grad_args else a for i, a in enumerate(args)]
    out = fn(*args, **kwargs)
    weights = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)) if out.dim() else 1.0
    (out * weights).sum().backward()
    return out, [args[i].grad for i in grad_args]


@pytest.mark.parametrize("name,shape", GRAD_CASES)
def test_gradients_match_reference(name, shape):
    op = OPS[name]
    args, kwargs = op.example(CPU, torch.float32, shape)
    ref_out, ref_grads = _grads(op.reference, args, kwargs, op.grad_args)
    args, kwargs = op.example(CPU, torch.float32, shape)
    out, grads = _grads(op.triton, args, kwargs, op.grad_args)
    torch.testing.assert_close(out, ref_out, atol=op.atol, rtol=op.rtol)
    for index, got, want in zip(op.grad_args, grads, ref_grads, strict=True):
        assert got is not None, f"no gradient for argument {index}"
        scale = float(want.abs().max()) or 1.0  # reductions: compare relative to the largest entry
        torch.testing.assert_close(got, want, atol=1e-5 * scale, rtol=1e-4)


@pytest.mark.parametrize("name", sorted(name for name, op in OPS.items() if op.grad_args))
def test_gradients_with_non_contiguous_inputs(name):
    op = OPS[name]
    args, kwargs = op.example(CPU, torch.float32, op.shapes[0])
    _, want = _grads(op.triton, args, kwargs, op.grad_args)
    args, kwargs = op.example(CPU, torch.float32, op.shapes[0])
    _, got = _grads(op.triton, [relayout(a, "channels_last") for a in args], kwargs, op.grad_args)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=1e-6, rtol=1e-5)


@pytest.mark.no_triton
def test_every_public_op_is_in_the_table():
    ops = {"mosaic", "gaussian_blur", "add_noise", "bn_leaky_relu", "ssim_psnr", "batch_hard_triplet"}
    assert set(OPS) == ops == set(kernels.backend_report())
    assert ops <= set(kernels.__all__)
    for op in OPS.values():
        assert op.shapes and op.bench_shapes and callable(op.example)


@pytest.mark.skipif(not dispatch.INTERPRET, reason="runs the kernels in Triton's interpreter (TRITON_INTERPRET=1, "
                                                   "set by tests/conftest.py); on a GPU: bench kernels --dtype")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("name", sorted(OPS))
def test_half_precision(name, dtype):
    """fp16/bf16 inputs against the float32 reference, in the interpreter on the CPU."""
    op = OPS[name]
    args, kwargs = op.example(CPU, dtype, op.shapes[-1])
    upcast = tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() in (2, 4)
                   else a for a in args)
    reference = op.reference(*upcast, **kwargs)
    args, kwargs = op.example(CPU, dtype, op.shapes[-1])
    result = op.triton(*args, **kwargs)
    tol = 1e-2 if dtype == torch.float16 else 4e-2
    if op.compare is not None and name != "gaussian_blur":
        op.compare(reference, result, *upcast, **kwargs)
        return
    for ref, res in zip(_as_tuple(reference), _as_tuple(result), strict=True):
        torch.testing.assert_close(res.float(), ref.float(), atol=tol + 1.0 / 255, rtol=tol)
