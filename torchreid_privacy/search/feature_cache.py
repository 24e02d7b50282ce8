"""C's embeddings of image files, cached on disk by file content and model.

Why: embedding a 10,000-image gallery costs minutes of CPU, a million-image one hours, and a
gallery changes rarely. Entries are keyed by the sha256 of the file's bytes (a renamed or touched
file is a hit, an edited one a miss); the folder name holds a fingerprint of the model's weights,
normalization, input size, publication channel and image kind ("raw": the file as it is;
"anonymized": G of it), so another checkpoint never reads stale features.

Layout: ``features-FINGERPRINT-KIND/NNNNN.keys.npy`` (the shard's sha256 digests, uint8 rows) and
``NNNNN.feats.npy`` (its float32 features), plain ``.npy`` read with ``allow_pickle=False``;
torchrun ranks extracting one gallery write ``NNNNN-rRANK.*`` side by side.
Features are memory-mapped, not loaded: a gallery of millions costs its digests in memory, and
each feature is read when asked for. ``save`` appends what is new as one more shard (features
first, then keys, each written atomically: a shard counts once its keys exist), so adding images
to a gallery never rewrites what is there, and a killed run leaves every earlier shard intact.
Every shard is checked when the cache opens: both files load (plain ``.npy``, no pickle), the keys
are (rows, 32) uint8 digests, the features (rows, dim) float32 with the keys' rows and the other
shards' dim, every value finite. A damaged shard (a missing, empty or unreadable file, another
dtype, rows or dimensions that do not match, a NaN or infinite feature) is an error naming the
file and the shard to delete (its features are then recomputed), never silently mixed in: a cache
that changes ranks without a word is worse than one that stops.
The cache's folders and files are never written through a symbolic link (``atomic.safe_child``).
"""
from __future__ import annotations

import hashlib
import io
import logging
from pathlib import Path
from tokenize import TokenError
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from torchreid_privacy.utils import atomic

log = logging.getLogger(__name__)

CACHE_VERSION = 3  # bump when the image -> feature pipeline or the cache layout changes
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


class FeatureCacheError(ValueError):
    """A cache shard that cannot be used as it is."""


