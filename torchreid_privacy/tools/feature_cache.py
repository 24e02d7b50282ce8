"""C's embeddings of image files, cached on disk by file content and model.

Why: embedding a 10,000-image gallery costs minutes of CPU, and a gallery changes rarely.
Entries are keyed by the sha256 of the file's bytes (a renamed or touched file is a hit, an edited
one a miss); the file name holds a fingerprint of the model's weights, normalization, input size
and image kind ("raw": the file as it is; "anonymized": G of it), so another checkpoint never reads
stale features. One ``.npy`` per (model, kind): a structured array of (sha256, feature), loaded with
``allow_pickle=False`` and replaced atomically, so a killed run leaves the previous cache intact.
"""
from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import numpy as np
import torch

from torchreid_privacy.utils import atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # bump when the image -> feature pipeline changes (resize, reader, publication)
KINDS = ("raw", "anonymized")


def content_digest(data: bytes) -> bytes:
    """The cache key of an image file: sha256 of its bytes."""
    return hashlib.sha256(data).digest()


def model_fingerprint(model: torch.nn.Module, kind: str) -> str:
    """16 hex digits that change whenever the features of ``kind`` images could change.

    Hashes every parameter and buffer of ``model`` (C, G, G_R: the checkpoint's weights), its
    normalization, input size, conventional desensitizer and publication channel, the image kind
    and the cache version.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    h = hashlib.sha256(f"v{CACHE_VERSION}|{kind}".encode())
    for attr in ("height", "width", "desensitizer", "desensitizer_params", "channel"):
        h.update(f"|{attr}={getattr(model, attr, None)!r}".encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"|{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    for name in ("mean", "std"):  # non-persistent buffers: not in state_dict
        if hasattr(model, name):
            h.update(getattr(model, name).detach().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class FeatureCache:
    """Features of one (model, kind) under ``folder``; ``get`` / ``put`` then ``save``."""

    def __init__(self, folder: Path, fingerprint: str, kind: str) -> None:
        self.path = Path(folder) / f"features-{fingerprint}-{kind}.npy"
        self._entries: Dict[bytes, np.ndarray] = {}
        self._dirty = False
        self._load()

    def _load(self) -> None:
        if not self.path.is_file():
            return
        try:
            arr = np.load(self.path, allow_pickle=False)
            self._entries = {k.tobytes(): v for k, v in zip(arr["sha256"], arr["feature"])}
        except (OSError, ValueError, KeyError, IndexError) as exc:
            log.warning("feature cache %s is unreadable (%s); recomputing it", self.path, exc)
            self._entries = {}

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, digests: Iterable[bytes]) -> List[np.ndarray | None]:
        return [self._entries.get(d) for d in digests]

    def put(self, items: Iterable[Tuple[bytes, np.ndarray]]) -> None:
        for digest, feature in items:
            self._entries[digest] = np.asarray(feature, dtype=np.float32)
            self._dirty = True

    def save(self) -> None:
        """Write the cache if it changed (atomic replace)."""
        if not self._dirty or not self._entries:
            return
        dim = len(next(iter(self._entries.values())))
        # digests as uint8 rows: numpy's "S32" would strip a digest's trailing zero bytes
        arr = np.empty(len(self._entries), dtype=[("sha256", np.uint8, (32,)), ("feature", np.float32, (dim,))])
        arr["sha256"] = np.frombuffer(b"".join(self._entries), dtype=np.uint8).reshape(-1, 32)
        arr["feature"] = np.stack(list(self._entries.values()))
        buf = io.BytesIO()
        np.save(buf, arr, allow_pickle=False)
        atomic.write_bytes(self.path, buf.getvalue())
        self._dirty = False
