"""The sealed sidecar of an anonymized video: every replaced box's original crop, encrypted.

``anonymize --input VIDEO --output OUT --seal-key KEYFILE`` writes ``OUT.sealed`` beside the
video (``street.anon.mkv`` -> ``street.anon.mkv.sealed``: an image's sidecar rule, ``NAME.sealed``).
``recover --input OUT --key-file KEYFILE --output DIR`` gives back each original crop as the very
PNG bytes that were sealed, so its pixels equal the input frame's box region exactly.

Layout (version 1)::

    "TRPV" | version 1 (1)
    record*  u32 length | frame u32 | k u16 | x1 y1 x2 y2 (4 x u32) | nonce (12) | AES-256-GCM ciphertext + tag (16)
    footer   JSON (UTF-8) | nonce (12) | tag (16) | u32 JSON length | "TRPV"

    plaintext = u64 PNG size | the crop's PNG bytes | zero padding to its size bucket
    footer JSON = {"version", "video", "width", "height", "fps", "frames", "crops", "records_sha256"}

``k`` numbers the replaced boxes of a frame from 0 in the detector's order. Crypto is the image
seal's (``sealing.payload``): its HKDF-derived AES-256-GCM key from the key file, fresh random
nonces, its padding buckets (a crop's size shows only to its bucket); a domain string of its own
keeps a video record from ever opening as an image payload or the other way round.

What is bound, and why: an image's seal binds P's canonical content (its PNG data or JPEG scans).
A video's P cannot be bound that way: the boxes are pasted and the frames then lossy-encoded, its
decoded pixels differ between decoder builds (as JPEG's do) and its bytes change on any remux. So
the sidecar binds what identifies this output video wherever it is decoded: its file name (no
folders), frame count, width x height and frame rate. Each record's associated data holds the
stream part of that binding (name, size, rate), its position, frame, ``k`` and box, so a record
opens only where it was written; the footer (tag over its JSON, no ciphertext) adds the frame
count, the number of crops and the SHA-256 of every record byte, so nothing can be removed,
reordered, added or moved to another sidecar. ``recover`` checks the footer's tag first (a wrong
key or a changed footer fails there, before a single crop is opened), then compares its binding
with the video it is given (a sidecar beside another video is refused, naming both).

The sidecar is streamed to a temporary file beside the video and linked into place when complete
(a long video's crops need not fit in memory); an existing file is never replaced.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, List, Tuple, Union

import numpy as np
from cryptography.exceptions import InvalidTag
from PIL import Image

from torchreid_privacy.sealing.payload import (NONCE_BYTES, TAG_BYTES, AuthenticationFailed, NotSealed, SealError,
                                               aead_for, padded_size, sidecar_path)
from torchreid_privacy.utils.atomic import (check_new_folder, link_into_place, move_into_place, new_folder_beside,
                                            new_temp, sweep_stale, write_new)

PathLike = Union[str, "os.PathLike[str]"]
Box = Tuple[int, int, int, int]

MAGIC = b"TRPV"
VERSION = 1
_AD_DOMAIN = b"torchreid-privacy/video-crops/v1/associated-data\x00"
_RECORD = struct.Struct(">IH4I")  # frame, k, x1, y1, x2, y2
_U32 = struct.Struct(">I")
_U64 = struct.Struct(">Q")
_MAX_FOOTER = 1 << 16  # the footer is ~300 bytes; a larger length field means a damaged file
BOXES_JSON = "boxes.json"


@dataclass(frozen=True)
class VideoBinding:
    """What a sidecar is bound to: the output video's file name, size, rate and frame count."""

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


# -------------------------------------------------------------------------------------------- writing

class SealedCropsWriter:
    """Streams sealed crops to a temporary file beside ``video_path``'s sidecar.

    :meth:`add` per crop, :meth:`finish` with the video's frame count, then :meth:`publish`
    links ``video_path.sealed`` into place (refused if it exists); :meth:`discard` drops it all.
    """

    def __init__(self, video_path: PathLike, key: bytes, width: int, height: int, fps: Fraction) -> None:
        self.path = sidecar_path(video_path)
        if os.path.lexists(self.path):
            raise FileExistsError(f"{self.path}: already exists; refusing to overwrite it")
        self._aead = aead_for(key)  # a bad key fails before any file is made
        self.binding = VideoBinding(Path(video_path).name, int(width), int(height), Fraction(fps))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        sweep_stale(self.path)  # what a killed writer of this same sidecar left
        fd, tmp = new_temp(str(self.path))  # exclusive, unpredictable, the mode a plain open gives
        self._tmp = Path(tmp)
        self._file: BinaryIO = os.fdopen(fd, "wb")
        self._digest = hashlib.sha256()
        self.crops = 0
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

    def finish(self, frames: int) -> None:
        """Write the footer (the whole binding, the crop count, the records' digest) and close."""
        b = self.binding
        footer = json.dumps({"version": VERSION, "video": b.name, "width": b.width, "height": b.height,
                             "fps": str(b.fps), "frames": int(frames), "crops": self.crops,
                             "records_sha256": self._digest.hexdigest()}, sort_keys=True).encode("utf-8")
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

