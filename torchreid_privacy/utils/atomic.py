"""Atomic file writes: a file appears whole or not at all.

Why one module: checkpoints, ``results.json``, ``attack.json`` and image outputs must never be
left half-written by a killed run; every writer in the package goes through here. Two kinds:

- :func:`write_with` / :func:`write_bytes` / :func:`write_json` replace their target (a temp file
  beside it, fsync'ed, renamed over it): checkpoints and reports are meant to be replaced;
- :func:`write_new` never replaces anything (image folders promise an existing output is kept):
  a hard link creates the target atomically or fails, so a file appearing between the caller's
  check and the write is still kept. No fsync per file: folders hold many images, and rename
  atomicity is what keeps them whole.
"""
from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import IO, Any, Callable, Union

PathLike = Union[str, "os.PathLike[str]"]


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


_counter = itertools.count()


def _temp_beside(path: Path, data: bytes) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{next(_counter)}.tmp")
    with open(tmp, "xb") as f:
        f.write(data)
    return tmp


def write_new(path: PathLike, data: bytes) -> Path:
    """Create ``path`` holding ``data``; FileExistsError (nothing written) if it exists already."""
    path = Path(path)
    if os.path.lexists(path):  # the common case, without touching the folder
        raise FileExistsError(f"{path} already exists; it is never overwritten")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temp_beside(path, data)
    try:
        try:
            os.link(tmp, path)  # atomic and exclusive: fails if path exists
        except FileExistsError:
            raise FileExistsError(f"{path} already exists; it is never overwritten") from None
        except OSError:  # a file system without hard links: check, then rename
            if os.path.lexists(path):
                raise FileExistsError(f"{path} already exists; it is never overwritten") from None
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path

