"""Atomic file writes: a temp file beside the target, fsync'ed, then renamed over it.

Why one module: checkpoints, ``results.json``, ``attack.json`` and image outputs must never be
left half-written by a killed run; every writer in the package goes through here.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable, IO


def _fsync_dir(path: str) -> None:
    fd = os.open(os.path.dirname(os.path.abspath(path)) or ".", os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_with(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> str:
    """Call ``write(f)`` on a temp file opened for binary writing, then rename it to ``path``."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    _fsync_dir(path)
    return path


def write_bytes(path: str | os.PathLike, data: bytes) -> str:
    return write_with(path, lambda f: f.write(data))


def write_json(path: str | os.PathLike, obj: Any) -> str:
    """``obj`` as indented JSON (numpy/torch scalars written as floats)."""
    text = json.dumps(obj, indent=2, default=float)
    return write_bytes(path, text.encode("utf-8"))
