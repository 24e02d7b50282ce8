"""Backend choice: process-wide mode, env variable, per-call override, and the clear errors."""
import importlib
import os
import subprocess
import sys

import pytest
import torch

from torchreid_privacy import kernels
from torchreid_privacy.kernels import dispatch

mosaic_module = importlib.import_module("torchreid_privacy.kernels.mosaic")


@pytest.fixture
def launches(monkeypatch):
    """Counts launches of the mosaic kernel (the op's Triton path)."""
    calls = []
    real = mosaic_module.mosaic_launch
    monkeypatch.setattr(mosaic_module, "mosaic_launch", lambda *a, **k: calls.append(1) or real(*a, **k))
    return calls


@pytest.mark.no_triton
def test_mode_comes_from_setter_then_env_then_auto(monkeypatch):
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert kernels.get_kernel_mode() == "auto"
    monkeypatch.setenv(dispatch.ENV_VAR, "Torch")
    assert kernels.get_kernel_mode() == "torch"
    kernels.set_kernel_mode("triton")
    assert kernels.get_kernel_mode() == "triton"
    kernels.set_kernel_mode(None)
    assert kernels.get_kernel_mode() == "torch"


@pytest.mark.no_triton
def test_bad_settings_name_the_setting(monkeypatch):
    with pytest.raises(ValueError, match="mode"):
        kernels.set_kernel_mode("cuda")
    monkeypatch.setenv(dispatch.ENV_VAR, "fast")
    with pytest.raises(ValueError, match=dispatch.ENV_VAR):
        kernels.get_kernel_mode()
    with pytest.raises(ValueError, match="backend"):
        kernels.resolve_backend("gpu", torch.zeros(1))


@pytest.mark.no_triton
def test_auto_uses_torch_on_cpu_and_the_interpreter_only_when_forced(monkeypatch):
    x = torch.zeros(1)
    monkeypatch.delenv(dispatch.ENV_VAR, raising=False)
    assert kernels.resolve_backend(None, x) == "torch"
    assert kernels.resolve_backend("torch", x) == "torch"
    monkeypatch.setattr(dispatch, "INTERPRET", True)
    monkeypatch.setattr(dispatch, "HAS_TRITON", True)
    assert kernels.resolve_backend(None, x) == "torch"  # auto never routes real work through the interpreter
    assert kernels.resolve_backend("triton", x) == "triton"
    kernels.set_kernel_mode("triton")
    assert kernels.resolve_backend(None, x) == "triton"
    assert kernels.resolve_backend("torch", x) == "torch"  # the per-call keyword wins


@pytest.mark.no_triton
def test_forcing_triton_on_cpu_without_the_interpreter_raises(monkeypatch):
    monkeypatch.setattr(dispatch, "INTERPRET", False)
    monkeypatch.setattr(dispatch, "HAS_TRITON", True)
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.resolve_backend("triton", torch.zeros(1))
    kernels.set_kernel_mode("triton")
    with pytest.raises(RuntimeError, match="TRITON_INTERPRET=1"):
        kernels.mosaic(torch.rand(1, 3, 4, 4), 2)
    monkeypatch.setattr(dispatch, "HAS_TRITON", False)
    with pytest.raises(RuntimeError, match="not installed"):
        kernels.resolve_backend("triton", torch.zeros(1))


def test_ops_follow_the_process_wide_mode(launches):
    x = torch.rand(2, 3, 9, 7)
    kernels.set_kernel_mode("torch")
    expected = kernels.mosaic(x, 3)
    assert launches == []
    kernels.set_kernel_mode("triton")
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
