"""BatchNorm2d + LeakyReLU (ReLU = slope 0), forward and backward, as the generators use it.

torch runs batch norm and the activation as separate kernels (stats, normalize, activation;
in backward activation-grad, reductions, input-grad) and keeps the normalized tensor for
the activation's backward. Here:

* forward: a stats kernel (per-tile mean and M2 of x shifted by its first value, combined by
  Chan et al.'s formula in a per-channel finalize kernel that also updates the running stats
  like ``nn.BatchNorm2d``), then one elementwise kernel ``leaky((x - mean) * w * invstd + b)``;
* backward: one reduction kernel for ``sum(dz)`` and ``sum(dz * xhat)`` (``dz`` recomputed
  from x: nothing but x and two per-channel vectors is saved), then one elementwise kernel
  for ``dx``.

Elementwise kernels walk the tensor in its memory order, so channels-last works at full
speed; any strides are accepted. ``BatchNormAct2d`` in ``plugins/norm_act.py`` calls this op.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ._common import ELEMENTWISE_BLOCK, decode, elementwise_args, flat_offsets, needs_int64
from .dispatch import INTERPRET, backend_for, launch_options, pow2_at_least, register_op, tl, triton

OP = register_op("bn_leaky_relu")

_REDUCE_TILE = 1 << 16 if INTERPRET else 4096  # elements per program of the reductions
_MAX_PARTS_BLOCK = 1024  # tiles' partial statistics combined per step of the finalize loop


@triton.jit
def _tile(pb, cb, P, C, HW, W, sn, sc, sh, sw, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Offsets and mask of a [positions (n, h, w), channels] tile of an NCHW-indexed tensor."""
    p = pb * BLOCK_P + tl.arange(0, BLOCK_P)
    c = cb * BLOCK_C + tl.arange(0, BLOCK_C)
    n = p // HW
    hw = p % HW
    offs = (n.to(tl.int64) * sn + (hw // W) * sh + (hw % W) * sw)[:, None] + (c * sc)[None, :]
    return offs, (p < P)[:, None] & (c < C)[None, :], c


@triton.jit
def _stats_kernel(x_ptr, mean_part_ptr, m2_part_ptr, P, C, HW, W, sn, sc, sh, sw,
                  BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pb = tl.program_id(0)
    offs, mask, c = _tile(pb, tl.program_id(1), P, C, HW, W, sn, sc, sh, sw, BLOCK_P, BLOCK_C)
    c_ok = c < C
    # statistics of x - x[0, c, 0, 0]: shifted data keep float32 sums small and exact-ish
    # when |mean| >> std (the combined mean is shift + mean of the shifted data)
    shift = tl.load(x_ptr + c * sc, mask=c_ok, other=0.0).to(tl.float32)
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32) - shift[None, :]
    count = tl.minimum(P - pb * BLOCK_P, BLOCK_P).to(tl.float32)
    mean = tl.sum(tl.where(mask, x, 0.0), axis=0) / count
    centered = tl.where(mask, x - mean[None, :], 0.0)
    tl.store(mean_part_ptr + pb * C + c, mean, mask=c_ok)
    tl.store(m2_part_ptr + pb * C + c, tl.sum(centered * centered, axis=0), mask=c_ok)


@triton.jit
def _finalize_kernel(x_ptr, mean_part_ptr, m2_part_ptr, weight_ptr, bias_ptr, rmean_ptr, rvar_ptr,
                     mean_ptr, invstd_ptr, scale_ptr, parts, P, C, sc, momentum, eps,
                     HAS_WEIGHT: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RUNNING: tl.constexpr,
                     BLOCK_P: tl.constexpr, BLOCK_K: tl.constexpr):
    """Per channel: combine the tiles' (count, mean, M2) with Chan et al.'s parallel formula."""
    c = tl.program_id(0)
    total = P.to(tl.float32)
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for k0 in range(0, parts, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        count = tl.minimum(P - k * BLOCK_P, BLOCK_P).to(tl.float32)
        acc += tl.where(k < parts, count * tl.load(mean_part_ptr + k * C + c, mask=k < parts, other=0.0), 0.0)
    mean = tl.sum(acc, axis=0) / total
    acc = tl.zeros([BLOCK_K], dtype=tl.float32)
    for k0 in range(0, parts, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        ok = k < parts
        count = tl.minimum(P - k * BLOCK_P, BLOCK_P).to(tl.float32)
        delta = tl.load(mean_part_ptr + k * C + c, mask=ok, other=0.0) - mean
        acc += tl.where(ok, tl.load(m2_part_ptr + k * C + c, mask=ok, other=0.0) + count * delta * delta, 0.0)
    m2 = tl.sum(acc, axis=0)
    mean += tl.load(x_ptr + c * sc).to(tl.float32)  # undo the stats kernel's shift
    invstd = 1.0 / tl.sqrt_rn(m2 / total + eps)
    tl.store(mean_ptr + c, mean)
    tl.store(invstd_ptr + c, invstd)
    scale = invstd
    if HAS_WEIGHT:
        scale = invstd * tl.load(weight_ptr + c).to(tl.float32)
    tl.store(scale_ptr + c, scale)
    if HAS_RUNNING:  # nn.BatchNorm2d: unbiased variance into the running estimate
        rm = tl.load(rmean_ptr + c).to(tl.float32)
        rv = tl.load(rvar_ptr + c).to(tl.float32)
        tl.store(rmean_ptr + c, (1.0 - momentum) * rm + momentum * mean)
        tl.store(rvar_ptr + c, (1.0 - momentum) * rv + momentum * (m2 / (total - 1.0)))


@triton.jit
def _forward_kernel(x_ptr, y_ptr, mean_ptr, scale_ptr, bias_ptr, numel, D1, D2, D3,
                    sx0, sx1, sx2, sx3, sy0, sy1, sy2, sy3, cs, C, slope,
                    CPOS: tl.constexpr, DENSE: tl.constexpr, HAS_BIAS: tl.constexpr, INT64: tl.constexpr,
                    BLOCK: tl.constexpr):
    offs, mask = flat_offsets(numel, BLOCK, INT64)
    x_off, y_off, c = decode(offs, D1, D2, D3, sx0, sx1, sx2, sx3, sy0, sy1, sy2, sy3, cs, C, CPOS, DENSE)
    x = tl.load(x_ptr + x_off, mask=mask, other=0.0).to(tl.float32)
    z = (x - tl.load(mean_ptr + c, mask=mask, other=0.0)) * tl.load(scale_ptr + c, mask=mask, other=1.0)
    if HAS_BIAS:
        z = z + tl.load(bias_ptr + c, mask=mask, other=0.0).to(tl.float32)
    tl.store(y_ptr + y_off, tl.where(z > 0, z, z * slope), mask=mask)


@triton.jit
def _grad_sums_kernel(x_ptr, dy_ptr, mean_ptr, invstd_ptr, scale_ptr, bias_ptr, dz_part_ptr, dzx_part_ptr,
                      P, C, HW, W, sn, sc, sh, sw, gn, gc, gh, gw, slope,
                      HAS_BIAS: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    pb = tl.program_id(0)
    cb = tl.program_id(1)
    offs, mask, c = _tile(pb, cb, P, C, HW, W, sn, sc, sh, sw, BLOCK_P, BLOCK_C)
    g_offs, _, _ = _tile(pb, cb, P, C, HW, W, gn, gc, gh, gw, BLOCK_P, BLOCK_C)
    c_ok = c < C
    x = tl.load(x_ptr + offs, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + g_offs, mask=mask, other=0.0).to(tl.float32)
    centered = x - tl.load(mean_ptr + c, mask=c_ok, other=0.0)[None, :]
    z = centered * tl.load(scale_ptr + c, mask=c_ok, other=1.0)[None, :]
    if HAS_BIAS:
        z = z + tl.load(bias_ptr + c, mask=c_ok, other=0.0).to(tl.float32)[None, :]
    dz = tl.where(z > 0, dy, dy * slope)
    xhat = centered * tl.load(invstd_ptr + c, mask=c_ok, other=1.0)[None, :]
    tl.store(dz_part_ptr + pb * C + c, tl.sum(dz, axis=0), mask=c_ok)
    tl.store(dzx_part_ptr + pb * C + c, tl.sum(dz * xhat, axis=0), mask=c_ok)


@triton.jit
def _grad_input_kernel(x_ptr, dy_ptr, dx_ptr, mean_ptr, invstd_ptr, scale_ptr, bias_ptr,
                       mean_dz_ptr, mean_dzx_ptr, numel, D1, D2, D3, sx0, sx1, sx2, sx3,
                       sg0, sg1, sg2, sg3, sd0, sd1, sd2, sd3, cs, C, slope,
                       CPOS: tl.constexpr, DENSE: tl.constexpr, HAS_BIAS: tl.constexpr,
                       BATCH_STATS: tl.constexpr,
                       INT64: tl.constexpr, BLOCK: tl.constexpr):
    offs, mask = flat_offsets(numel, BLOCK, INT64)
    x_off, dy_off, c = decode(offs, D1, D2, D3, sx0, sx1, sx2, sx3, sg0, sg1, sg2, sg3, cs, C, CPOS, DENSE)
    dx_off, _, _ = decode(offs, D1, D2, D3, sd0, sd1, sd2, sd3, sd0, sd1, sd2, sd3, cs, C, CPOS, DENSE)
    x = tl.load(x_ptr + x_off, mask=mask, other=0.0).to(tl.float32)
    dy = tl.load(dy_ptr + dy_off, mask=mask, other=0.0).to(tl.float32)
    centered = x - tl.load(mean_ptr + c, mask=mask, other=0.0)
    scale = tl.load(scale_ptr + c, mask=mask, other=1.0)
    z = centered * scale
    if HAS_BIAS:
        z = z + tl.load(bias_ptr + c, mask=mask, other=0.0).to(tl.float32)
    dz = tl.where(z > 0, dy, dy * slope)
    if BATCH_STATS:  # the batch mean and variance depend on x too
        xhat = centered * tl.load(invstd_ptr + c, mask=mask, other=1.0)
        mean_dzx = tl.load(mean_dzx_ptr + c, mask=mask, other=0.0)
        dz = dz - tl.load(mean_dz_ptr + c, mask=mask, other=0.0) - xhat * mean_dzx
    tl.store(dx_ptr + dx_off, dz * scale, mask=mask)


def _reduce_blocks(x: Tensor) -> Tuple[int, int]:
    """(BLOCK_P, BLOCK_C): wide in channels for channels-last, wide in positions otherwise."""
    channels = x.shape[1]
    block_c = min(pow2_at_least(channels), 64) if x.stride(1) == 1 and channels > 1 else 1
    if INTERPRET:
        block_c = min(pow2_at_least(channels), 64)
    return max(16, _REDUCE_TILE // block_c), block_c


def _vec(t: Optional[Tensor], like: Tensor) -> Tensor:
    return like if t is None else t  # an unused pointer when absent (HAS_* flags off)


def _forward(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
             running_var: Optional[Tensor], slope: float, training: bool, momentum: float,
             eps: float) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Launch the forward kernels; returns y and the per-channel float32 mean, invstd, scale."""
    n, channels, h, w = x.shape
    positions = n * h * w
    if training:
        block_p, block_c = _reduce_blocks(x)
        parts = triton.cdiv(positions, block_p)
        mean_part = torch.empty((parts, channels), dtype=torch.float32, device=x.device)
        m2_part = torch.empty_like(mean_part)
        _stats_kernel[(parts, triton.cdiv(channels, block_c))](
            x, mean_part, m2_part, positions, channels, h * w, w, *x.stride(),
            BLOCK_P=block_p, BLOCK_C=block_c, **launch_options(4))
        mean = torch.empty(channels, dtype=torch.float32, device=x.device)
        invstd, scale = torch.empty_like(mean), torch.empty_like(mean)
        has_running = running_mean is not None and running_var is not None
        _finalize_kernel[(channels,)](
            x, mean_part, m2_part, _vec(weight, mean), _vec(bias, mean), _vec(running_mean, mean),
            _vec(running_var, mean), mean, invstd, scale, parts, positions, channels, x.stride(1),
            float(momentum), float(eps),
            HAS_WEIGHT=weight is not None, HAS_BIAS=bias is not None, HAS_RUNNING=has_running,
            BLOCK_P=block_p, BLOCK_K=min(_MAX_PARTS_BLOCK, pow2_at_least(parts)), **launch_options(4))
    else:
        mean = running_mean.float()
        invstd = torch.rsqrt(running_var.float() + eps)
        scale = invstd if weight is None else invstd * weight.float()
    y = torch.empty_like(x)
    if x.numel():
        args, cpos, dense = elementwise_args(x, y)
        _forward_kernel[(triton.cdiv(x.numel(), ELEMENTWISE_BLOCK),)](
            x, y, mean, scale, _vec(bias, mean), x.numel(), *args, float(slope), CPOS=cpos, DENSE=dense,
            HAS_BIAS=bias is not None, INT64=needs_int64(x, y), BLOCK=ELEMENTWISE_BLOCK, **launch_options(4))
    return y, mean, invstd, scale


def _backward(dy: Tensor, x: Tensor, bias: Optional[Tensor], mean: Tensor, invstd: Tensor, scale: Tensor,
              slope: float, batch_stats: bool) -> Tuple[Tensor, Tensor, Tensor]:
    """Launch the backward kernels; returns dx, d(weight) and d(bias) (float32 per channel)."""
    n, channels, h, w = x.shape
    positions = n * h * w
    block_p, block_c = _reduce_blocks(x)
    parts = triton.cdiv(positions, block_p)
    dz_part = torch.empty((parts, channels), dtype=torch.float32, device=x.device)
    dzx_part = torch.empty_like(dz_part)
    _grad_sums_kernel[(parts, triton.cdiv(channels, block_c))](
        x, dy, mean, invstd, scale, _vec(bias, mean), dz_part, dzx_part, positions, channels, h * w, w,
        *x.stride(), *dy.stride(), float(slope), HAS_BIAS=bias is not None,
        BLOCK_P=block_p, BLOCK_C=block_c, **launch_options(4))
    sum_dz, sum_dzx = dz_part.sum(0), dzx_part.sum(0)
    dx = torch.empty_like(x)
    args, cpos, dense = elementwise_args(x, dy, dx)
    _grad_input_kernel[(triton.cdiv(x.numel(), ELEMENTWISE_BLOCK),)](
        x, dy, dx, mean, invstd, scale, _vec(bias, mean), sum_dz / positions, sum_dzx / positions,
        x.numel(), *args, float(slope), CPOS=cpos, DENSE=dense, HAS_BIAS=bias is not None,
        BATCH_STATS=batch_stats, INT64=needs_int64(x, dy, dx), BLOCK=ELEMENTWISE_BLOCK, **launch_options(4))
    return dx, sum_dzx, sum_dz


class BNLeakyReLUFunction(torch.autograd.Function):
    """Autograd wrapper of the kernels; running stats are updated in place in forward."""

    @staticmethod
    def forward(ctx, x, weight, bias, running_mean, running_var, slope, training, momentum, eps):
        y, mean, invstd, scale = _forward(x, weight, bias, running_mean, running_var, slope, training,
                                          momentum, eps)
        ctx.save_for_backward(x, weight, bias, mean, invstd, scale)
        ctx.slope, ctx.training = slope, training
        return y

    @staticmethod
    def backward(ctx, dy):
        x, weight, bias, mean, invstd, scale = ctx.saved_tensors
        dx, dweight, dbias = _backward(dy, x, bias, mean, invstd, scale, ctx.slope, ctx.training)
        dweight = dweight.to(weight.dtype) if weight is not None and ctx.needs_input_grad[1] else None
        dbias = dbias.to(bias.dtype) if bias is not None and ctx.needs_input_grad[2] else None
        return (dx if ctx.needs_input_grad[0] else None), dweight, dbias, None, None, None, None, None, None


def bn_leaky_relu_torch(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor],
                        running_mean: Optional[Tensor], running_var: Optional[Tensor], slope: float = 0.0,
                        training: bool = True, momentum: float = 0.1, eps: float = 1e-5) -> Tensor:
    """The reference: ``F.leaky_relu(F.batch_norm(...), slope)``.

    The activation runs in place on batch_norm's output (its backward needs its input, not
    its output): ReLU for slope 0, in-place LeakyReLU for slope > 0 (autograd refuses an
    in-place LeakyReLU backward with a slope <= 0, so a negative slope allocates).
    """
    y = F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)
    if slope == 0:
        return F.relu(y, inplace=True)
    return F.leaky_relu(y, slope, inplace=slope > 0)


def _check(x: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor], training: bool,
           slope: float) -> None:
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating (N, C, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if isinstance(slope, bool) or not isinstance(slope, (int, float)):
        raise ValueError(f"slope must be a number, got {slope!r}")
    if not training and (running_mean is None or running_var is None):
        raise ValueError("running_mean: eval mode (training=False) needs running_mean and running_var")
    if training and x.numel() and x.numel() // x.shape[1] <= 1:
        raise ValueError(f"x: expected more than 1 value per channel when training, got shape {tuple(x.shape)}")


def bn_leaky_relu(x: Tensor, weight: Optional[Tensor], bias: Optional[Tensor], running_mean: Optional[Tensor],
                  running_var: Optional[Tensor], slope: float = 0.0, training: bool = True,
                  momentum: float = 0.1, eps: float = 1e-5, *, backend: Optional[str] = None) -> Tensor:
    """``leaky_relu(batch_norm(x), slope)`` with ``F.batch_norm``'s semantics.

    ``training=True``: batch statistics, and ``running_mean``/``running_var`` (if given) are
    updated in place with ``momentum`` (unbiased variance), as in ``nn.BatchNorm2d``;
    ``training=False``: the running statistics. ``slope=0`` is ReLU. Differentiable in
    ``x``, ``weight`` and ``bias``.
    """
    _check(x, running_mean, running_var, training, slope)
    if backend_for(OP, backend) == "triton":
        return BNLeakyReLUFunction.apply(x, weight, bias, running_mean, running_var, float(slope), bool(training),
                                         float(momentum), float(eps))
    return bn_leaky_relu_torch(x, weight, bias, running_mean, running_var, slope, training, momentum, eps)


def example(device: torch.device, dtype: torch.dtype, shape: Tuple[int, ...]):
    """Inputs for the generic kernel tests: ``(args, kwargs)`` (fresh running stats each call)."""
    gen = torch.Generator().manual_seed(4)
    channels = shape[1]
    x = (torch.randn(shape, generator=gen) * 2 + 0.5).to(device=device, dtype=dtype)
    weight = (torch.rand(channels, generator=gen) + 0.5).to(device)
    bias = torch.randn(channels, generator=gen).to(device)
    running = (torch.zeros(channels, device=device), torch.ones(channels, device=device))
    return (x, weight, bias, *running), {"slope": 0.2, "training": True}
