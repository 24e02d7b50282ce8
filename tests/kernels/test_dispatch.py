"""Backend choice: one table from (setting, device), the per-call override, and the clear errors."""
import importlib
import os
import subprocess
import sys

import pytest
import torch

from torchreid_privacy import kernels
from torchreid_privacy.kernels import dispatch

mosaic_module = importlib.import_module("torchreid_privacy.kernels.mosaic")
OP_NAMES = {"mosaic", "gaussian_blur", "add_noise", "bn_leaky_relu", "ssim_psnr", "batch_hard_triplet"}


@pytest.fixture
def launches(monkeypatch):
    """Counts launches of the mosaic kernel (the op's Triton path)."""
    calls = []
    real = mosaic_module.mosaic_launch
    monkeypatch.setattr(mosaic_module, "mosaic_launch", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.fixture
def compiled_triton(monkeypatch):
    """This process as a machine with Triton installed and the interpreter off."""
    monkeypatch.setattr(dispatch, "HAS_TRITON", True)
    monkeypatch.setattr(dispatch, "INTERPRET", False)


@pytest.mark.no_triton
def test_the_table_names_every_kernel_op():
    assert set(kernels.backend_report()) == OP_NAMES == set(kernels.OPS)


@pytest.mark.no_triton
def test_mode_comes_from_the_selection_then_env_then_auto(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert kernels.get_kernel_mode() == "auto"
    monkeypatch.setenv(dispatch.ENV_VAR, "Torch")
    assert kernels.get_kernel_mode() == "torch"
    kernels.select_backends("triton", "cpu")
    assert kernels.get_kernel_mode() == "triton"
    kernels.set_kernel_mode(None)
    assert kernels.get_kernel_mode() == "torch"


@pytest.mark.no_triton
def test_auto_picks_triton_for_a_cuda_run_only(compiled_triton, monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert set(kernels.select_backends("auto", torch.device("cuda")).values()) == {"triton"}
    assert set(kernels.select_backends("auto", "cuda:1").values()) == {"triton"}
    assert set(kernels.backend_report().values()) == {"triton"}
    assert set(kernels.select_backends("auto", "cpu").values()) == {"torch"}
    assert set(kernels.select_backends("auto", None).values()) == {"torch"}  # device unknown
    assert set(kernels.select_backends(None, "cuda").values()) == {"triton"}  # None: env, else auto
    assert set(kernels.select_backends("torch", "cuda").values()) == {"torch"}
    monkeypatch.setattr(dispatch, "INTERPRET", True)  # auto never routes real work through the interpreter
    assert set(kernels.select_backends("auto", "cuda").values()) == {"torch"}
    monkeypatch.setattr(dispatch, "HAS_TRITON", False)
    assert set(kernels.select_backends("auto", "cuda").values()) == {"torch"}


@pytest.mark.no_triton
def test_triton_on_a_cpu_run_needs_the_interpreter(compiled_triton, monkeypatch):
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.select_backends("triton", "cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.set_kernel_mode("triton")  # device unknown, and no GPU in this process
    monkeypatch.setattr(dispatch, "INTERPRET", True)
    assert set(kernels.select_backends("triton", "cpu").values()) == {"triton"}
    monkeypatch.setattr(dispatch, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match="not installed"):
        kernels.select_backends("triton", "cuda")
    with pytest.raises(RuntimeError, match="not installed"):
        kernels.mosaic(torch.rand(1, 3, 4, 4), 2, backend="triton")


@pytest.mark.no_triton
def test_bad_settings_name_the_setting(monkeypatch):
    with pytest.raises(ValueError, match="privacy.kernels"):
        kernels.select_backends("cuda", "cpu")
    with pytest.raises(ValueError, match="device"):
        kernels.select_backends("auto", "gpu0")
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=dispatch.ENV_VAR):
        kernels.select_backends()
    with pytest.raises(ValueError, match="backend"):
        kernels.mosaic(torch.rand(1, 3, 4, 4), 2, backend="gpu")


def test_ops_follow_the_table_not_the_tensor(launches):
    """The interpreter stands in for the GPU: with the table a CUDA run gets, CPU tensors take
    the Triton path; the per-call keyword still wins."""
    x = torch.rand(2, 3, 9, 7)
    kernels.select_backends("torch", "cpu")
    expected = kernels.mosaic(x, 3)
    assert launches == []
    kernels.select_backends("triton", "cpu")
    torch.testing.assert_close(kernels.mosaic(x, 3), expected, atol=0, rtol=0)
    assert launches == [1]
    kernels.mosaic(x, 3, backend="torch")
    assert launches == [1]


@pytest.mark.no_triton
def test_import_works_without_triton():
    """A machine without Triton imports the kernels, runs the torch paths, refuses 'triton'."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch\n"
        "from torchreid_privacy import kernels\n"
        "assert not kernels.HAS_TRITON\n"
        "assert set(kernels.select_backends('auto', 'cuda').values()) == {'torch'}\n"
        "x = torch.rand(1, 3, 8, 8)\n"
        "assert torch.equal(kernels.mosaic(x, 4), kernels.OPS['mosaic'].reference(x, 4))\n"
        "try:\n"
        "    kernels.mosaic(x, 4, backend='triton')\n"
        "except RuntimeError as e:\n"
        "    assert 'not installed' in str(e)\n"
        "else:\n"
        "    raise SystemExit('no error')\n"
        "print('ok')\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in (dispatch.ENV_VAR,)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
