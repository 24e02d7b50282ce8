"""kernels/ is the bottom layer: its files import only torch, triton, numpy, the standard
library and each other (plugins, metrics and the engine import the kernels, never the reverse)."""
import ast
import pathlib
import sys

import pytest

KERNELS = pathlib.Path(__file__).resolve().parents[2] / "kernels"
ALLOWED_ROOTS = {"torch", "triton", "numpy", "__future__"} | set(sys.stdlib_module_names)
PACKAGE = "torchreid_privacy.kernels"  # kernels/ as installed


def imports_outside_the_layer(source: str) -> list:
    """``(line, module)`` of every import (top level or nested) that leaves the kernels layer."""
    bad = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: within kernels/ (a level past the package is refused below)
                if node.level > 1:
                    bad.append((node.lineno, "." * node.level + (node.module or "")))
                continue
            names = [node.module]
        else:
            continue
        for name in names:
            if name.split(".")[0] not in ALLOWED_ROOTS and not (name == PACKAGE or name.startswith(PACKAGE + ".")):
                bad.append((node.lineno, name))
    return sorted(bad)


FILES = sorted(KERNELS.glob("*.py"))


@pytest.mark.no_triton
def test_there_are_kernel_files_to_check():
    assert {"dispatch.py", "mosaic.py", "ssim_psnr.py"} <= {f.name for f in FILES}


@pytest.mark.no_triton
@pytest.mark.parametrize("path", FILES, ids=[f.name for f in FILES])
def test_kernel_file_imports_only_torch_triton_numpy_stdlib_and_kernels(path):
    assert imports_outside_the_layer(path.read_text()) == [], (
        f"kernels/{path.name} imports outside torch/triton/numpy/stdlib/kernels; move the dependency "
        "into kernels/ or call the kernel from the layer above")


@pytest.mark.no_triton
def test_the_check_catches_upward_and_nested_imports():
    source = ("import os, torch\nfrom . import dispatch\nfrom .dispatch import tl\nimport numpy as np\n"
              "from torchreid_privacy.kernels.mosaic import mosaic\n"
              "def f():\n    from torchreid_privacy.plugins.losses import x\n"
              "from torchreid_privacy import registry\nimport PIL\nfrom .. import images\n")
    assert imports_outside_the_layer(source) == [(7, "torchreid_privacy.plugins.losses"),
                                                 (8, "torchreid_privacy"), (9, "PIL"), (10, "..")]
