"""The sealed sidecar of an anonymized video: every replaced box's original crop, encrypted.

``anonymize --input VIDEO --output OUT --seal-key KEYFILE`` writes ``OUT.sealed`` beside the
video (``street.anon.mkv`` -> ``street.anon.mkv.sealed``: an image's sidecar rule, ``NAME.sealed``).
``recover --input OUT --key-file KEYFILE --output DIR`` gives back each original crop as the very
PNG bytes that were sealed, so its pixels equal the input frame's box region exactly.

Layout (version 2; version 1 differs only in its footer, below)::

    "TRPV" | version 2 (1)
    record*  u32 length | frame u32 | k u16 | x1 y1 x2 y2 (4 x u32) | nonce (12) | AES-256-GCM ciphertext + tag (16)
    footer   JSON (UTF-8) | nonce (12) | tag (16) | u32 JSON length | "TRPV"

    plaintext = u64 PNG size | the crop's PNG bytes | zero padding to its size bucket
    footer JSON = {"version", "video", "width", "height", "fps", "frames", "crops", "records_sha256",
                   "video_sha256"}

``k`` numbers the replaced boxes of a frame from 0 in the detector's order. Crypto is the image
seal's (``sealing.payload``): its HKDF-derived AES-256-GCM key from the key file, fresh random
nonces, its padding buckets (a crop's size shows only to its bucket); a domain string of its own
keeps a video record from ever opening as an image payload or the other way round.

What is bound, exactly. An image's seal binds P's canonical content (its PNG data or JPEG scans);
a video's decoded pixels cannot be bound that way (they differ between decoder builds, as JPEG's
do), so the sidecar binds the output video's *encoded* content and its identity:

- every record's associated data: the video's file name (no folders), width x height and frame
  rate, the record's position in the sidecar, its frame, ``k`` and box (so a record opens only
  where it was written);
- the footer, authenticated by a tag over its JSON (no ciphertext): all of the above plus the frame
  count, the number of crops, the SHA-256 of every record byte (nothing can be removed, reordered,
  added or moved to another sidecar) and ``video_sha256`` (:func:`video_digest`): SHA-256 over a
  domain string, the first video stream's codec configuration (its extradata) and every non-empty
  encoded packet of that stream in demux order, each length-prefixed, as PyAV (FFmpeg) demuxes the
  finished file. That is the compressed picture data itself: any change to a frame, a re-encode
  that changes a single coded bit (every lossy one), another video of the same name, size, rate
  and frame count, all give another digest. It is deterministic for a given file, and survives
  what keeps the coded stream (a copy, a hard link, a lossless remux into the same container,
  even re-encoding identical pixels with an encoder that gives back identical packets, as FFV1
  does: the same coded content). Container bytes outside the packets (muxer headers, a random
  segment UID, metadata, other streams: anonymize writes none) are not bound.

The video's digest exists only once the video is finalized, so the footer is written last:
close the video under its temporary name, :func:`video_digest` it, ``finish(frames,
video_digest=...)`` the sidecar, then link both into place (``video.anonymize._Outputs.publish``).

``recover`` checks the footer's tag first (a wrong key or a changed footer fails there, before a
single crop is opened or the footer's JSON is parsed), then the name, size, rate and frame count,
then the digest of the video it is given; a sidecar beside another video, or beside a changed
video, is refused naming both files ("belongs to another video, or the video was changed").

Version 1 sidecars (written before the digest existed) still open, with a warning naming the
sidecar: their footer binds the name, size, rate and frame count only, so another video of the
same name and shape is not told apart. Refusing them would lock their owners out of originals that
exist nowhere else; a version-2 sidecar cannot pass as version 1 (the footer's authenticated JSON
states its version, and it must equal the header's byte).

The sidecar is streamed to a temporary file beside the video and linked into place when complete
(a long video's crops need not fit in memory); an existing file is never replaced.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shutil
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
from cryptography.exceptions import InvalidTag
from PIL import Image

from torchreid_privacy.sealing.payload import (NONCE_BYTES, TAG_BYTES, AuthenticationFailed, NotSealed, SealError,
                                               aead_for, padded_size, sidecar_path)
from torchreid_privacy.utils.atomic import (check_new_folder, link_into_place, move_into_place, new_folder_beside,
                                            new_temp, sweep_stale, write_new)

from .io import VideoError

log = logging.getLogger(__name__)

PathLike = Union[str, "os.PathLike[str]"]
Box = Tuple[int, int, int, int]

MAGIC = b"TRPV"
VERSION = 2
READS = (1, 2)  # sidecar versions this module opens (1: no video_sha256, opened with a warning)
_AD_DOMAIN = b"torchreid-privacy/video-crops/v1/associated-data\x00"
_DIGEST_DOMAIN = b"torchreid-privacy/video-crops/v2/video-sha256\x00"
_RECORD = struct.Struct(">IH4I")  # frame, k, x1, y1, x2, y2
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_MAX_FOOTER = 1 << 16  # the footer is ~400 bytes; a larger length field means a damaged file
DIGEST_BYTES = 32
BOXES_JSON = "boxes.json"


@dataclass(frozen=True)
class VideoBinding:
    """What a sidecar is bound to, besides the video's content digest: the output video's file
    name, size, rate and frame count."""

    name: str
    width: int
    height: int
    fps: Fraction
    frames: int = 0

    def stream_ad(self) -> bytes:
        """The part known before the first frame (every record's associated data holds it)."""
        return json.dumps([self.name, self.width, self.height, str(self.fps)]).encode("utf-8")

    def describe(self) -> str:
        return f"{self.name} ({self.frames} frames, {self.width}x{self.height}, {self.fps} fps)"


@dataclass(frozen=True)
class SealedCrop:
    """One original crop: where it was (frame, k-th replaced box, x1 y1 x2 y2) and its PNG bytes."""

    frame: int
    k: int
    box: Box
    png: bytes

    @property
    def file_name(self) -> str:
        return f"frame{self.frame:06d}_box{self.k:02d}.png"


def encode_png(rgb: np.ndarray) -> bytes:
    """A crop's lossless PNG bytes: what is sealed, and what recovery writes unchanged (zlib level 1:
    every box of every frame is encoded, and the sealed size is padded to its bucket anyway)."""
    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _record_ad(binding: VideoBinding, index: int, head: bytes) -> bytes:
    return _AD_DOMAIN + b"record\x00" + binding.stream_ad() + b"\x00" + _U32.pack(index) + head


def _footer_ad(footer: bytes) -> bytes:
    return _AD_DOMAIN + b"footer\x00" + footer


# ------------------------------------------------------------------------------------- the video

def _scan(path: PathLike) -> Tuple[int, bytes]:
    """``(frames, digest)`` of the video file ``path`` in one demux pass (nothing decoded): its first
    video stream's non-empty packets, and :func:`video_digest` of them. ``VideoError`` naming the
    file when it cannot be opened or demuxed to its end."""
    import av

    p = Path(path)
    if not p.is_file():
        raise VideoError(f"{p}: no such video file")
    try:
        with av.open(str(p)) as container:
            if not container.streams.video:
                raise VideoError(f"{p}: has no video stream")
            stream = container.streams.video[0]
            h = hashlib.sha256(_DIGEST_DOMAIN)
            extradata = bytes(stream.codec_context.extradata or b"")
            h.update(_U64.pack(len(extradata)) + extradata)
            frames = 0
            for packet in container.demux(stream):
                if not packet.size:  # the demuxer's end-of-stream flush packet
                    continue
                data = bytes(packet)
                h.update(_U64.pack(len(data)))
                h.update(data)
                frames += 1
    except VideoError:
        raise
    except Exception as exc:
        if not type(exc).__module__.startswith("av"):
            raise
        raise VideoError(f"{p}: cannot be read to its end ({type(exc).__name__}: {exc})") from None
    return frames, h.digest()


def video_digest(path: PathLike) -> bytes:
    """The 32-byte SHA-256 a version-2 sidecar binds: over ``_DIGEST_DOMAIN``, the first video
    stream's extradata and every non-empty encoded packet of it in demux order (each preceded by
    its u64 length), read from the finished file ``path`` with PyAV. Deterministic for a given file;
    any change to the coded pictures changes it (module docstring: what is and is not bound)."""
    return _scan(path)[1]


def count_frames(path: PathLike) -> int:
    """Frames of the video ``path`` (already probed), counted from its packets (nothing decoded)."""
    return _scan(path)[0]


def _video_binding(path: PathLike) -> Tuple[VideoBinding, bytes]:
    from .io import probe

    info = probe(path)
    frames, digest = _scan(path)
    return VideoBinding(Path(path).name, info.width, info.height, info.fps, frames), digest


def video_binding(path: PathLike) -> VideoBinding:
    """The binding of the video at ``path`` as it is now (its digest: :func:`video_digest`)."""
    return _video_binding(path)[0]


# -------------------------------------------------------------------------------------------- writing

class SealedCropsWriter:
    """Streams sealed crops to a temporary file beside ``video_path``'s sidecar.

    :meth:`add` per crop, :meth:`finish` with the video's frame count and content digest, then
    :meth:`publish` links ``video_path.sealed`` into place (refused if it exists); :meth:`discard`
    drops it all.
    """

    def __init__(self, video_path: PathLike, key: bytes, width: int, height: int, fps: Fraction) -> None:
        self.path = sidecar_path(video_path)
        self.video_path = Path(video_path)
        if os.path.lexists(self.path):
            raise FileExistsError(f"{self.path}: already exists; refusing to overwrite it")
        self._aead = aead_for(key)  # a bad key fails before any file is made
        self.binding = VideoBinding(self.video_path.name, int(width), int(height), Fraction(fps))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.path)  # what a killed writer of this same sidecar left
        fd, tmp = new_temp(str(self.path))  # exclusive, unpredictable, the mode a plain open gives
        self._tmp = Path(tmp)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self.crops = 0
        self.version = VERSION
        try:
            self._file.write(MAGIC + bytes((VERSION,)))
        except BaseException:
            self.discard()
            raise

    def add(self, frame: int, k: int, box: Box, png: bytes) -> None:
        """Seal one original crop's PNG bytes, bound to its frame, ``k``, box and this video."""
        head = _RECORD.pack(int(frame), int(k), *(int(v) for v in box))
        plaintext = _U64.pack(len(png)) + png
        plaintext += bytes(padded_size(len(plaintext)) - len(plaintext))
        nonce = os.urandom(NONCE_BYTES)
        body = head + nonce + self._aead.encrypt(nonce, plaintext, _record_ad(self.binding, self.crops, head))
        record = _U32.pack(len(body)) + body
        self._file.write(record)
        self._digest.update(record)
        self.crops += 1

    def finish(self, frames: int, video_digest: Optional[bytes] = None) -> None:
        """Write the footer (the whole binding, the crop count, the records' and the video's digests)
        and close.

        ``video_digest``: :func:`video_digest` of the finished video, taken before it is linked into
        place (close it under its temporary name, digest that file, finish this, then link both).
        Without it, the video already at ``video_path`` is digested (a video written before its
        sidecar). With neither, the sidecar is written as version 1 (no content binding), with a
        warning: kept only while ``anonymize`` finishes the sidecar before it closes the video.
        """
        if video_digest is None and self.video_path.is_file():
            video_digest = _scan(self.video_path)[1]
        if video_digest is not None and (not isinstance(video_digest, (bytes, bytearray))
                                         or len(video_digest) != DIGEST_BYTES):
            raise ValueError(f"{self.path}: video_digest must be the {DIGEST_BYTES}-byte video_digest() of the "
                             f"finished video, got {video_digest!r:.80}")
        b = self.binding
        fields = {"version": VERSION, "video": b.name, "width": b.width, "height": b.height, "fps": str(b.fps),
                  "frames": int(frames), "crops": self.crops, "records_sha256": self._digest.hexdigest()}
        if video_digest is None:
            log.warning("%s: written without the digest of %s (not there yet): a version-1 sidecar, bound to the "
                        "video's name, size, rate and frame count but not to its content", self.path, b.name)
            fields["version"] = self.version = 1
            self._file.seek(len(MAGIC))
            self._file.write(bytes((1,)))
            self._file.seek(0, os.SEEK_END)
        else:
            fields["video_sha256"] = bytes(video_digest).hex()
        footer = json.dumps(fields, sort_keys=True).encode("utf-8")
        nonce = os.urandom(NONCE_BYTES)
        tag = self._aead.encrypt(nonce, b"", _footer_ad(footer))  # AES-GCM over no plaintext: a tag
        self._file.write(footer + nonce + tag + _U32.pack(len(footer)) + MAGIC)
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()

    def publish(self) -> Path:
        """Link the finished sidecar into place; never over an existing file."""
        return link_into_place(self._tmp, self.path)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------- reading

