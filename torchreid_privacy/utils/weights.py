"""Backbone weights for ``--weights`` / ``model.load_weights``: a local file or a URL.

Why a module of its own: torchreid's ``load_pretrained_weights`` unpickles with whatever
``torch.load`` defaults to and its model zoo lives on Google Drive. Here a Google Drive
link is fetched with ``gdown`` (other http(s) URLs with ``torch.hub``) into a cache folder,
only when asked (never at import), an optional sha256 is checked before anything is
unpickled, and the file is read with ``weights_only=True`` (:func:`bridge.load_checkpoint`),
so a code-executing pickle is refused.

Example::

    path = fetch("https://drive.google.com/file/d/<id>/view", sha256="<64 hex digits>")
    load_backbone_weights(model, path)   # matching names and shapes; the rest is reported
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple
from urllib.parse import urlparse

import torch

from torchreid_privacy import bridge

log = logging.getLogger(__name__)

CACHE_ENV = "TORCHREID_PRIVACY_CACHE"
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")


def cache_dir() -> Path:
    """``$TORCHREID_PRIVACY_CACHE/weights`` or ``~/.cache/torchreid_privacy/weights``."""
    base = os.environ.get(CACHE_ENV) or os.path.join(os.path.expanduser("~"), ".cache", "torchreid_privacy")
    return Path(base) / "weights"


def is_url(spec: str) -> bool:
    return urlparse(spec).scheme in ("http", "https")


def sha256_of(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_sha256(path: str | os.PathLike, expected: str) -> None:
    """Raise ``ValueError`` naming the file and both hashes when they differ."""
    if not _HEX64.match(expected or ""):
        raise ValueError(f"--sha256: expected 64 hexadecimal digits, got {expected!r}")
    actual = sha256_of(path)
    if actual != expected.lower():
        raise ValueError(f"--sha256: {path} has sha256 {actual}, expected {expected.lower()}")


def fetch(spec: str, sha256: Optional[str] = None, cache: Optional[str | os.PathLike] = None,
          what: str = "--weights") -> str:
    """Local path of the weights ``spec`` names (downloading a URL once into ``cache``).

    A local path is used as it is; a downloaded file that fails the sha256 check is removed
    from the cache (a re-run downloads it again), a local one is never touched.
    """
    if not spec:
        raise ValueError(f"{what}: empty path or URL")
    if not is_url(spec):
        path = os.path.expanduser(spec)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{what}: no such file: {spec}")
        if sha256:
            check_sha256(path, sha256)
        return path
    path = _download(spec, Path(cache) if cache else cache_dir(), what)
    if sha256:
        try:
            check_sha256(path, sha256)
        except ValueError:
            os.remove(path)
            raise
    return path


def _download(url: str, folder: Path, what: str) -> str:
    from gdown.parse_url import parse_url

    folder.mkdir(parents=True, exist_ok=True)
    drive_id = parse_url(url)[0] if "google.com" in urlparse(url).netloc else None
    name = f"gdrive-{drive_id}" if drive_id else (
        f"{hashlib.sha256(url.encode()).hexdigest()[:12]}-{os.path.basename(urlparse(url).path) or 'weights'}")
    dest = folder / name
    if dest.is_file():
        return str(dest)
    tmp = folder / f".{name}.part-{os.getpid()}"
    try:
        if drive_id:
            import gdown

            gdown.download(id=drive_id, output=str(tmp), quiet=False)
        else:
            torch.hub.download_url_to_file(url, str(tmp), progress=True)
        if not tmp.is_file():
            raise OSError("nothing was downloaded")
        os.replace(tmp, dest)
    except Exception as exc:  # gdown and urllib raise many types; the user needs the URL and why
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OSError(f"{what}: cannot download {url}: {first}") from exc
    finally:
        if tmp.exists():
            tmp.unlink()
    return str(dest)


def _state_dict(ckpt: Dict, path: str, what: str) -> Dict[str, torch.Tensor]:
    """The backbone's tensors from a torchreid checkpoint, a plain state dict or a ``train`` checkpoint."""
    if isinstance(ckpt.get("models"), dict) and "model" in ckpt["models"]:
        ckpt = ckpt["models"]["model"]  # a torchreid-privacy checkpoint: its ReID backbone C
    elif isinstance(ckpt.get("state_dict"), dict):
        ckpt = ckpt["state_dict"]
    state = {k[7:] if k.startswith("module.") else k: v for k, v in ckpt.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ValueError(f"{what}: {path} holds no tensors (expected a state dict or a torchreid checkpoint)")
    return state


def load_backbone_weights(model: torch.nn.Module, path: str, what: str = "--weights",
                          features_only: bool = False) -> Tuple[List[str], List[str]]:
    """Load the tensors of ``path`` whose name and shape match ``model`` (torchreid's rule).

    Returns (matched, discarded) names. A classifier sized for another number of identities
    is discarded, as in torchreid, with a warning; with ``features_only`` (the caller uses the
    features, not the logits: a third party's model scored on other identities) a discarded
    classifier is expected and only logged. No match at all is an error naming the file.
    """
    state = _state_dict(bridge.load_checkpoint(path), path, what)
    own = model.state_dict()
    matched = [k for k, v in state.items() if k in own and own[k].shape == v.shape]
    discarded = [k for k in state if k not in matched]
    if not matched:
        sample = ", ".join(list(state)[:3])
        raise ValueError(f"{what}: no tensor of {path} fits the model {type(model).__name__} "
                         f"(its names start: {sample}); wrong model.name?")
    own.update({k: state[k] for k in matched})
    model.load_state_dict(own)
    log.info("loaded %d tensors from %s", len(matched), path)
    if discarded:
        expected = features_only and all(k.startswith("classifier.") for k in discarded)
        more = f" (+{len(discarded) - 5} more)" if len(discarded) > 5 else ""
        (log.info if expected else log.warning)("%s: %d tensor(s) of %s do not fit and were skipped: %s%s", what,
                                                len(discarded), path, ", ".join(discarded[:5]), more)
    return matched, discarded
