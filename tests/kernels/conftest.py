"""Kernel tests run Triton's interpreter on the CPU unless a GPU is used with TRITON_INTERPRET=0.

TRITON_INTERPRET must be set before ``@triton.jit`` runs, i.e. before
``torchreid_privacy.kernels`` is imported (tests/conftest.py sets it too, for tests elsewhere
that import the kernels first). Tests in this directory are skipped where Triton cannot run
at all (not installed, or interpreter off without a GPU); those marked ``no_triton`` still run.
"""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from torchreid_privacy.kernels import dispatch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TRITON_RUNS = dispatch.HAS_TRITON and (dispatch.INTERPRET or torch.cuda.is_available())


def pytest_configure(config):
    config.addinivalue_line("markers", "no_triton: a kernel test that needs no Triton launch")


def pytest_collection_modifyitems(config, items):
    if TRITON_RUNS:
        return
    skip = pytest.mark.skip(reason="Triton cannot run here: install triton and set TRITON_INTERPRET=1 "
                                   "(or use a CUDA GPU)")
    for item in items:
        if str(item.fspath).startswith(HERE) and "no_triton" not in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _kernel_mode_reset():
    """Tests that change the process-wide kernel mode must not leak it to other tests."""
    yield
    dispatch.set_kernel_mode(None)