@dataclass(frozen=True)
class _Footer:
    version: int  # the header's byte
    raw: bytes  # the JSON bytes the tag covers
    tag: bytes  # nonce + tag
    records_end: int  # file offset where the records stop


@dataclass(frozen=True)
class _Fields:
    """The authenticated footer's content."""

    binding: VideoBinding
    crops: int
    records_sha256: str
    video_sha256: Optional[str]  # None in a version-1 sidecar


def _read_footer(f: BinaryIO, size: int, label: str) -> _Footer:
    """The footer's bytes and where the records end; only the framing is read (nothing parsed)."""
    tail = 4 + len(MAGIC)
    if size < len(MAGIC) + 1 + NONCE_BYTES + TAG_BYTES + tail:
        raise AuthenticationFailed(f"{label}: authentication failed (truncated to {size} bytes)")
    f.seek(0)
    head = f.read(len(MAGIC) + 1)
    f.seek(size - tail)
    end = f.read(tail)
    if head[:4] != MAGIC or end[4:] != MAGIC:
        raise AuthenticationFailed(f"{label}: authentication failed (not a sealed video sidecar, or truncated)")
    if head[4] not in READS:
        raise AuthenticationFailed(f"{label}: authentication failed (sidecar version {head[4]}: damaged, or "
                                   f"written by a newer torchreid-privacy; this one reads versions "
                                   f"{', '.join(map(str, READS))})")
    n, = _U32.unpack(end[:4])
    records_end = size - tail - NONCE_BYTES - TAG_BYTES - n
    if n > _MAX_FOOTER or records_end < len(head):
        raise AuthenticationFailed(f"{label}: authentication failed (damaged footer)")
    f.seek(records_end)
    raw = f.read(n)
    tag = f.read(NONCE_BYTES + TAG_BYTES)
    return _Footer(head[4], raw, tag, records_end)


