"""torchreid-privacy: privacy-preserving person re-identification as torchreid plugins.

Train any torchreid backbone identity-invariant on raw images (O) and their anonymized
versions (P = G(O)), after Zhang, Ye & Yang, ACM MM 2022. The public API:

- ``load(checkpoint, key=None, device="cpu") -> PrivacyModel`` (``.anonymize``, ``.recover``, ``.features``);
- ``ImagePrivacyEngine(datamanager, model, optimizer=..., scheduler=..., privacy={...})``, a torchreid
  engine (``engine.run(save_dir=..., max_epoch=...)``);
- ``seal(p_bytes, original, name, key)`` / ``unseal(p_bytes, name, key)``: the key holder's exact recovery;
- ``desensitize(images, name, **params)``; the registries (``DESENSITIZERS``, ``ANONYMIZERS``, ...).

Importing the package registers its backbones (``tiny_reid``, ``resnet50_agw``) and datasets into
torchreid (``synthetic_market``, and the identity-disjoint validation splits ``<dataset>_val``
such as ``market1501_val``).
"""
import os as _os
import sys as _sys
from typing import Any

# oneDNN's AMX bf16 convolutions (torch 2.14, oneDNN 3.12) return NaN or garbage for some shapes
# (e.g. the quickstart U-Net's 32x128x4x2 * 128x128x4x4, stride 2), which breaks train.amp bf16
# on CPUs with AMX. Cap oneDNN at AVX512-BF16 before any convolution runs, unless the user chose.
_os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX512_CORE_BF16")


def _launched_as_cli() -> bool:
    """Whether this process is the ``torchreid-privacy`` console script or ``python -m torchreid_privacy``.

    The console script imports this package before the CLI's ``main`` (and its Ctrl-C handling)
    exists, and torch and torchreid take seconds to import: the script's path is ``sys.argv[0]``
    (pip strips ``-script.py``/``.exe`` only later); while ``python -m`` imports the package to find
    its ``__main__``, ``sys.argv[0]`` is ``"-m"``.
    """
    argv0 = str(_sys.argv[0]) if getattr(_sys, "argv", None) else ""
    name = _os.path.basename(argv0)
    for suffix in ("-script.pyw", "-script.py", ".exe"):
        name = name[: -len(suffix)] if name.endswith(suffix) else name
    return argv0 == "-m" or name == "torchreid-privacy"


try:  # torch and torchreid load here (seconds)
    from torchreid_privacy.registry import (  # noqa: F401
        ANONYMIZERS,
        DESENSITIZERS,
        DISCRIMINATORS,
        ENGINES,
        LOSSES,
    )
    from torchreid_privacy.desensitize import desensitize  # noqa: F401
    from torchreid_privacy.data import datasets as _datasets  # noqa: F401  (registers datasets into torchreid)
    from torchreid_privacy import plugins as _plugins  # noqa: F401  (registers backbones into torchreid)
except KeyboardInterrupt:
    if not _launched_as_cli():
        raise  # a program importing the package handles its own Ctrl-C
    # Ctrl-C in the command's first seconds: one line and exit code 130, as cli.main ends an interrupt
    print("torchreid-privacy: interrupted", file=_sys.stderr)
    raise SystemExit(130) from None

__version__ = "0.1.0"

_LAZY = {
    "load": ("torchreid_privacy.inference", "load"),
    "PrivacyModel": ("torchreid_privacy.inference", "PrivacyModel"),
    "ImagePrivacyEngine": ("torchreid_privacy.plugins.engine", "ImagePrivacyEngine"),
    "PrivacyEngine": ("torchreid_privacy.plugins.engine", "PrivacyEngine"),
    "seal": ("torchreid_privacy.sealing.payload", "seal"),
    "unseal": ("torchreid_privacy.sealing.payload", "unseal"),
}


def __getattr__(name: str) -> Any:
    """The heavier parts of the API are imported on first use."""
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'torchreid_privacy' has no attribute {name!r}")


__all__ = ["load", "PrivacyModel", "ImagePrivacyEngine", "PrivacyEngine", "seal", "unseal", "desensitize", "DESENSITIZERS",
           "ANONYMIZERS", "DISCRIMINATORS", "ENGINES", "LOSSES"]
