"""Create-only atomic writes: a new file appears whole or not at all, and never replaces another.

``torchreid_privacy.atomic`` renames over its target (checkpoints, reports are meant to be
replaced); image folders promise the opposite: an existing output is never overwritten. A killed
process leaves at most a hidden ``.NAME.*.tmp`` beside the target, never half an image or half a
recovered original, and a target that appears between the caller's check and the write is still
kept (a hard link is created atomically or fails). No fsync per file: folders hold many images,
and rename atomicity is what keeps them whole.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Union

PathLike = Union[str, "os.PathLike[str]"]
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

