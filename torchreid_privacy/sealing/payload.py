"""Sealed recovery: the original image's exact bytes travel with P, encrypted under the user's key.

A learned decoder G_R(P) is imitated by anyone holding leaked (O, P) pairs; a sealed payload is
not: without the key it is AES-256-GCM ciphertext, with the key it gives back O's file byte for
byte, and any change (wrong key, tampered or truncated payload, a payload copied onto another
image, a renamed image, one modified pixel of P) fails loudly with "authentication failed".

Payload (version 2), 33 bytes + the plaintext::

    magic "TRPS" (4) | version 2 (1) | nonce (12, fresh from os.urandom per seal) | AES-256-GCM ciphertext + tag (16)

    plaintext = u16 length | original's name (UTF-8: a file name, or a relative path under
                neutral names) | u64 original's size | original file's bytes | zero padding

- Padding: the plaintext is padded to its size bucket (1 KiB steps, and steps of 1/8 of the size
  above 8 KiB), so P's size tells an observer the original's size only to its bucket, not exactly.
- Version 1 payloads (no size field, no padding, a plain name) still unseal.

- AEAD key: HKDF-SHA256(key file's key, info ``_HKDF_INFO``): a domain distinct from the keyed
  decoder's SHAKE-256 code, so one key file serves both without relating them. 256-bit and legacy
  128-bit keys both work.
- Associated data (authenticated, not stored) = ``_AD_DOMAIN`` | magic+version | u16 length |
  P's relative name (POSIX style, e.g. ``cam1/0001_c1.png``) | SHA-256 of P's canonical content
  (``sealing_containers``: PNG pixel data and chunks, JPEG tables and entropy-coded scans, or the whole
  file for a sidecar). Hence renaming P or moving its payload onto another image fails.
- The original's name is inside the ciphertext: recovery restores it (and so its format) without
  showing it to anyone else; P's name stays bound by the associated data.
- Container: a PNG chunk or JPEG APP11 segments inside P, else a sidecar file ``NAME.sealed``
  beside P (``sealing_containers``). A payload is never dropped: with no place for it,
  ``CannotCarryPayload``.
- Sealing an image twice is refused (``AlreadySealed``): a second payload would either replace the
  first (its original silently lost) or sit beside it (two payloads, which one is P's?).

AES-GCM with random 96-bit nonces is safe for up to 2**32 seals under one key (NIST SP 800-38D).
"""
from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Optional, Union

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from torchreid_privacy.sealing import containers
from torchreid_privacy.utils import atomic
from torchreid_privacy.utils.atomic import write_new
from torchreid_privacy.sealing.keys import KeyFileError, check_key

MAGIC = b"TRPS"
VERSION = 2
READS = (1, 2)  # payload versions this module opens
NONCE_BYTES = 12
TAG_BYTES = 16
_HEADER = struct.Struct(">4sB12s")
HEADER_BYTES = _HEADER.size  # 17
_HKDF_INFO = b"torchreid-privacy/seal/v1/aes-256-gcm"
_NAME_INFO = b"torchreid-privacy/seal/v2/neutral-name"
_AD_DOMAIN = b"torchreid-privacy/seal/v1/associated-data\x00"
SIDECAR_SUFFIX = ".sealed"
# AES-GCM in `cryptography` encrypts at most 2**31 - 1 bytes; padding adds up to 1/8 above 8 KiB
MAX_ORIGINAL_BYTES = 1_800_000_000
_EMBEDDED = {"png": "png-chunk", "jpeg": "jpeg-app11"}
_FORMATS = {"PNG": "png", "JPEG": "jpeg", "JPG": "jpeg", "MPO": "jpeg"}

PathLike = Union[str, "os.PathLike[str]"]

__all__ = ["SealError", "AuthenticationFailed", "NotSealed", "AlreadySealed", "CannotCarryPayload",
           "SealedImage", "Recovered", "check_seal_key", "seal", "unseal", "unseal_record", "is_sealed", "sidecar_path",
           "seal_file", "unseal_file", "payload_overhead", "SIDECAR_SUFFIX"]


class SealError(ValueError):
    """Sealing or unsealing failed; the one-line message names the file."""


class AuthenticationFailed(SealError):
    """Wrong key, or the payload, P's content or P's name changed since sealing."""


class NotSealed(SealError):
    """P carries no payload (no chunk, no APP11 segment, no sidecar)."""


class AlreadySealed(SealError):
    """P already carries a payload; sealing twice is refused."""


class CannotCarryPayload(SealError):
    """Neither P's file nor a sidecar can take the payload."""


