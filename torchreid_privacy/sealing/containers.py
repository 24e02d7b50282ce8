"""Where a sealed payload travels inside P's file, and which bytes of P it is bound to.

Containers (a payload is opaque bytes here; ``torchreid_privacy.sealing.payload`` makes and opens it):
- PNG: one chunk of type ``trPS`` inserted before IEND. The type's letter cases make it
  ancillary (decoders that do not know it skip it), private, and *unsafe to copy* (an editor
  that changes the image must drop it: the payload is bound to these pixels). CRC by zlib.crc32.
- JPEG: APP11 segments ``FF EB``, each ``TRPSEAL\\0 | index u16 | count u16 | piece``, placed
  together right after SOI (after a leading JFIF APP0, which JFIF wants first). A segment holds
  at most 65533 bytes, so payloads are split into pieces of ``JPEG_PIECE`` bytes and
  reassembled in index order. The identifier keeps them apart from other APP11 users (JUMBF).
- Anything else: no container; the payload goes to a sidecar file (``seal.py``).

Canonical digest: the bytes of P that the payload's associated data binds, identical on every
machine and unchanged by adding or removing our container:
- PNG: every chunk but ``trPS`` in order (type, length, data), except that the IDAT data is
  replaced by the SHA-256 of its zlib-*decompressed* stream (filtered scanlines, lossless and
  independent of the compressor and of how the stream is split into chunks), plus any bytes
  after IEND;
- JPEG: the file's bytes with our APP11 segments removed: tables, frame header and every
  entropy-coded scan up to EOI, never decoded pixels (libjpeg builds decode differently).
"""
from __future__ import annotations

import hashlib
import struct
import zlib
from typing import Iterator, List, Optional, Tuple

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHUNK = b"trPS"
PNG_MAX_CHUNK = 2 ** 31 - 1  # the PNG spec's limit on a chunk's length
JPEG_SOI = b"\xff\xd8"
JPEG_APP11 = 0xEB
JPEG_IDENT = b"TRPSEAL\x00"
JPEG_SEGMENT_DATA = 65535 - 2  # the length field counts itself
JPEG_PIECE = JPEG_SEGMENT_DATA - len(JPEG_IDENT) - 4  # 65521 payload bytes per segment
JPEG_MAX_SEGMENTS = 65535

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_INFLATE_STEP = 1 << 20  # bound memory per step even for a hostile IDAT stream
PNG_MAX_PIXELS = 1 << 28  # 268 megapixels, above Pillow's decompression-bomb error (2 x 89.5M)
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2))


class MalformedContainer(ValueError):
    """P's PNG/JPEG structure (or our container inside it) cannot be parsed; the message says where."""


def sniff(data: bytes) -> str:
    """``"png"``, ``"jpeg"`` or ``"other"`` from the file's magic bytes (never its name)."""
    if data.startswith(PNG_SIGNATURE):
        return "png"
    if data.startswith(JPEG_SOI + b"\xff"):
        return "jpeg"
    return "other"


def max_embedded(kind: str) -> int:
    """The largest payload (bytes) a ``kind`` container carries; 0 for ``"other"``."""
    return {"png": PNG_MAX_CHUNK, "jpeg": JPEG_PIECE * JPEG_MAX_SEGMENTS}.get(kind, 0)


# ---------------------------------------------------------------------------------------------- PNG

def _png_chunks(data: bytes) -> Iterator[Tuple[int, bytes, int, int]]:
    """(start, type, data_start, data_end) of each chunk up to and including IEND."""
    if not data.startswith(PNG_SIGNATURE):
        raise MalformedContainer("not a PNG (bad signature)")
    pos = len(PNG_SIGNATURE)
    while True:
        if pos + 8 > len(data):
            raise MalformedContainer("PNG truncated (no IEND chunk)")
        length, = _U32.unpack_from(data, pos)
        ctype = data[pos + 4:pos + 8]
        if length > PNG_MAX_CHUNK:
            raise MalformedContainer(f"PNG chunk {ctype!r} claims {length} bytes")
        end = pos + 12 + length
        if end > len(data):
            raise MalformedContainer(f"PNG truncated inside chunk {ctype!r}")
        yield pos, ctype, pos + 8, pos + 8 + length
        if ctype == b"IEND":
            return
        pos = end


