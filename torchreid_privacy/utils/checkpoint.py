"""Atomic checkpoint files and ``--checkpoint`` resolution (file or run directory).

A checkpoint written by ``train`` is one dict: every net's state dict, optimizers,
schedulers, the supervision-generator snapshot, epoch, best metrics, RNG states and the
config. It is written to a temp file, fsync'ed and renamed, so a killed run never leaves a
half-written file in place of the last good one.
"""
from __future__ import annotations

import os
import random
import zipfile
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch

from torchreid_privacy import bridge

from torchreid_privacy.utils import atomic

CKPT_DIR = "checkpoints"
BEST, LAST = "best.pth", "last.pth"


def save_atomic(obj: Dict[str, Any], path: str) -> None:
    """``torch.save`` through :func:`atomic.write_with`: a killed run keeps the last good file."""
    atomic.write_with(path, lambda f: torch.save(obj, f))


def resolve(path: str, prefer: Tuple[str, ...] = (BEST, LAST), flag: str = "--checkpoint") -> str:
    """A checkpoint file, or a run directory -> the first of ``prefer`` found in it.

    ``test``/``anonymize`` want the best checkpoint; ``train --resume`` wants the last one.
    """
    if os.path.isdir(path):
        for name in prefer:
            for cand in (os.path.join(path, CKPT_DIR, name), os.path.join(path, name)):
                if os.path.isfile(cand):
                    return cand
        raise bridge.CheckpointError(f"{flag}: no {' or '.join(prefer)} under run directory {path}")
    if not os.path.isfile(path):
        raise bridge.CheckpointError(f"{flag}: no such file or directory: {path}")
    return path


def load(path: str, need: tuple = (), prefer: Tuple[str, ...] = (BEST, LAST),
         flag: str = "--checkpoint") -> Dict[str, Any]:
    """Load (weights_only) and check the nets named in ``need`` are present."""
    path = resolve(path, prefer, flag)
    try:
        ckpt = bridge.load_checkpoint(path)
    except bridge.CheckpointError as exc:
        if not zipfile.is_zipfile(path):  # torch.save writes a zip; an incomplete one has no directory
            raise bridge.CheckpointError(
                f"cannot load checkpoint {path}: the file is truncated or corrupted "
                f"({os.path.getsize(path)} bytes, not a complete torch archive){_others(path)}") from exc
        raise
    nets = ckpt.get("models")
    if not isinstance(nets, dict):
        raise bridge.CheckpointError(f"{path}: not a torchreid-privacy checkpoint (no 'models')")
    missing = [n for n in need if n not in nets]
    if missing:
        raise bridge.CheckpointError(
            f"{path}: checkpoint lacks {', '.join(missing)} (has {', '.join(sorted(nets))}); "
            f"was it trained in baseline mode?")
    return ckpt


def _others(path: str) -> str:
    """Hint naming the other checkpoints beside a damaged one (they were written separately)."""
    folder = os.path.dirname(os.path.abspath(path))
    others = [n for n in (LAST, BEST) if os.path.isfile(os.path.join(folder, n))
              and not os.path.samefile(os.path.join(folder, n), path)]
    return f"; {' and '.join(others)} in that folder may still be good" if others else ""


def load_state(net: torch.nn.Module, state: Dict[str, torch.Tensor], what: str) -> None:
    """``load_state_dict`` with a one-line message listing mismatched keys/shapes."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shape = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or unexpected or shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shape)):
            if keys:
                more = f" (+{len(keys) - 5} more)" if len(keys) > 5 else ""
                parts.append(f"{label}: {', '.join(keys[:5])}{more}")
        raise bridge.CheckpointError(f"{what}: checkpoint does not fit this architecture; {'; '.join(parts)}")
    net.load_state_dict(state)


def rng_state() -> Dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": _np_state(), "python": _py_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _np_state() -> Dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def _py_state() -> Dict[str, Any]:
    version, internal, gauss = random.getstate()
    return {"version": version, "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss": gauss}


def set_rng_state(state: Optional[Dict[str, Any]]) -> None:
    if not state:
        return
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(int(v) for v in p["internal"].tolist()), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
