"""GPU benchmark of the fused kernels: torch eager vs ``torch.compile`` vs Triton, one table.

``python -m torchreid_privacy.bench.kernels [--batch 256] [--quick] [--no-compile]`` (the CLI's
``torchreid-privacy bench kernels`` calls :func:`main`). First it measures the device's
copy bandwidth with a 1 GiB ``tensor.copy_``, then for every op in ``kernels.OPS`` it checks
the Triton result against the torch reference (PASS/FAIL) and times eager, compiled and
Triton (median of CUDA-event timings via ``triton.testing.do_bench``). Training ops are
also timed forward+backward. GB/s counts every input read once and every output written
once; "% copy" is that over the copy bandwidth (the goal for memory-bound ops is >= 80%).
"baseline" is the implementation a speed-up goal is stated against: the 2-D-window conv
SSIM for ``ssim_psnr``, torchreid's per-anchor loop for ``batch_hard_triplet``.

Exit codes of :func:`main`: 0 all checks passed; 1 no CUDA device ("no CUDA device: kernels
not benchmarked") or Triton unusable; 2 some check failed. Compilation counts against a
time budget so a full run stays under 3 minutes on one H100: once it is spent, the
remaining ``torch.compile`` columns read "-" (as do failed measurements).
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

COPY_BYTES = 1 << 30  # the bandwidth reference copies 1 GiB (CUDA)
COMPILE_BUDGET_S = 60.0  # torch.compile time allowed in one run, so the whole run stays < 3 min
NO_CUDA = "no CUDA device: kernels not benchmarked"
Row = Dict[str, Any]


def _timer(device: torch.device, quick: bool) -> Callable[[Callable[[], Any]], float]:
    """Milliseconds per call: CUDA-event median on a GPU, best wall time elsewhere."""
    if device.type == "cuda":
        from triton.testing import do_bench

        warmup, rep = (5, 20) if quick else (25, 100)
        return lambda fn: float(do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))

    def wall(fn: Callable[[], Any]) -> float:
        fn()
        best = math.inf
        for _ in range(1 if quick else 5):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
        return best * 1e3

    return wall


def copy_bandwidth(device: torch.device, quick: bool = False) -> float:
    """GB/s of a device-to-device ``copy_`` (bytes read + bytes written)."""
    size = COPY_BYTES if device.type == "cuda" else 1 << 24
    src = torch.empty(size // 4, dtype=torch.float32, device=device).uniform_()
    dst = torch.empty_like(src)
    ms = _timer(device, quick)(lambda: dst.copy_(src))
    return 2 * size / ms / 1e6


def _tensors(value: Any) -> List[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _nbytes(values: Sequence[Any]) -> int:
    return sum(t.numel() * t.element_size() for v in values for t in _tensors(v))


def ssim_conv2d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-image SSIM with one 11x11 2-D Gaussian window conv per statistic (the common
    pytorch-ssim / kornia formulation): the baseline of the ssim_psnr speed-up goal."""
    from torchreid_privacy.metrics.image import SSIM_K1, SSIM_K2, gaussian_taps

    taps = gaussian_taps().to(device=a.device, dtype=a.dtype)
    c = a.shape[1]
    window = torch.outer(taps, taps).expand(c, 1, -1, -1)
    filt = lambda t: F.conv2d(t, window, groups=c)  # noqa: E731
    mu_a, mu_b = filt(a), filt(b)
    var_a, var_b, cov = filt(a * a) - mu_a ** 2, filt(b * b) - mu_b ** 2, filt(a * b) - mu_a * mu_b
    c1, c2 = SSIM_K1 ** 2, SSIM_K2 ** 2
    ssim_map = (2 * mu_a * mu_b + c1) * (2 * cov + c2) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim_map.flatten(1).mean(1)


def _baseline(name: str) -> Optional[Callable[..., Any]]:
    if name == "ssim_psnr":
        return lambda a, b, **_: ssim_conv2d(a, b)
    if name == "batch_hard_triplet":
        from torchreid_privacy import bridge

        return lambda f, pids, margin=0.3: bridge.TripletLoss(margin=margin)(f, pids)
    return None


# train.amp's precisions: a kernel is checked against the float32 reference of the same
# (rounded) inputs, within the half-precision tolerances of tests/kernels/test_ops_generic.py
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
HALF_TOL = {torch.float16: 1e-2, torch.bfloat16: 4e-2}


def _upcast(args: tuple) -> tuple:
    return tuple(a.float() if isinstance(a, torch.Tensor) and a.is_floating_point() and a.dim() in (2, 4) else a
                 for a in args)