class FeatureCache:
    """Features of one (model, kind) under ``folder``; ``get`` / ``put`` then ``save``."""

    def __init__(self, folder: Path, fingerprint: str, kind: str) -> None:
        self.root = Path(folder)
        # a link here would send the shards elsewhere (an input folder): refused before any work
        self.path = atomic.safe_child(self.root, f"features-{fingerprint}-{kind}")
        self._where: Dict[bytes, Tuple[int, int]] = {}  # digest -> (shard, row)
        self._shards: List[np.ndarray] = []  # memory-mapped (rows, dim) float32
        self._pending: Dict[bytes, np.ndarray] = {}
        self.dim: Optional[int] = None
        self._load()

    def _fail(self, path: Path, why: str) -> FeatureCacheError:
        stem = path.name.split(".")[0]
        return FeatureCacheError(f"feature cache: {path} {why}; delete its shard ({stem}.keys.npy and "
                                 f"{stem}.feats.npy in {self.path}) and its features are recomputed")

    def _read(self, path: Path, mmap: bool) -> np.ndarray:
        """One ``.npy`` file of a shard; anything else (empty, truncated, pickled, ``.npz``) is an error naming it."""
        try:
            arr = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError, SyntaxError, TokenError, OverflowError, MemoryError) as exc:
            # an empty file is an EOFError; a damaged header fails numpy's literal parser (SyntaxError,
            # TokenError) or states a shape no memory holds (MemoryError, OverflowError)
            raise self._fail(path, f"is unreadable ({str(exc) or type(exc).__name__})") from None
        if not isinstance(arr, np.ndarray):  # np.load gives an NpzFile for a zip
            if hasattr(arr, "close"):
                arr.close()
            raise self._fail(path, "is unreadable (not a .npy array)")
        return arr

    def _check_finite(self, path: Path, feats: np.ndarray, block_bytes: int = 64 << 20) -> None:
        """Every feature finite: a NaN row would rank anywhere without a word. Block by block (the
        shard is memory-mapped: a large one is read once, never held in memory)."""
        rows = max(1, block_bytes // max(1, 4 * feats.shape[1]))
        for start in range(0, len(feats), rows):
            bad = ~np.isfinite(feats[start:start + rows]).all(axis=1)
            if bad.any():
                row = start + int(np.flatnonzero(bad)[0])
                raise self._fail(path, f"holds a NaN or infinite feature (row {row})")

    def _load(self) -> None:
        if not self.path.is_dir():
            return
        for keys_path in sorted(self.path.glob("*.keys.npy")):
            feats_path = keys_path.with_name(keys_path.name.replace(".keys.npy", ".feats.npy"))
            if not feats_path.is_file():
                raise self._fail(feats_path, "is missing (its shard's keys are there)")
            keys = self._read(keys_path, mmap=False)
            if keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != 32:
                raise self._fail(keys_path, f"holds {keys.dtype} {keys.shape}, not (rows, 32) uint8 digests")
            feats = self._read(feats_path, mmap=True)
            if feats.dtype != np.float32 or feats.ndim != 2 or len(feats) != len(keys) or feats.shape[1] < 1:
                raise self._fail(feats_path, f"holds {feats.dtype} {feats.shape}, not ({len(keys)}, dim) float32")
            if self.dim is not None and feats.shape[1] != self.dim:
                raise self._fail(feats_path, f"has {feats.shape[1]}-d features, the cache's others {self.dim}-d")
            self._check_finite(feats_path, feats)
            self.dim = int(feats.shape[1])
            shard = len(self._shards)
            self._shards.append(feats)
            for row, digest in enumerate(keys):
                self._where[digest.tobytes()] = (shard, row)

    def __len__(self) -> int:
        return len(self._where) + sum(d not in self._where for d in self._pending)

    @property
    def shards(self) -> int:
        return len(self._shards)

    def get(self, digests: Iterable[bytes]) -> List[np.ndarray | None]:
        out: List[np.ndarray | None] = []
        for d in digests:
            if d in self._pending:
                out.append(self._pending[d])
            elif d in self._where:
                shard, row = self._where[d]
                out.append(np.array(self._shards[shard][row]))
            else:
                out.append(None)
        return out

    def put(self, items: Iterable[Tuple[bytes, np.ndarray]]) -> None:
        for digest, feature in items:
            feature = np.asarray(feature, dtype=np.float32).reshape(-1)
            if self.dim is not None and len(feature) != self.dim:
                raise FeatureCacheError(f"feature cache: a {len(feature)}-d feature for {self.path}, whose features "
                                        f"are {self.dim}-d")
            self.dim = len(feature)
            if not np.isfinite(feature).all():  # never stored: the cache would refuse its shard when it opens
                log.warning("feature cache: a NaN or infinite feature is not cached (%s)", self.path)
                continue
            if digest not in self._where:
                self._pending[digest] = feature

    def save(self, writer: str = "") -> None:
        """Append what is new as one shard (features, then keys: both atomic).

        ``writer`` (e.g. ``r1`` for torchrun rank 1) goes into the shard's name,
        ``NNNNN-r1.feats.npy``: processes saving into one cache at once never pick the same name.
        """
        if not self._pending:
            return
        atomic.safe_child(self.root, self.path.name)  # no link planted since the cache opened
        self.path.mkdir(parents=True, exist_ok=True)
        numbers = [p.name.split(".")[0].split("-")[0] for p in self.path.glob("*.keys.npy")]
        taken = [int(n) for n in numbers if n.isdigit()]
        stem = f"{max(taken, default=-1) + 1:05d}" + (f"-{writer}" if writer else "")
        # digests as uint8 rows: numpy's "S32" would strip a digest's trailing zero bytes
        keys = np.frombuffer(b"".join(self._pending), dtype=np.uint8).reshape(-1, 32)
        feats = np.stack(list(self._pending.values())).astype(np.float32)
        for suffix, arr in ((".feats.npy", feats), (".keys.npy", keys)):
            buf = io.BytesIO()
            np.save(buf, arr, allow_pickle=False)
            atomic.write_bytes(atomic.safe_child(self.path, f"{stem}{suffix}"), buf.getvalue())
        shard = len(self._shards)
        self._shards.append(np.load(self.path / f"{stem}.feats.npy", mmap_mode="r", allow_pickle=False))
        for row, digest in enumerate(self._pending):
            self._where[digest] = (shard, row)
        self._pending = {}


def evaluation_hook(model: torch.nn.Module, folder: Path) -> Tuple[Dict[str, "FeatureCache"], Callable]:
    """Caches ``raw`` and ``anonymized`` under ``folder`` and an evaluator batch hook that fills them.

    Why: ``test --features DIR`` keeps the features the evaluation computed (C on O; C on P as
    published) in the same shards ``search --cache DIR`` reads, keyed by file content and model,
    so a later search of the test images (or a larger gallery holding them) embeds only what is
    new. Call ``save()`` on each cache after the evaluation.
    """
    caches = {kind: FeatureCache(folder, model_fingerprint(model, kind), kind) for kind in KINDS}

    def hook(split: str, data: Dict, images: Dict[str, torch.Tensor]) -> None:
        digests = [content_digest(Path(p).read_bytes()) for p in data["impath"]]
        for kind, name in (("raw", "f O"), ("anonymized", "f P")):
            caches[kind].put(zip(digests, images[name].detach().cpu().numpy()))

    return caches, hook