def _png_chunk_end(data_end: int) -> int:
    return data_end + 4  # the CRC


def png_payload(data: bytes) -> Optional[bytes]:
    """The ``trPS`` chunk's data, or None; a second chunk or a bad CRC is malformed."""
    found = None
    for start, ctype, a, b in _png_chunks(data):
        if ctype != PNG_CHUNK:
            continue
        if found is not None:
            raise MalformedContainer(f"PNG carries more than one {PNG_CHUNK.decode()} chunk")
        crc, = _U32.unpack_from(data, b)
        if zlib.crc32(data[start + 4:b]) != crc:
            raise MalformedContainer(f"PNG {PNG_CHUNK.decode()} chunk fails its CRC (damaged)")
        found = data[a:b]
    return found


def png_embed(data: bytes, payload: bytes) -> bytes:
    """``data`` with one ``trPS`` chunk holding ``payload`` inserted before IEND."""
    if len(payload) > PNG_MAX_CHUNK:
        raise MalformedContainer(f"payload of {len(payload)} bytes exceeds a PNG chunk's {PNG_MAX_CHUNK}")
    iend = None
    for start, ctype, _, _ in _png_chunks(data):
        if ctype == PNG_CHUNK:
            raise MalformedContainer(f"PNG already carries a {PNG_CHUNK.decode()} chunk")
        if ctype == b"IEND":
            iend = start
    body = PNG_CHUNK + payload
    chunk = _U32.pack(len(payload)) + body + _U32.pack(zlib.crc32(body))
    return data[:iend] + chunk + data[iend:]