def _check(op: Any, args: tuple, kwargs: dict, dtype: torch.dtype = torch.float32) -> str:
    """PASS if the Triton result matches the reference (op's tolerance or comparison)."""
    try:
        if dtype in HALF_TOL:
            reference = op.reference(*_upcast(args), **kwargs)
            result = op.triton(*args, **kwargs)
            if op.compare is not None and op.name != "gaussian_blur":
                op.compare(reference, result, *_upcast(args), **kwargs)
                return "PASS"
            refs = reference if isinstance(reference, tuple) else (reference,)
            outs = result if isinstance(result, tuple) else (result,)
            tol = HALF_TOL[dtype]
            for ref, out in zip(refs, outs):
                torch.testing.assert_close(out.float(), ref.float(), atol=tol + 1.0 / 255, rtol=tol)
            return "PASS"
        reference = op.reference(*args, **kwargs)
        result = op.triton(*args, **kwargs)
        if op.compare is not None:
            op.compare(reference, result, *args, **kwargs)
        else:
            refs = reference if isinstance(reference, tuple) else (reference,)
            outs = result if isinstance(result, tuple) else (result,)
            for ref, out in zip(refs, outs):
                torch.testing.assert_close(out, ref, atol=op.atol, rtol=op.rtol)
        return "PASS"
    except Exception as exc:  # a benchmark reports, it does not stop at the first failure
        return f"FAIL ({type(exc).__name__}: {str(exc).splitlines()[0][:80] if str(exc) else ''})"


def forward_backward(fn: Callable[..., Any], args: tuple, kwargs: dict,
                     grad_args: Tuple[int, ...]) -> Callable[[], None]:
    """A closure running ``fn`` forward and backward on leaf copies of the ``grad_args`` inputs."""
    leaves = [a.detach().clone().requires_grad_(True) if i in grad_args else a for i, a in enumerate(args)]

    def run() -> None:
        out = fn(*leaves, **kwargs)
        out.backward(torch.ones_like(out))
        for i in grad_args:
            leaves[i].grad = None

    return run


def moved_bytes(args: tuple, out: Any, grad_args: Optional[Tuple[int, ...]] = None) -> int:
    """Bytes an ideal kernel moves: inputs read once, outputs written once; with ``grad_args``
    the backward too (reads dy and the inputs, writes the input gradients)."""
    moved = _nbytes(args) + _nbytes([out])
    if grad_args:
        moved = 2 * moved + _nbytes([args[i] for i in grad_args])
    return moved


