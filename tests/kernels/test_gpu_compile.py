"""Every kernel compiles for an H100 (sm_90) -- checked on any machine, no GPU needed.

The interpreter runs kernels as numpy code, so it misses what only the compiler rejects
(types, layouts, constexpr misuse). Triton ships ptxas, so a child process with the
interpreter off compiles each kernel down to a cubin for one representative specialization
per variant (float32, half/bfloat16 inputs, each constexpr branch).
"""
import os
import subprocess
import sys
import textwrap

import pytest

from torchreid_privacy.kernels import dispatch

F32, F16, BF16, I32, I64, U8 = "*fp32", "*fp16", "*bf16", "*i32", "*i64", "*u8"
# every pointer argument name the kernels use; per entry only the data tensors' types change
POINTERS = {name: F32 for name in (
    "mean_ptr", "invstd_ptr", "scale_ptr", "bias_ptr", "weight_ptr",
    "rmean_ptr", "rvar_ptr", "mean_part_ptr", "m2_part_ptr", "dz_part_ptr", "dzx_part_ptr", "mean_dz_ptr",
    "mean_dzx_ptr", "taps_ptr", "ssim_part_ptr", "mse_part_ptr", "ap_ptr", "an_ptr", "wp_ptr", "wn_ptr",
    "grad_ptr")}
POINTERS.update(grey_ptr=U8, pid_ptr=I64, ap_idx_ptr=I32, an_idx_ptr=I32)
FLOATS = {name: "fp32" for name in ("sigma", "ratio", "scale", "slope", "momentum", "eps", "data_range", "c1", "c2")}
FLAT = {"INT64": False, "BLOCK": 1024}
WIDE = {"INT64": True, "BLOCK": 1024}


def _entry(module, kernel, dtype, tensors, constexprs, warps=4):
    """(module, kernel, pointer types, constexprs, num_warps) with ``tensors`` of ``dtype``."""
    return module, kernel, {**POINTERS, **{t: dtype for t in tensors}}, constexprs, warps


KERNELS = [
    _entry("mosaic", "_mosaic_kernel", F32, ("x_ptr", "out_ptr"), {"CELL": 24, **FLAT}),
    _entry("mosaic", "_mosaic_kernel", F16, ("x_ptr", "out_ptr"), {"CELL": 8, **WIDE}),
    _entry("add_noise", "_noise_kernel", F32, ("x_ptr", "out_ptr"), {"DENSE": True, **FLAT}),
    _entry("add_noise", "_noise_kernel", BF16, ("x_ptr", "out_ptr"), {"DENSE": False, **WIDE}),
    _entry("gaussian_blur", "_blur_rows_kernel", F32, ("x_ptr",), {"L": 11, "BLOCK_R": 16, "WP": 256}),
    _entry("gaussian_blur", "_blur_cols_kernel", F32, ("out_ptr",),
           {"L": 11, "WINDOW": True, "HP": 512, "BLOCK_W": 8}, 8),
    _entry("gaussian_blur", "_blur_cols_kernel", F16, ("out_ptr",),
           {"L": 29, "WINDOW": False, "HP": 512, "BLOCK_W": 8}, 8),
    _entry("bn_leaky_relu", "_stats_kernel", F32, ("x_ptr",), {"BLOCK_P": 4096, "BLOCK_C": 1}),
    _entry("bn_leaky_relu", "_stats_kernel", F16, ("x_ptr",), {"BLOCK_P": 64, "BLOCK_C": 64}),
    _entry("bn_leaky_relu", "_finalize_kernel", F32, ("x_ptr",),
           {"HAS_WEIGHT": True, "HAS_BIAS": True, "HAS_RUNNING": True, "BLOCK_P": 4096, "BLOCK_K": 128}),
    _entry("bn_leaky_relu", "_forward_kernel", F32, ("x_ptr", "y_ptr"),
           {"CPOS": 1, "DENSE": True, "HAS_BIAS": True, **FLAT}),
    _entry("bn_leaky_relu", "_forward_kernel", BF16, ("x_ptr", "y_ptr"),
           {"CPOS": 3, "DENSE": False, "HAS_BIAS": False, **WIDE}),
    _entry("bn_leaky_relu", "_grad_sums_kernel", F32, ("x_ptr", "dy_ptr"),
           {"HAS_BIAS": True, "BLOCK_P": 4096, "BLOCK_C": 1}),
    _entry("bn_leaky_relu", "_grad_input_kernel", F16, ("x_ptr", "dy_ptr", "dx_ptr"),
           {"CPOS": 1, "DENSE": False, "HAS_BIAS": True, "BATCH_STATS": True, **FLAT}),
    _entry("ssim_psnr", "_ssim_kernel", F32, ("a_ptr", "b_ptr"), {"PB": 1, "BW": 128}),
    _entry("ssim_psnr", "_ssim_kernel", F16, ("a_ptr", "b_ptr"), {"PB": 1, "BW": 64}),
    _entry("batch_hard_triplet", "_hardest_kernel", F32, ("f_ptr",), {"BM": 16, "BN": 16, "BD": 64}),
    _entry("batch_hard_triplet", "_hardest_kernel", F16, ("f_ptr",), {"BM": 16, "BN": 16, "BD": 64}),
    _entry("batch_hard_triplet", "_grad_kernel", F32, ("f_ptr",), {"BM": 16, "BN": 16, "BD": 64}),
]

SCRIPT = textwrap.dedent("""
    import importlib, sys
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource
    kernels, floats = {kernels!r}, {floats!r}
    failed = []
    for module, name, pointers, constexprs, warps in kernels:
        fn = getattr(importlib.import_module("torchreid_privacy.kernels." + module), name)
        signature = {{arg: "constexpr" if arg in constexprs else pointers.get(arg, floats.get(arg, "i32"))
                     for arg in fn.arg_names}}
        try:
            triton.compile(ASTSource(fn, signature, constexprs=constexprs), target=GPUTarget("cuda", 90, 32),
                           options={{"num_warps": warps}})
        except Exception as exc:
            failed.append(f"{{module}}.{{name}} {{constexprs}}: {{type(exc).__name__}}: {{exc}}")
    print("\\n".join(failed) or "ok")
""")


@pytest.mark.no_triton
@pytest.mark.skipif(not dispatch.HAS_TRITON, reason="Triton is not installed")
def test_every_kernel_compiles_for_sm90():
    probe = "import triton.backends.nvidia.compiler, triton.backends.compiler"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    if subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True).returncode:
        pytest.skip("Triton's NVIDIA backend is not installed")
    code = SCRIPT.format(kernels=KERNELS, floats=FLOATS)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok", done.stdout[-5000:]


def test_the_table_covers_every_kernel():
    import importlib
    import pkgutil

    from torchreid_privacy import kernels

    listed = {(module, kernel) for module, kernel, *_ in KERNELS}
    for info in pkgutil.iter_modules(kernels.__path__):
        mod = importlib.import_module(f"torchreid_privacy.kernels.{info.name}")
        jitted = {(info.name, n) for n, v in vars(mod).items()
                  if n.endswith("_kernel") and type(v).__name__ in ("JITFunction", "InterpretedFunction")}
        assert jitted <= listed, f"add {sorted(jitted - listed)} to KERNELS"