def png_raw_size(ihdr: bytes) -> int:
    """The exact size of the decompressed image data an IHDR declares (filter bytes included).

    Why: the digest inflates IDAT before authentication, so a crafted file could make that cost
    anything; inflating stops at this size (and images over ``PNG_MAX_PIXELS`` are refused)."""
    if len(ihdr) != 13:
        raise MalformedContainer("PNG IHDR chunk is not 13 bytes")
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", ihdr)
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}.get(colour)
    if channels is None or depth not in (1, 2, 4, 8, 16) or width < 1 or height < 1:
        raise MalformedContainer(f"PNG IHDR declares an invalid image ({width}x{height}, colour type {colour}, "
                                 f"depth {depth})")
    if width * height > PNG_MAX_PIXELS:
        raise MalformedContainer(f"PNG declares {width}x{height} pixels, over the {PNG_MAX_PIXELS} this reads")
    bits = channels * depth
    passes = [(0, 0, 1, 1)] if interlace == 0 else _ADAM7
    total = 0
    for x0, y0, dx, dy in passes:
        cols, rows = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if cols > 0 and rows > 0:
            total += rows * (1 + (cols * bits + 7) // 8)
    return total


def png_digest(data: bytes) -> bytes:
    """SHA-256 of P's canonical PNG content (see the module docstring); ``trPS`` excluded."""
    h, idat = hashlib.sha256(b"png\x00"), hashlib.sha256()
    inflater = zlib.decompressobj()
    seen_idat = False
    end = len(PNG_SIGNATURE)
    limit, inflated = None, 0
    try:
        for _, ctype, a, b in _png_chunks(data):
            end = _png_chunk_end(b)
            if ctype == PNG_CHUNK:
                continue
            if ctype == b"IHDR" and limit is None:
                limit = png_raw_size(data[a:b])
            if ctype == b"IDAT":
                if limit is None:
                    raise MalformedContainer("PNG image data comes before its IHDR header")
                if not seen_idat:
                    h.update(b"IDAT")  # position of the image data among the other chunks
                    seen_idat = True
                buf = data[a:b]
                while buf:
                    piece = inflater.decompress(buf, _INFLATE_STEP)
                    inflated += len(piece)
                    if inflated > limit:
                        raise MalformedContainer(f"PNG image data inflates past the {limit} bytes its header "
                                                 "declares (crafted or damaged)")
                    idat.update(piece)
                    buf = inflater.unconsumed_tail
                continue
            h.update(ctype + _U32.pack(b - a) + data[a:b])
        idat.update(inflater.flush())
    except zlib.error as exc:
        raise MalformedContainer(f"PNG image data is damaged ({exc})") from None
    if seen_idat and not inflater.eof:
        raise MalformedContainer("PNG image data is truncated")
    idat.update(b"\x00unused" + inflater.unused_data)
    h.update(b"\x00idat-stream" + idat.digest())
    h.update(b"\x00tail" + data[end:])
    return h.digest()


# --------------------------------------------------------------------------------------------- JPEG

def _jpeg_header_segments(data: bytes) -> Iterator[Tuple[int, int, int]]:
    """(start, end, marker) of each marker segment between SOI and the first SOS (excluded)."""
    if not data.startswith(JPEG_SOI):
        raise MalformedContainer("not a JPEG (no SOI marker)")
    pos = 2
    while True:
        if pos >= len(data) or data[pos] != 0xFF:
            raise MalformedContainer(f"JPEG header damaged or truncated at byte {pos}")
        start = pos
        while pos < len(data) and data[pos] == 0xFF:  # fill bytes may precede a marker
            pos += 1
        if pos >= len(data):
            raise MalformedContainer("JPEG truncated in its header")
        marker = data[pos]
        pos += 1
        if marker == 0xDA or marker == 0xD9:  # SOS: the scans begin; EOI: an image with no scan
            return
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:  # standalone markers carry no length
            yield start, pos, marker
            continue
        if pos + 2 > len(data):
            raise MalformedContainer("JPEG truncated in its header")
        length, = _U16.unpack_from(data, pos)
        if length < 2 or pos + length > len(data):
            raise MalformedContainer(f"JPEG segment FF{marker:02X} at byte {start} is truncated")
        pos += length
        yield start, pos, marker


def _is_ours(data: bytes, start: int, end: int, marker: int) -> bool:
    body = data[start:end].lstrip(b"\xff")[3:]  # drop fill bytes, the marker and the length
    return marker == JPEG_APP11 and body.startswith(JPEG_IDENT)


def _jpeg_ours(data: bytes) -> List[Tuple[int, int]]:
    return [(s, e) for s, e, m in _jpeg_header_segments(data) if _is_ours(data, s, e, m)]


def jpeg_payload(data: bytes) -> Optional[bytes]:
    """Our APP11 pieces reassembled, or None; missing, repeated or reordered pieces are malformed."""
    pieces = []
    for s, e in _jpeg_ours(data):
        body = data[s:e].lstrip(b"\xff")[3 + len(JPEG_IDENT):]
        if len(body) < 4:
            raise MalformedContainer("JPEG APP11 payload segment is truncated")
        index, count = struct.unpack_from(">HH", body)
        pieces.append((index, count, body[4:]))
    if not pieces:
        return None
    count = pieces[0][1]
    if [p[:2] for p in pieces] != [(i, count) for i in range(count)]:
        raise MalformedContainer("JPEG APP11 payload segments are missing, repeated or out of order")
    return b"".join(p[2] for p in pieces)


def jpeg_embed(data: bytes, payload: bytes) -> bytes:
    """``data`` with ``payload`` split over APP11 segments placed after SOI (and a leading APP0)."""
    segments = list(_jpeg_header_segments(data))
    if any(_is_ours(data, s, e, m) for s, e, m in segments):
        raise MalformedContainer("JPEG already carries torchreid-privacy APP11 segments")
    count = max(1, -(-len(payload) // JPEG_PIECE))
    if count > JPEG_MAX_SEGMENTS:
        raise MalformedContainer(f"payload of {len(payload)} bytes exceeds {JPEG_MAX_SEGMENTS} APP11 segments")
    at = segments[0][1] if segments and segments[0][2] == 0xE0 else 2
    out = []
    for i in range(count):
        body = JPEG_IDENT + struct.pack(">HH", i, count) + payload[i * JPEG_PIECE:(i + 1) * JPEG_PIECE]
        out.append(bytes((0xFF, JPEG_APP11)) + _U16.pack(len(body) + 2) + body)
    return data[:at] + b"".join(out) + data[at:]


def jpeg_digest(data: bytes) -> bytes:
    """SHA-256 of P's JPEG bytes without our APP11 segments (see the module docstring)."""
    h, pos = hashlib.sha256(b"jpeg\x00"), 0
    for s, e in _jpeg_ours(data):
        h.update(data[pos:s])
        pos = e
    h.update(data[pos:])
    return h.digest()


# -------------------------------------------------------------------------------------------- shared

def embedded_payload(data: bytes) -> Optional[bytes]:
    """The payload embedded in a PNG/JPEG ``data``, None when there is none or P is another format."""
    kind = sniff(data)
    return png_payload(data) if kind == "png" else jpeg_payload(data) if kind == "jpeg" else None


def has_embedded_payload(data: bytes) -> bool:
    """Whether ``data`` shows our chunk/segment, recognised from its header alone: a file cut inside
    the payload, or damaged after it, still counts as sealed (unsealing it then fails, naming why),
    so a truncated seal is never mistaken for an image that was never sealed. Never raises."""
    kind = sniff(data)
    if kind == "png":
        return _png_header_shows_ours(data)
    if kind == "jpeg":
        return _jpeg_header_shows_ours(data)
    return False


def _png_header_shows_ours(data: bytes) -> bool:
    """Walk chunk headers (length, type) without requiring each chunk to be complete."""
    pos = len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, = _U32.unpack_from(data, pos)
        ctype = data[pos + 4:pos + 8]
        if ctype == PNG_CHUNK:
            return True
        if ctype == b"IEND" or length > PNG_MAX_CHUNK:
            return False
        pos += 12 + length
    return False


def _jpeg_header_shows_ours(data: bytes) -> bool:
    """Walk marker segments before the first scan; a segment cut short still shows its identifier."""
    pos = 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        while pos < len(data) and data[pos] == 0xFF:
            pos += 1
        if pos >= len(data):
            return False
        marker = data[pos]
        pos += 1
        if marker in (0xDA, 0xD9):
            return False
        if marker == 0x01 or 0xD0 <= marker <= 0xD7:
            continue
        if marker == JPEG_APP11 and data[pos + 2:pos + 2 + len(JPEG_IDENT)] == JPEG_IDENT:
            return True
        if pos + 2 > len(data):
            return False
        length, = _U16.unpack_from(data, pos)
        pos += max(length, 2)
    return False


def embed(data: bytes, payload: bytes) -> bytes:
    kind = sniff(data)
    if kind == "png":
        return png_embed(data, payload)
    if kind == "jpeg":
        return jpeg_embed(data, payload)
    raise MalformedContainer("this format carries no embedded payload")


def file_digest(data: bytes) -> bytes:
    """SHA-256 of P's whole file: what a sidecar payload is bound to."""
    return hashlib.sha256(b"file\x00" + data).digest()


def canonical_digest(data: bytes, embedded: bool) -> bytes:
    """The digest the associated data carries: format-aware when embedded, whole file otherwise."""
    if not embedded:
        return file_digest(data)
    kind = sniff(data)
    return png_digest(data) if kind == "png" else jpeg_digest(data)