def bench_input_shape(shape: Tuple[int, ...], batch: int, image_size: Tuple[int, int] = (256, 128)) -> Tuple[int, ...]:
    """An ``OPS`` bench shape at ``batch``; image-sized shapes follow ``image_size``, feature
    maps scale with it (they are given for 256x128 images)."""
    if len(shape) != 4:
        return (batch,) + tuple(shape[1:])
    height, width = image_size
    factor = 256 // shape[2]  # feature maps: 256x128 / factor
    return batch, shape[1], max(1, height // factor), max(1, width // factor)


def bench_kernels(batch: int = 256, quick: bool = False, *, device: str = "cuda", compile: bool = True,
                  image_size: Tuple[int, int] = (256, 128), ops: Optional[Sequence[str]] = None,
                  log: Optional[Callable[[str], None]] = None, dtype: torch.dtype = torch.float32) -> List[Row]:
    """Check and time every op of ``kernels.OPS`` (or those named in ``ops``); one row per
    op/shape, plus a forward+backward row for training ops.

    Row keys: op, shape, check, ms_eager, ms_compile, ms_triton, ms_baseline, gbps (Triton),
    pct_copy, copy_gbps. Times are None where skipped or failed. ``dtype`` bfloat16/float16
    (``train.amp``'s precisions) feeds every op inputs of that dtype (the check compares with the
    float32 reference of the same inputs, at half-precision tolerances). ``device='cpu'`` runs in
    Triton's interpreter (a smoke test: its times mean nothing).
    """
    from torchreid_privacy import kernels

    dev = torch.device(device)
    timer = _timer(dev, quick)
    copy_gbps = copy_bandwidth(dev, quick)
    compile_left = COMPILE_BUDGET_S if compile else 0.0
    rows: List[Row] = []
    unknown = set(ops or ()) - set(kernels.OPS)
    if unknown:
        raise ValueError(f"ops: unknown kernels {sorted(unknown)} (known: {sorted(kernels.OPS)})")
    for name, op in kernels.OPS.items():
        if ops is not None and name not in ops:
            continue
        for bench in op.bench_shapes:
            shape = bench_input_shape(bench, batch, image_size)
            args, kwargs = op.example(dev, dtype, shape)
            status = _check(op, args, kwargs, dtype)
            if log:
                log(f"{name:24s} {str(shape):22s} {status}")
            modes = [("fwd", None)] + ([("fwd+bwd", op.grad_args)] if op.grad_args else [])
            for mode, grad_args in modes:
                row: Row = {"op": name if mode == "fwd" else f"{name} (fwd+bwd)", "shape": shape, "check": status,
                            "copy_gbps": copy_gbps}
                impls = {"eager": op.reference, "triton": op.triton, "baseline": _baseline(name)}
                for impl, fn in impls.items():
                    skip = fn is None or (impl == "baseline" and grad_args)  # baselines: forward only
                    row[f"ms_{impl}"] = None if skip else _measure(timer, fn, args, kwargs, grad_args)
                row["ms_compile"] = None
                if compile_left > 0:
                    started = time.perf_counter()
                    row["ms_compile"] = _measure(timer, torch.compile(op.reference), args, kwargs, grad_args)
                    compile_left -= time.perf_counter() - started
                moved = moved_bytes(args, op.reference(*args, **kwargs), grad_args)
                ms = row["ms_triton"]
                row["gbps"] = moved / ms / 1e6 if ms else None
                row["pct_copy"] = 100.0 * row["gbps"] / copy_gbps if row["gbps"] else None
                rows.append(row)
    return rows


def _measure(timer: Callable[[Callable[[], Any]], float], fn: Callable[..., Any], args: tuple, kwargs: dict,
             grad_args: Optional[Tuple[int, ...]]) -> Optional[float]:
    try:
        if grad_args:
            return timer(forward_backward(fn, args, kwargs, grad_args))
        return timer(lambda: fn(*args, **kwargs))
    except Exception:  # e.g. torch.compile failing on this op: the column reads "-"
        return None


def format_table(rows: List[Row]) -> str:
    """The rows as one fixed-width table (ms, GB/s, % of copy bandwidth, speed-ups)."""
    def num(v: Optional[float], fmt: str = "{:.3f}") -> str:
        return "-" if v is None else fmt.format(v)

    def ratio(a: Optional[float], b: Optional[float]) -> str:
        return "-" if not a or not b else f"{a / b:.2f}x"

    head = (f"{'op':34s} {'shape':22s} {'check':5s} {'eager':>9s} {'compile':>9s} {'triton':>9s} "
            f"{'baseline':>9s} {'GB/s':>8s} {'%copy':>6s} {'vs eager':>9s} {'vs comp':>8s} {'vs base':>8s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['op']:34s} {str(tuple(r['shape'])):22s} {r['check'][:4]:5s} {num(r['ms_eager']):>9s} "
                     f"{num(r['ms_compile']):>9s} {num(r['ms_triton']):>9s} {num(r['ms_baseline']):>9s} "
                     f"{num(r['gbps'], '{:.0f}'):>8s} {num(r['pct_copy'], '{:.0f}'):>6s} "
                     f"{ratio(r['ms_eager'], r['ms_triton']):>9s} {ratio(r['ms_compile'], r['ms_triton']):>8s} "
                     f"{ratio(r['ms_baseline'], r['ms_triton']):>8s}")
    if rows:
        lines.append(f"copy bandwidth: {rows[0]['copy_gbps']:.0f} GB/s (times in ms)")
    return "\n".join(lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Print the check lines and the table; see the module docstring for the exit codes."""
    parser = argparse.ArgumentParser(prog="torchreid-privacy bench kernels", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256, help="batch size (default 256)")
    parser.add_argument("--quick", action="store_true", help="fewer timing repetitions")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile column")
    parser.add_argument("--dtype", default="float32", choices=list(DTYPES),
                        help="input precision (bfloat16/float16: what train.amp feeds the kernels)")
    opts = parser.parse_args([] if argv is None else list(argv))
    if not torch.cuda.is_available():
        print(NO_CUDA)
        return 1
    from torchreid_privacy.kernels import dispatch

    if not dispatch.HAS_TRITON or dispatch.INTERPRET:
        print("Triton kernels unavailable: install triton and unset TRITON_INTERPRET to benchmark them")
        return 1
    print(f"device: {torch.cuda.get_device_name()}")
    print(f"dtype: {opts.dtype}")
    rows = bench_kernels(opts.batch, opts.quick, compile=not opts.no_compile, log=print, dtype=DTYPES[opts.dtype])
    print(format_table(rows))
    return 0 if all(r["check"] == "PASS" for r in rows) else 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