def _count(fields: dict, key: str, low: int) -> int:
    value = fields[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{key}: {value!r}")
    return value


def _hex_digest(fields: dict, key: str) -> str:
    value = fields[key]
    if not isinstance(value, str) or len(value) != 2 * DIGEST_BYTES or value.strip("0123456789abcdef"):
        raise ValueError(f"{key}: {value!r}")
    return value


def _parse_footer(footer: _Footer, label: str) -> _Fields:
    """The authenticated footer's fields (the tag is checked before: this JSON is what a key holder
    wrote); ``AuthenticationFailed`` for one this version cannot use."""
    try:
        fields = json.loads(footer.raw.decode("utf-8"))
        if not isinstance(fields, dict):
            raise TypeError(type(fields).__name__)
        if fields.get("version") != footer.version:
            raise ValueError(f"version {fields.get('version')!r} in a version-{footer.version} header")
        name = fields["video"]
        fps = fields["fps"]
        if not isinstance(name, str) or not isinstance(fps, str):
            raise TypeError("video, fps")
        binding = VideoBinding(name, _count(fields, "width", 1), _count(fields, "height", 1), Fraction(fps),
                               _count(fields, "frames", 0))
        video = _hex_digest(fields, "video_sha256") if footer.version >= 2 else None
        return _Fields(binding, _count(fields, "crops", 0), _hex_digest(fields, "records_sha256"), video)
    except (ValueError, KeyError, TypeError, ArithmeticError, RecursionError) as exc:
        raise AuthenticationFailed(f"{label}: authentication failed (unusable footer: {type(exc).__name__}: "
                                   f"{str(exc)[:80]})") from None


def open_sealed_crops(video_path: PathLike, key: bytes) -> Tuple[VideoBinding, Iterator[SealedCrop]]:
    """The binding of ``video_path``'s sidecar, and its original crops, each checked as it is read.

    Checked here, before any crop: the sidecar exists (``NotSealed``), the key opens its footer
    (``AuthenticationFailed``: wrong key, or a changed footer), it belongs to this very video
    (``SealError``: another video's, or a changed video: the name, size, rate and frame count, then
    the digest of the encoded stream, :func:`video_digest`). A version-1 sidecar (no digest) opens
    with a warning. A damaged record raises ``AuthenticationFailed`` where the iterator meets it, so
    callers keep nothing until it ends. Every message names the sidecar.
    """
    side = sidecar_path(video_path)
    label = str(side)
    if not side.is_file():
        raise NotSealed(f"{label}: missing; a video's original crops are recovered only from the sealed sidecar "
                        f"anonymize --seal-key wrote beside it")
    aead = aead_for(key)
    f = open(side, "rb")
    try:
        footer = _read_footer(f, os.fstat(f.fileno()).st_size, label)
        try:
            aead.decrypt(footer.tag[:NONCE_BYTES], footer.tag[NONCE_BYTES:], _footer_ad(footer.raw))
        except InvalidTag:
            raise AuthenticationFailed(f"{label}: authentication failed (wrong key, or the sidecar's footer was "
                                       "changed)") from None
        fields = _parse_footer(footer, label)
        actual, digest = _video_binding(video_path)
        other = "it belongs to another video, or the video was changed"
        if fields.binding != actual:
            raise SealError(f"{label}: seals the crops of {fields.binding.describe()}, not of {video_path}, which "
                            f"is {actual.describe()}: {other}; a sidecar opens only beside the video it was "
                            "written for")
        if fields.video_sha256 is None:
            log.warning("%s: a version-1 sidecar, bound to %s's name, size, rate and frame count but not to its "
                        "content: another video of the same name and shape would open it too", label, video_path)
        elif fields.video_sha256 != digest.hex():
            raise SealError(f"{label}: belongs to another video, or the video was changed: {video_path} has the "
                            f"name, size, rate and frame count it was written for, but its encoded stream's SHA-256 "
                            f"is {digest.hex()[:16]}..., not the sealed {fields.video_sha256[:16]}...; a sidecar "
                            "opens only beside the very video anonymize wrote")
    except BaseException:
        f.close()
        raise
    return fields.binding, _records(f, aead, footer, fields, label)


def _records(f: BinaryIO, aead, footer: _Footer, fields: _Fields, label: str) -> Iterator[SealedCrop]:
    """Each record, decrypted as it is read; the count and digest checked at the end; ``f`` closed."""
    with f:
        digest = hashlib.sha256()
        pos, index = len(MAGIC) + 1, 0
        f.seek(pos)
        while pos < footer.records_end:
            damaged = f"{label}: authentication failed (damaged crop record {index})"
            if pos + 4 > footer.records_end:
                raise AuthenticationFailed(damaged)
            raw_len = f.read(4)
            n, = _U32.unpack(raw_len)
            if n < _RECORD.size + NONCE_BYTES + TAG_BYTES or pos + 4 + n > footer.records_end:
                raise AuthenticationFailed(damaged)
            body = f.read(n)
            digest.update(raw_len + body)
            head, nonce = body[:_RECORD.size], body[_RECORD.size:_RECORD.size + NONCE_BYTES]
            frame, k, *box = _RECORD.unpack(head)
            try:
                plaintext = aead.decrypt(nonce, body[_RECORD.size + NONCE_BYTES:],
                                         _record_ad(fields.binding, index, head))
            except InvalidTag:
                raise AuthenticationFailed(f"{label}: authentication failed (crop record {index}, frame {frame} "
                                           f"box {k}, was changed or moved)") from None
            size = _U64.unpack_from(plaintext)[0] if len(plaintext) >= _U64.size else -1
            if not 0 <= size <= len(plaintext) - _U64.size:  # authenticated, so written so by a key holder
                raise AuthenticationFailed(f"{label}: authentication failed (crop record {index}: its sealed size "
                                           f"field does not fit its {len(plaintext)} bytes)")
            yield SealedCrop(frame, k, (box[0], box[1], box[2], box[3]), plaintext[8:8 + size])
            pos, index = pos + 4 + n, index + 1
        if index != fields.crops or digest.hexdigest() != fields.records_sha256:
            raise AuthenticationFailed(f"{label}: authentication failed (crop records removed, reordered or added: "
                                       f"{index} found, {fields.crops} sealed)")


# ------------------------------------------------------------------------------------------- recovery

@dataclass(frozen=True)
class RecoveredCrops:
    output: Path
    crops: int
    binding: VideoBinding

    def line(self) -> str:
        return f"restored {self.crops} original crop(s) of {self.binding.describe()} to {self.output}"


def recover_video_crops(video_path: PathLike, key: bytes, output: PathLike) -> RecoveredCrops:
    """Write every sealed original crop of ``video_path`` to ``output`` (a new folder).

    Files: ``frame{idx:06d}_box{k:02d}.png`` (the sealed PNG bytes unchanged) and ``boxes.json``
    (the video's binding and, per crop, its frame, ``k``, box ``[x1, y1, x2, y2]`` and file name).
    Everything goes to a temporary folder first, renamed to ``output`` only when every crop
    authenticated: a wrong key, a changed sidecar, another video's sidecar or a changed video
    leaves nothing. That folder is mode 0700 (decrypted originals: only the owner can list or read
    them, in ``output`` too), and an interrupted run removes it; what a killed run (SIGKILL) left
    beside ``output`` is swept when the next recovery to ``output`` starts.
    """
    out = check_new_folder(output, "--output")
    sweep_stale(out)  # a killed run's decrypted originals go first, whatever happens to this run
    binding, crops = open_sealed_crops(video_path, key)  # key and binding checked before any folder is made
    tmp = new_folder_beside(out, private=True)
    try:
        entries = _write_crops(tmp, crops)
        write_new(tmp / BOXES_JSON, json.dumps({
            "video": binding.name, "frames": binding.frames, "width": binding.width, "height": binding.height,
            "fps": str(binding.fps), "crops": entries}, indent=2).encode("utf-8"))
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return RecoveredCrops(move_into_place(tmp, out, "--output"), len(entries), binding)


def _write_crops(folder: Path, crops: Iterable[SealedCrop]) -> List[dict]:
    entries: List[dict] = []
    for crop in crops:
        write_new(folder / crop.file_name, crop.png)
        entries.append({"frame": crop.frame, "k": crop.k, "box": list(crop.box), "file": crop.file_name})
    return entries