@dataclass(frozen=True)
class SealedImage:
    """What to write: ``image`` (P with the payload embedded, or P unchanged) and ``sidecar``
    (the payload for ``NAME.sealed``, or None)."""

    image: bytes
    sidecar: Optional[bytes]
    container: str  # "png-chunk" | "jpeg-app11" | "sidecar"
    payload_bytes: int


@dataclass(frozen=True)
class Recovered:
    """An unsealed original: its exact bytes and its file name (no folders) at sealing time."""

    data: bytes
    original_name: str


# ------------------------------------------------------------------------------------------ helpers

def check_seal_key(key: bytes) -> bytes:
    """``key`` if it is a 256-bit (or legacy 128-bit) key; ``SealError`` naming ``key`` otherwise."""
    try:
        return check_key(key)
    except KeyFileError as exc:
        raise SealError(str(exc)) from None


def aead_for(key: bytes) -> AESGCM:
    key = check_seal_key(key)
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_HKDF_INFO)
    return AESGCM(hkdf.derive(key))


def _relative_name(name: str) -> str:
    """P's name as a normalized POSIX relative path; absolute or ``..`` names are refused."""
    if not isinstance(name, str) or not name.strip():
        raise SealError(f"name: expected P's relative file name, got {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or str(path) == ".":
        raise SealError(f"name: {name!r} must be a relative path inside the folder (no '..', not absolute)")
    if len(_utf8(str(path), "name")) > 0xFFFF:
        raise SealError(f"name: {name[:40]!r}... is longer than 65535 bytes")
    return str(path)


def _utf8(text: str, what: str) -> bytes:
    """``text`` as UTF-8; a file name that is not valid UTF-8 (legal on Linux) is a SealError naming it."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise SealError(f"{what}: {text.encode('utf-8', 'backslashreplace').decode('ascii', 'replace')!r} is not "
                        "valid UTF-8; rename it (sealed names are stored as UTF-8)") from None


_SEPARATORS = {"/", "\x00", os.sep} | ({os.altsep} if os.altsep else set())


def _original_name(name: str, what: str = "original_name") -> str:
    """The original's name as stored: a plain file name, or (neutral names) a relative path."""
    if isinstance(name, str) and "/" in name:
        try:
            return _relative_name(name)
        except SealError:
            raise SealError(f"{what}: {name!r} must be a relative path (no '..', not absolute)") from None
    return _plain_name(name, what)


def _plain_name(name: str, what: str = "original_name") -> str:
    if not isinstance(name, str) or name in ("", ".", "..") or any(c in name for c in _SEPARATORS):
        raise SealError(f"{what}: expected a plain file name (no folders), got {name!r}")
    _utf8(name, what)
    return name


def _associated_data(name: str, digest: bytes, version: int = VERSION) -> bytes:
    encoded = name.encode("utf-8")
    return _AD_DOMAIN + MAGIC + bytes((version,)) + struct.pack(">H", len(encoded)) + encoded + digest


def padded_size(n: int) -> int:
    """``n`` rounded up to its size bucket: 8 buckets per doubling, steps of at least 1 KiB."""
    step = max(1024, 1 << max(0, n.bit_length() - 3))
    return -(-n // step) * step


def neutral_name(key: bytes, rel: str) -> str:
    """A name for P that reveals nothing of the input's (Market-style names carry the person and the
    camera): 20 hex digits of HMAC-SHA256 under a key derived from the seal key, stable across runs
    so a re-run still skips what exists. The input's relative name travels inside the payload."""
    from cryptography.hazmat.primitives import hmac

    mac_key = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=_NAME_INFO).derive(check_seal_key(key))
    h = hmac.HMAC(mac_key, hashes.SHA256())
    h.update(_utf8(rel, "name"))
    return h.finalize().hex()[:20]


def _container(p_bytes: bytes, fmt: Optional[str], label: str) -> str:
    """``png``/``jpeg``/``other`` for P, checking an explicit ``fmt`` against the bytes."""
    kind = containers.sniff(p_bytes)
    if fmt is not None:
        expected = _FORMATS.get(fmt.upper().lstrip("."), "other")
        if expected != kind:
            found = kind.upper() if kind != "other" else "neither PNG nor JPEG"
            raise SealError(f"{label}: fmt={fmt!r} but the bytes are {found}")
    return kind


# ---------------------------------------------------------------------------------------- bytes API

def is_sealed(p_bytes: bytes, sidecar_exists: bool = False) -> bool:
    """Whether P carries a payload: embedded in its file, or in a sidecar the caller found."""
    return bool(sidecar_exists) or containers.has_embedded_payload(p_bytes)


def seal(p_bytes: bytes, original: bytes, name: str, key: bytes, fmt: Optional[str] = None,
         original_name: Optional[str] = None, allow_sidecar: bool = True) -> SealedImage:
    """Seal ``original`` (the raw file's exact bytes) to P.

    ``name`` is P's relative name (POSIX style) as it will be stored: renaming P later makes the
    payload fail to open. ``original_name`` (default: ``name``'s last part) is restored by
    unsealing. ``fmt`` (PIL format name) is checked against the bytes when given. Raises
    ``AlreadySealed`` if P already carries an embedded payload (a sidecar is the file API's check),
    ``CannotCarryPayload`` if the payload fits nowhere (with ``allow_sidecar=False`` and a format
    without a container, or one too large for it).
    """
    return _seal(p_bytes, original, name, key, fmt, original_name, allow_sidecar, label=name)


def _seal(p_bytes: bytes, original: bytes, name: str, key: bytes, fmt: Optional[str],
          original_name: Optional[str], allow_sidecar: bool, label: str) -> SealedImage:
    name = _relative_name(name)
    original_name = _original_name(PurePosixPath(name).name if original_name is None else original_name)
    aead = aead_for(key)
    kind = _container(p_bytes, fmt, label)
    if containers.has_embedded_payload(p_bytes):
        raise AlreadySealed(f"{label}: already sealed (it carries a payload); sealing twice is refused")
    encoded = original_name.encode("utf-8")
    if len(encoded) > 0xFFFF:
        raise SealError(f"original_name: {len(encoded)} bytes, at most 65535")
    if len(original) > MAX_ORIGINAL_BYTES:  # AES-GCM in `cryptography` takes at most 2**31 - 1 bytes
        raise SealError(f"{label}: the original is {len(original)} bytes; at most {MAX_ORIGINAL_BYTES} can be sealed")
    plaintext = struct.pack(">H", len(encoded)) + encoded + struct.pack(">Q", len(original))
    plaintext += bytes(original)
    plaintext += bytes(padded_size(len(plaintext)) - len(plaintext))
    size = HEADER_BYTES + len(plaintext) + TAG_BYTES
    embedded = size <= containers.max_embedded(kind)
    if not embedded and not allow_sidecar:
        why = "its format carries no payload" if kind == "other" else f"a {size}-byte payload exceeds its container"
        raise CannotCarryPayload(f"{label}: cannot carry the sealed payload ({why}) and no sidecar is allowed")
    try:
        digest = containers.canonical_digest(p_bytes, embedded)
    except containers.MalformedContainer as exc:
        raise SealError(f"{label}: cannot seal a damaged image ({exc})") from None
    nonce = os.urandom(NONCE_BYTES)
    header = _HEADER.pack(MAGIC, VERSION, nonce)
    payload = header + aead.encrypt(nonce, plaintext, _associated_data(name, digest))
    if not embedded:
        return SealedImage(bytes(p_bytes), payload, "sidecar", len(payload))
    return SealedImage(containers.embed(p_bytes, payload), None, _EMBEDDED[kind], len(payload))


def unseal_record(p_bytes: bytes, name: str, key: bytes, sidecar: Optional[bytes] = None) -> Recovered:
    """The original's exact bytes and file name, from P (and its sidecar's bytes, if any).

    Raises ``NotSealed`` without a payload, ``AuthenticationFailed`` for a wrong key or any change
    to the payload, to P's content or to P's ``name`` since sealing.
    """
    return _unseal(p_bytes, name, key, sidecar, label=name)


def _unseal(p_bytes: bytes, name: str, key: bytes, sidecar: Optional[bytes], label: str) -> Recovered:
    name = _relative_name(name)
    aead = aead_for(key)
    failed = f"{label}: authentication failed"
    try:
        embedded = containers.embedded_payload(p_bytes)
    except containers.MalformedContainer as exc:
        raise AuthenticationFailed(f"{failed} ({exc})") from None
    if embedded is not None and sidecar is not None:
        raise SealError(f"{label}: carries a payload both inside the file and in a {SIDECAR_SUFFIX} sidecar; "
                        "remove the stray sidecar")
    payload = embedded if embedded is not None else sidecar
    if payload is None:
        raise NotSealed(f"{label}: not sealed (no embedded payload and no {SIDECAR_SUFFIX} sidecar)")
    if len(payload) < HEADER_BYTES + TAG_BYTES:
        raise AuthenticationFailed(f"{failed} (payload truncated to {len(payload)} bytes)")
    magic, version, nonce = _HEADER.unpack_from(payload)
    if magic != MAGIC:
        raise AuthenticationFailed(f"{failed} (not a torchreid-privacy payload)")
    if version not in READS:
        raise AuthenticationFailed(f"{failed} (payload version {version}: damaged, or sealed by a newer "
                                   f"torchreid-privacy; this one reads versions {', '.join(map(str, READS))})")
    try:
        digest = containers.canonical_digest(p_bytes, embedded is not None)
    except containers.MalformedContainer as exc:
        raise AuthenticationFailed(f"{failed} ({exc})") from None
    try:
        plaintext = aead.decrypt(nonce, payload[HEADER_BYTES:], _associated_data(name, digest, version))
    except InvalidTag:
        raise AuthenticationFailed(f"{failed} (wrong key, or the image, its name or its payload changed)") from None
    try:  # authenticated, so only a sealer of another format (or a bug) gets here with a short plaintext
        n, = struct.unpack_from(">H", plaintext)
        original_name = plaintext[2:2 + n].decode("utf-8")
        if version == 1:
            return Recovered(plaintext[2 + n:], _plain_name(original_name, f"{label}: sealed original name"))
        size, = struct.unpack_from(">Q", plaintext, 2 + n)
    except (struct.error, UnicodeDecodeError) as exc:
        raise SealError(f"{label}: a malformed sealed payload ({exc})") from None
    start = 2 + n + 8
    return Recovered(plaintext[start:start + size], _original_name(original_name, f"{label}: sealed original name"))


def unseal(p_bytes: bytes, name: str, key: bytes, sidecar: Optional[bytes] = None) -> bytes:
    """The original file's exact bytes (see ``unseal_record``)."""
    return unseal_record(p_bytes, name, key, sidecar).data


# ----------------------------------------------------------------------------------------- file API

def sidecar_path(p_path: PathLike) -> Path:
    """Where P's payload lives when its format cannot carry it: ``NAME.sealed`` beside P."""
    p = Path(p_path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def _read(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SealError(f"{what}: no such file: {path}") from None
    except OSError as exc:
        raise SealError(f"{what}: cannot read {path} ({exc.strerror})") from None


def seal_file(p_path: PathLike, original_path: PathLike, key: bytes, name: Optional[str] = None,
              original_name: Optional[str] = None) -> SealedImage:
    """Seal the file ``original_path`` to the image file ``p_path``, in place.

    P is rewritten atomically (temp + rename) when it embeds the payload; otherwise a new sidecar
    ``P.sealed`` is created, never overwriting an existing file. ``name`` defaults to P's file
    name, ``original_name`` to the original's. Refuses (``AlreadySealed``) an image that already
    carries a payload or has a sidecar.
    """
    p, side = Path(p_path), sidecar_path(p_path)
    if side.exists():
        raise AlreadySealed(f"{p}: already sealed (sidecar {side} exists); sealing twice is refused")
    p_bytes, original = _read(p, "p_path"), _read(Path(original_path), "original_path")
    sealed = _seal(p_bytes, original, p.name if name is None else name, key, None,
                   Path(original_path).name if original_name is None else original_name, True, label=str(p))
    if sealed.sidecar is not None:
        try:
            write_new(side, sealed.sidecar)
        except FileExistsError:
            raise AlreadySealed(f"{p}: already sealed (sidecar {side} appeared); sealing twice is refused") from None
    else:
        atomic.write_bytes(p, sealed.image)  # P itself, rewritten whole
    return sealed


def unseal_file(p_path: PathLike, key: bytes, name: Optional[str] = None,
                out_path: Optional[PathLike] = None) -> bytes:
    """The original's bytes from the sealed image ``p_path`` (and its sidecar, if any).

    ``name`` (default: P's file name) must be the relative name P was sealed under. With
    ``out_path`` the bytes are also written there (atomically; an existing file is never overwritten).
    """
    p, side = Path(p_path), sidecar_path(p_path)
    p_bytes = _read(p, "p_path")
    sidecar = _read(side, "sidecar") if side.exists() else None
    data = _unseal(p_bytes, p.name if name is None else name, key, sidecar, label=str(p)).data
    if out_path is not None:
        try:
            write_new(out_path, data)
        except FileExistsError:
            raise SealError(f"out_path: {out_path} already exists; it is never overwritten") from None
    return data


def payload_overhead(original_name: str, original_size: int) -> int:
    """Payload bytes beyond the original's own bytes (header, name, size, padding, tag); container
    framing excluded."""
    plain = 2 + len(original_name.encode("utf-8")) + 8 + original_size
    return HEADER_BYTES + padded_size(plain) + TAG_BYTES - original_size

