"""Secret keys for sealed and keyed recovery: 256 random bits in a file only its owner can read.

``torchreid-privacy keygen --output PATH`` writes 64 hex digits to a new file created with
mode 0600 (``O_CREAT | O_EXCL``: an existing file is never overwritten). Key files written
before sealing existed hold 128 bits (32 hex digits); they still read and work everywhere.

One key file serves two uses, separated by domain strings so neither reveals the other:
- keyed decoder: ``key_planes``, a code of ``key_channels`` +-1 bits derived with SHAKE-256 of
  ``_DOMAIN || key`` (a standard extendable-output hash, identical on every platform and torch
  version), one constant plane per bit;
- sealing (``torchreid_privacy.sealing.payload``): an AES-256-GCM key derived with HKDF-SHA256 under its own
  ``info`` string.
The key is never stored in configs, logs, results or checkpoints; only its owner's file holds it.
"""
from __future__ import annotations

import hashlib
import os
import secrets
import stat

import torch

KEY_BYTES = 32  # 256 bits: what keygen writes
LEGACY_KEY_BYTES = 16  # 128 bits: key files written before sealing existed
KEY_SIZES = (KEY_BYTES, LEGACY_KEY_BYTES)
_DOMAIN = b"torchreid-privacy/key-planes/v1"
_MAX_KEY_FILE = 256  # a key file is 65 bytes; anything much longer is not one



class KeyFileError(ValueError):
    """A key file is missing, unreadable or not a 256-bit (or legacy 128-bit) key; the message names it."""


def generate_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def check_key(key: bytes, what: str = "key") -> bytes:
    """``key`` itself if it is 32 (or legacy 16) bytes; a clear error naming ``what`` otherwise."""
    if not isinstance(key, (bytes, bytearray)):
        raise KeyFileError(f"{what}: expected bytes, got {type(key).__name__}")
    if len(key) not in KEY_SIZES:
        raise KeyFileError(f"{what}: expected {KEY_BYTES} bytes (or legacy {LEGACY_KEY_BYTES}), got {len(key)}")
    return bytes(key)


def write_key_file(path: str, key: bytes | None = None) -> str:
    """Create ``path`` holding a new (or the given) key, readable by its owner only.

    Refuses to touch an existing file: a lost key means unrecoverable images.
    """
    key = generate_key() if key is None else check_key(key)
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise KeyFileError(f"--output: folder {parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"--output: {path} already exists; keygen never overwrites a key file") from None
    try:
        os.fchmod(fd, 0o600)  # whatever the umask says
        os.write(fd, (key.hex() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)
    return path


def read_key_file(path: str, flag: str = "--key-file") -> bytes:
    """The key in ``path``; a clear error naming ``flag`` and the path otherwise."""
    if not path:
        raise KeyFileError(f"{flag}: required (create one with 'torchreid-privacy keygen --output PATH')")
    if not os.path.isfile(path):
        raise KeyFileError(f"{flag}: no such key file: {path}")
    mode = stat.S_IMODE(os.stat(path).st_mode)
    if mode & 0o077:  # a key others can read protects nothing: refuse it rather than warn
        raise KeyFileError(f"{flag}: {path} is accessible by others (mode {mode:o}); a secret key must be "
                           f"readable by its owner only: chmod 600 {path}")
    try:
        with open(path, "rb") as f:
            raw = f.read(_MAX_KEY_FILE + 1)
    except OSError as exc:
        raise KeyFileError(f"{flag}: cannot read {path} ({exc.strerror})") from None
    text = raw.decode("ascii", errors="replace").strip()  # whitespace around the digits only, nothing else
    if len(raw) > _MAX_KEY_FILE or len(text) not in (2 * n for n in KEY_SIZES) or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise KeyFileError(f"{flag}: {path} is not a 256-bit key (expected exactly {2 * KEY_BYTES} hex digits, "
                           f"or {2 * LEGACY_KEY_BYTES} for a legacy 128-bit key, and nothing else, "
                           "as written by 'torchreid-privacy keygen')")
    return bytes.fromhex(text)


def key_code(key: bytes, channels: int) -> torch.Tensor:
    """(channels,) float tensor of +-1: the key stretched by SHAKE-256 to ``channels`` bits.

    The same formula for 256-bit and legacy 128-bit keys, so a legacy key keeps its code.
    """
    key = check_key(key)
    stream = hashlib.shake_256(_DOMAIN + key).digest((channels + 7) // 8)
    bits = torch.frombuffer(bytearray(stream), dtype=torch.uint8)
    bits = ((bits.unsqueeze(1) >> torch.arange(8, dtype=torch.uint8)) & 1).flatten()[:channels]
    return bits.float() * 2 - 1


def key_planes(key: bytes, channels: int, height: int, width: int) -> torch.Tensor:
    """(channels, height, width): one constant +-1 plane per code bit.

    Constant planes make "is this the key?" a linear test the decoder's first convolution can
    learn (the right code scores ``channels``, a random one about 0 +- sqrt(channels)); a
    spatial pseudo-random pattern would have to be memorized pixel by pixel.
    """
    return key_code(key, channels).view(channels, 1, 1).expand(channels, height, width).contiguous()


def random_key_planes(batch: int, channels: int, height: int, width: int,
                      generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """(batch, channels, height, width) planes of independent random codes: wrong keys."""
    bits = torch.randint(0, 2, (batch, channels, 1, 1), generator=generator, device=device)
    return (bits.float() * 2 - 1).expand(batch, channels, height, width)
