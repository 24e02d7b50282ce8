"""What sealing gives the key holder and refuses everyone else, measured on a folder of images.

Anonymizes the folder with sealing, then: the key holder unseals (every file must come back
byte-identical), a wrong key unseals (every file must be refused), and a tampered copy (one bit
of each P's image data flipped) unseals with the right key (every file must be refused). Also
the bytes the sealed payload adds to each P.
"""
from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any, Dict, Iterator

from torchreid_privacy.folders import process as folders_module
from torchreid_privacy.folders.process import list_images, process_folder, unseal_folder
from torchreid_privacy.inference import PrivacyModel


def _digests(root: Path) -> Dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in list_images(root)}


def _tamper(path: Path) -> None:
    """Flip one bit of P's image data (a JPEG's entropy-coded scan, a PNG's IDAT), payload untouched."""
    data = bytearray(path.read_bytes())
    sos = data.rfind(b"\xff\xda")
    if data[:2] == b"\xff\xd8" and sos >= 0:
        pos = sos + 2 + int.from_bytes(data[sos + 2:sos + 4], "big") + 1
    else:
        idat = data.find(b"IDAT")
        pos = idat + 8 if idat >= 0 else len(data) // 2
    data[pos] ^= 0x01
    path.write_bytes(bytes(data))


@contextlib.contextmanager
def _expected_failures() -> Iterator[None]:
    """Silence the folder tools' per-file warnings while a check provokes failures on purpose."""
    logger = logging.getLogger(folders_module.__name__)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def sealed_check(model: PrivacyModel, images: str, workdir: str, key: bytes, batch_size: int = 64) -> Dict[str, Any]:
    """``{exact, files, wrong_key_rejected, tamper_rejected, overhead_bytes_mean, beyond_original_bytes_mean}``
    for ``images``: the payload's bytes in each P (the sealed original itself included), and what
    sealing adds beyond the original's own bytes (header, nonce, tag, name, container framing).

    ``workdir`` must not exist yet (everything is written there; ``images`` is only read).
    """
    if os.path.exists(workdir):
        raise FileExistsError(f"{workdir} exists; the sealed check writes into a new folder")
    work = Path(workdir)
    sealed, plain = work / "protected-sealed", work / "protected"
    common = dict(height=model.height, width=model.width, batch_size=batch_size, device=str(model.device))
    process_folder(images, str(plain), model.anonymize, desc="anonymize", channel=model.channel, **common)
    process_folder(images, str(sealed), model.anonymize, desc="anonymize+seal", seal_key=key, channel=model.channel,
                   **common)
    files = list_images(Path(images))
    rel = [f.relative_to(images).with_suffix(model.channel.suffix) for f in files]  # P is written as published
    sizes = [(sealed / r).stat().st_size - (plain / r).stat().st_size for r in rel]
    beyond = [size - f.stat().st_size for size, f in zip(sizes, files)]  # what sealing adds to the original
    right = unseal_folder(str(sealed), str(work / "recovered"), key)
    originals = {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in files}
    with _expected_failures():  # every file is meant to fail here: count them, do not log each one
        wrong = unseal_folder(str(sealed), str(work / "wrong-key"), secrets.token_bytes(len(key)))
        tampered = work / "tampered"
        shutil.copytree(sealed, tampered)
        for p in list_images(tampered):
            _tamper(p)
        tamper = unseal_folder(str(tampered), str(work / "tampered-recovered"), key)
    return {
        "files": len(files),
        "exact": right.restored == len(files) and _digests(work / "recovered") == originals,
        "wrong_key_rejected": len(wrong.failed) == len(files) and wrong.restored == 0,
        "tamper_rejected": len(tamper.failed) == len(files) and tamper.restored == 0,
        "overhead_bytes_mean": sum(sizes) / max(1, len(sizes)),
        "beyond_original_bytes_mean": sum(beyond) / max(1, len(beyond)),
    }