def count_frames(path: PathLike) -> int:
    """Frames of the video ``path`` (already probed), counted from its packets (nothing decoded)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sum(1 for packet in container.demux(stream) if packet.size)


def video_binding(path: PathLike) -> VideoBinding:
    """The binding of the video at ``path`` as it is now."""
    from .io import probe

    info = probe(path)
    return VideoBinding(Path(path).name, info.width, info.height, info.fps, count_frames(path))


@dataclass(frozen=True)
class _Footer:
    binding: VideoBinding
    crops: int
    records_sha256: str
    raw: bytes  # the JSON bytes the tag covers
    tag: bytes  # nonce + tag
    records_end: int  # file offset where the records stop


def _read_footer(f: BinaryIO, size: int, label: str) -> _Footer:
    tail = 4 + len(MAGIC)
    if size < len(MAGIC) + 1 + NONCE_BYTES + TAG_BYTES + tail:
        raise AuthenticationFailed(f"{label}: authentication failed (truncated to {size} bytes)")
    f.seek(0)
    head = f.read(len(MAGIC) + 1)
    f.seek(size - tail)
    end = f.read(tail)
    if head[:4] != MAGIC or end[4:] != MAGIC:
        raise AuthenticationFailed(f"{label}: authentication failed (not a sealed video sidecar, or truncated)")
    if head[4] != VERSION:
        raise AuthenticationFailed(f"{label}: authentication failed (sidecar version {head[4]}: damaged, or "
                                   f"written by a newer torchreid-privacy; this one reads version {VERSION})")
    n, = _U32.unpack(end[:4])
    records_end = size - tail - NONCE_BYTES - TAG_BYTES - n
    if n > _MAX_FOOTER or records_end < len(head):
        raise AuthenticationFailed(f"{label}: authentication failed (damaged footer)")
    f.seek(records_end)
    raw = f.read(n)
    tag = f.read(NONCE_BYTES + TAG_BYTES)
    try:
        fields = json.loads(raw.decode("utf-8"))
        binding = VideoBinding(str(fields["video"]), int(fields["width"]), int(fields["height"]),
                               Fraction(fields["fps"]), int(fields["frames"]))
        return _Footer(binding, int(fields["crops"]), str(fields["records_sha256"]), raw, tag, records_end)
    except (ValueError, KeyError, TypeError, ZeroDivisionError):
        raise AuthenticationFailed(f"{label}: authentication failed (damaged footer)") from None


def open_sealed_crops(video_path: PathLike, key: bytes) -> Tuple[VideoBinding, Iterator[SealedCrop]]:
    """The binding of ``video_path``'s sidecar, and its original crops, each checked as it is read.

    Checked here, before any crop: the sidecar exists (``NotSealed``), the key opens its footer
    (``AuthenticationFailed``: wrong key, or a changed footer), it belongs to this video
    (``SealError``: another video's). A damaged record raises ``AuthenticationFailed`` where the
    iterator meets it, so callers keep nothing until it ends. Every message names the sidecar.
    """
    side = sidecar_path(video_path)
    label = str(side)
    if not side.is_file():
        raise NotSealed(f"{label}: missing; a video's original crops are recovered only from the sealed sidecar "
                        f"anonymize --seal-key wrote beside it")
    aead = aead_for(key)
    actual = video_binding(video_path)
    f = open(side, "rb")
    try:
        footer = _read_footer(f, side.stat().st_size, label)
        try:
            aead.decrypt(footer.tag[:NONCE_BYTES], footer.tag[NONCE_BYTES:], _footer_ad(footer.raw))
        except InvalidTag:
            raise AuthenticationFailed(f"{label}: authentication failed (wrong key, or the sidecar's footer was "
                                       "changed)") from None
        if footer.binding != actual:
            raise SealError(f"{label}: seals the crops of {footer.binding.describe()}, not of {video_path}, which "
                            f"is {actual.describe()}; a sidecar opens only beside the video it was written for")
    except BaseException:
        f.close()
        raise
    return footer.binding, _records(f, aead, footer, label)


def _records(f: BinaryIO, aead, footer: _Footer, label: str) -> Iterator[SealedCrop]:
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
                                         _record_ad(footer.binding, index, head))
            except InvalidTag:
                raise AuthenticationFailed(f"{label}: authentication failed (crop record {index}, frame {frame} "
                                           f"box {k}, was changed or moved)") from None
            size, = _U64.unpack_from(plaintext)
            yield SealedCrop(frame, k, (box[0], box[1], box[2], box[3]), plaintext[8:8 + size])
            pos, index = pos + 4 + n, index + 1
        if index != footer.crops or digest.hexdigest() != footer.records_sha256:
            raise AuthenticationFailed(f"{label}: authentication failed (crop records removed, reordered or added: "
                                       f"{index} found, {footer.crops} sealed)")


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
    authenticated: a wrong key, a changed sidecar or another video's sidecar leaves nothing. That
    folder is mode 0700 (decrypted originals: only the owner can list or read them, in ``output``
    too), and an interrupted run removes it; what a killed run (SIGKILL) left beside ``output`` is
    swept when the next recovery to ``output`` starts.
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
