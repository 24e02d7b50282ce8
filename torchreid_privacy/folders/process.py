"""Apply G (anonymize) or G_R (recover) to every image of a folder; seal and unseal folders.

The input folder is only read; outputs keep the input's relative file names (anonymize: with the
publish format's suffix, ``a.png`` -> ``a.jpg`` for JPEG, since P is written as the run's
``privacy.publish`` channel publishes it, the same bytes evaluation scored); an output
file that already exists is never overwritten (counted and logged as skipped), and each
file is written to a temp name first and renamed, so a killed run leaves no torn images.
Unreadable images are skipped, counted and logged; grayscale/RGBA/16-bit inputs are
converted to 8-bit RGB.

Sealed mode (``process_folder(..., seal_key=key)``): each P also carries its input file's exact
bytes, encrypted and bound to P (``torchreid_privacy.sealing.payload``): inside P for PNG/JPEG, in a sidecar
``NAME.sealed`` beside P otherwise. ``unseal_folder`` gives the key holder the originals back
byte for byte, under their original file names, in P's relative folders.
"""
from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from torchreid_privacy.publish import PublishChannel, to_uint8
from torchreid_privacy.utils.atomic import UnsafeOutput  # noqa: F401  (re-exported: a link in the output's way)
from torchreid_privacy.utils.atomic import safe_child, safe_output_dir, write_new
from torchreid_privacy.utils.images import UNREADABLE_IMAGE, bombs_unreadable, resize_rgb, to_batch01
from torchreid_privacy.sealing.payload import (SIDECAR_SUFFIX, AuthenticationFailed, SealError, check_seal_key,
                                               is_sealed, neutral_name, seal, sidecar_path, unseal_record)

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class FolderReport:
    """What a folder run did; ``failed`` holds (input's relative name, one-line reason): files that
    could not be written (a name the seal cannot store, a name too long for the file system, a
    symbolic link in the way) fail alone, the others proceed, and the CLI exits non-zero."""

    written: int = 0
    skipped_existing: int = 0
    skipped_unreadable: List[str] = field(default_factory=list)
    failed: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed

    def line(self) -> str:
        return (f"written {self.written}, skipped (already in output) {self.skipped_existing}, "
                f"skipped (unreadable) {len(self.skipped_unreadable)}, failed {len(self.failed)}")

    def fail(self, name: str, reason: str) -> None:
        self.failed.append((name, reason))
        log.warning("%s", reason)


def output_path(dst: Path, rel: Union[str, PurePosixPath]) -> Path:
    """``dst / rel``, refusing (:class:`UnsafeOutput`) a path through a symbolic link below ``dst``:
    a link planted in the output folder would send the write elsewhere, possibly into the input folder."""
    return safe_child(dst, rel)


def check_folders(inp: str, out: str) -> Tuple[Path, Path]:
    """--input must exist; --output must be neither the input, nor inside it (it would be re-read),
    nor around it (outputs would land inside the input folder), nor a symbolic link or a file."""
    src = Path(inp).resolve()
    dst = Path(out).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"--input: not a folder: {inp}")
    if dst == src or src in dst.parents:
        raise ValueError(f"--output: {out} is the input folder or inside it; choose a folder outside {inp}")
    if dst in src.parents:
        raise ValueError(f"--output: {out} contains the input folder {inp}, so outputs could land inside it; "
                         "choose a folder outside the input")
    safe_output_dir(out, "--output")
    return src, dst


def list_images(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_rgb(path: Union[Path, bytes]) -> np.ndarray:
    """8-bit RGB array from any PIL-readable image file or its bytes (16-bit and float are rescaled,
    alpha dropped). A decompression bomb is :class:`~torchreid_privacy.utils.images.ImageTooLarge`,
    a ValueError like the other unreadable images."""
    with bombs_unreadable(), Image.open(io.BytesIO(path) if isinstance(path, bytes) else path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
        elif im.mode == "F":
            arr = np.asarray(im, dtype=np.float64)
            im = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8))
        return np.asarray(im.convert("RGB"))


def batches(items: List, size: int) -> Iterator[List]:
    """``items`` in consecutive lists of at most ``size``."""
    for i in range(0, len(items), size):
        yield items[i:i + size]


def pending_outputs(src: Path, dst: Path, named: Iterable[Tuple[Path, PurePosixPath]], report: FolderReport,
                    exists: Callable[[Path], bool]) -> List[Tuple[Path, PurePosixPath]]:
    """The (input, output name) pairs whose output is not written yet: an output that ``exists``
    is counted as skipped (a second run resumes), one that cannot be checked (a symbolic link in
    the way, a name too long for the file system) as failed under the input's name."""
    todo = []
    for f, rel in named:
        try:
            done = exists(output_path(dst, rel))
        except OSError as exc:
            report.fail(f.relative_to(src).as_posix(), f"{f}: {exc}")
            continue
        if done:
            report.skipped_existing += 1
        else:
            todo.append((f, rel))
    return todo


def output_names(src: Path, files: List[Path], channel: Optional[PublishChannel], report: FolderReport,
                 neutral_key: Optional[bytes] = None) -> List[Tuple[Path, PurePosixPath]]:
    """``(input, output's relative name)`` per file: the input's name, with the channel's suffix when
    one is given; with ``neutral_key``, a neutral name at the top of the output (``neutral_name``:
    nothing of the input's name or folders). Two inputs that would share an output name (``a.png``,
    ``a.jpg``) keep the first; the other is counted and logged as skipped."""
    planned: Dict[PurePosixPath, Path] = {}
    out = []
    for f in files:
        rel = PurePosixPath(f.relative_to(src).as_posix())
        if neutral_key is not None:
            try:
                rel = PurePosixPath(neutral_name(neutral_key, rel.as_posix()) + rel.suffix)
            except SealError as exc:  # a name that is not valid UTF-8: this file alone fails
                report.fail(rel.as_posix(), f"{f}: {exc}")
                continue
        if channel is not None:
            rel = rel.with_suffix(channel.suffix)
        if rel in planned:
            report.skipped_existing += 1
            log.warning("skipping %s: its output name %s is taken by %s", f, rel, planned[rel])
            continue
        planned[rel] = f
        out.append((f, rel))
    return out


def process_folder(inp: str, out: str, fn: Callable[[torch.Tensor], torch.Tensor], height: int, width: int,
                   batch_size: int = 32, device: str = "cpu", desc: str = "images",
                   seal_key: Optional[bytes] = None, only: Optional[Iterable[str]] = None,
                   channel: Optional[PublishChannel] = None, neutral_names: bool = False) -> FolderReport:
    """Resize to the model's size, run ``fn`` on [0,1] batches, write results with the same names.

    With ``channel`` (anonymize) each output is the file that channel publishes (8-bit, its format
    and quality, its suffix); without it (recover) the format the input's suffix names. With
    ``seal_key`` each written P also carries its input file's exact bytes, sealed under the key
    (same pixels as without it); an output whose image or sidecar exists already is skipped.
    ``only`` restricts the run to these relative names (POSIX style), e.g. the images
    ``unseal_folder`` found unsealed, for the learned decoder. ``neutral_names`` (sealing only):
    P is written under a keyed neutral name at the output's top level, and the input's relative
    name travels only inside the sealed payload (``unseal_folder`` restores it).
    """
    src, dst = check_folders(inp, out)
    if seal_key is not None:
        check_seal_key(seal_key)  # a bad key fails before any work
    if neutral_names and seal_key is None:
        raise ValueError("--neutral-names: needs --seal-key (the original names travel only in the sealed payload)")
    files = list_images(src)
    if only is not None:
        wanted = {str(PurePosixPath(name)) for name in only}
        files = [f for f in files if f.relative_to(src).as_posix() in wanted]
    report = FolderReport()
    todo = pending_outputs(src, dst, output_names(src, files, channel, report, seal_key if neutral_names else None),
                           report, lambda path: _output_exists(path, sealed=seal_key is not None))
    with tqdm(total=len(todo), desc=desc, unit="img", disable=None, dynamic_ncols=True) as bar:
        for chunk in batches(todo, batch_size):
            tensors, names, raws = [], [], []  # raws: (original bytes, its file name) when sealing
            for f, rel in chunk:
                try:
                    # read once when sealing: the bytes sealed are the bytes decoded
                    raw = f.read_bytes() if seal_key is not None else None
                    arr = read_rgb(f if raw is None else raw)
                except UNREADABLE_IMAGE as exc:
                    report.skipped_unreadable.append(str(f))
                    log.warning("skipping unreadable image %s: %s", f, exc)
                    continue
                tensors.append(resize_rgb(arr, height, width))
                names.append(rel)
                original_name = f.relative_to(src).as_posix() if neutral_names else f.name
                raws.append(None if raw is None else (raw, original_name))
            if tensors:
                x = to_batch01(tensors, device)
                with torch.no_grad():
                    y = to_uint8(fn(x))
                for rel, arr, raw in zip(names, y, raws):
                    data = channel.encode(arr) if channel is not None else encode_image(arr, rel.suffix)
                    try:
                        written = _write(output_path(dst, rel), data,
                                         None if raw is None else (*raw, rel.as_posix(), seal_key))
                    except (SealError, OSError) as exc:  # this file alone fails; the others proceed
                        report.fail(rel.as_posix(), f"{rel.as_posix()}: {exc}")
                        continue
                    if written:
                        report.written += 1
                    else:
                        report.skipped_existing += 1
            bar.update(len(chunk))
    if report.skipped_unreadable:
        log.warning("%d unreadable image(s) skipped", len(report.skipped_unreadable))
    return report


def _output_exists(path: Path, sealed: bool) -> bool:
    return path.exists() or (sealed and sidecar_path(path).exists())


def encode_image(arr: np.ndarray, suffix: str) -> bytes:
    """The image file bytes R (recover) is written as: the format its extension names (PNG if unknown)."""
    fmt = Image.registered_extensions().get(suffix.lower(), "PNG")
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _write(path: Path, data: bytes, sealing: Optional[Tuple[bytes, str, str, bytes]] = None) -> bool:
    """Write P's file bytes (sealing ``(original bytes, original file name, P's relative name, key)``
    into them); False if it exists already.

    A sidecar is created before its image, and removed again if the image cannot be written, so
    no P ever exists without its payload.
    """
    side = None
    if sealing is not None:
        original, original_name, rel, key = sealing
        sealed = seal(data, original, rel, key, original_name=original_name)
        data = sealed.image
        if sealed.sidecar is not None:
            side = sidecar_path(path)
            try:
                write_new(side, sealed.sidecar)
            except FileExistsError:
                log.warning("skipping %s: its sidecar %s appeared meanwhile", path, side)
                return False
    try:
        write_new(path, data)
    except FileExistsError:
        log.warning("skipping %s: it appeared meanwhile", path)
        if side is not None:
            side.unlink()
        return False
    return True


@dataclass
class UnsealReport:
    """What ``unseal_folder`` did; ``failed`` holds (P's relative name, one-line reason)."""

    restored: int = 0
    skipped_existing: int = 0
    unsealed: List[str] = field(default_factory=list)
    hint: str = ""  # why everything failed, when there is a likely reason
    failed: List[Tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No sealed image failed (the CLI exits non-zero otherwise)."""
        return not self.failed

    def line(self) -> str:
        return (f"restored {self.restored}, skipped (already in output) {self.skipped_existing}, "
                f"not sealed {len(self.unsealed)}, failed {len(self.failed)}")


def unseal_folder(inp: str, out: str, key: bytes, desc: str = "unseal") -> UnsealReport:
    """Restore every sealed image's original under ``out``, byte for byte.

    For P at ``inp/REL/NAME`` the original goes to ``out/REL/ORIGINAL_NAME``: the folders follow P,
    the file name (hence its extension and format) is the original's, kept inside the encrypted
    payload. Images that fail to unseal (wrong key, tampered, truncated, another image's payload,
    renamed) are reported by name in ``failed`` and nothing is written for them; images without a
    payload go to ``unsealed`` (the caller may run the learned decoder on them); a sidecar whose
    image is missing counts as failed. An existing output is never overwritten.
    """
    src, dst = check_folders(inp, out)
    check_seal_key(key)  # a bad key fails before any work
    report = UnsealReport()
    images = list_images(src)
    restored_by: Dict[PurePosixPath, str] = {}  # original written this run -> the P it came from
    auth_failures = 0
    known = {sidecar_path(f) for f in images}
    for side in sorted(src.rglob("*" + SIDECAR_SUFFIX)):
        if side.is_file() and side not in known:
            rel, image = side.relative_to(src).as_posix(), side.with_name(side.name[:-len(SIDECAR_SUFFIX)])
            why = "is not a supported image type" if image.exists() else "is missing"
            report.failed.append((rel, f"{rel}: its image {image.name} {why}; nothing to unseal it with"))
    for f in tqdm(images, desc=desc, unit="img", disable=None, dynamic_ncols=True):
        rel = f.relative_to(src)
        side = sidecar_path(f)
        try:
            p_bytes = f.read_bytes()
            sidecar = side.read_bytes() if side.is_file() else None
        except OSError as exc:
            report.failed.append((rel.as_posix(), f"{rel.as_posix()}: cannot read ({exc.strerror})"))
            continue
        if not is_sealed(p_bytes, sidecar is not None):
            report.unsealed.append(rel.as_posix())
            continue
        try:
            recovered = unseal_record(p_bytes, rel.as_posix(), key, sidecar)
        except SealError as exc:
            report.failed.append((rel.as_posix(), str(exc)))
            auth_failures += isinstance(exc, AuthenticationFailed)
            continue
        target_rel = PurePosixPath(rel.as_posix()).parent / recovered.original_name
        if target_rel in restored_by:  # two payloads name the same original: which is it? neither is kept quiet
            report.failed.append((rel.as_posix(), f"{rel.as_posix()}: names the same original {target_rel} as "
                                                  f"{restored_by[target_rel]}; only the first was restored"))
            continue
        try:
            write_new(output_path(dst, target_rel), recovered.data)
        except FileExistsError:
            report.skipped_existing += 1
            continue
        except OSError as exc:  # a name too long for the file system, a symbolic link in the way
            report.failed.append((rel.as_posix(), f"{rel.as_posix()}: cannot write {target_rel} ({exc})"))
            continue
        restored_by[target_rel] = rel.as_posix()
        report.restored += 1
    if auth_failures and not report.restored and auth_failures == len(report.failed):
        report.hint = (f"every sealed image failed authentication: a wrong key, or {inp} is not the folder anonymize "
                       "wrote (names are bound relative to it: recover from that folder, not a subfolder of it)")
    return report


def sealed_images(inp: str) -> List[str]:
    """Relative names of the images under ``inp`` that carry a sealed payload (embedded or sidecar)."""
    src = Path(inp)
    found = []
    for f in list_images(src):
        try:
            if is_sealed(f.read_bytes(), sidecar_path(f).is_file()):
                found.append(f.relative_to(src).as_posix())
        except OSError:
            continue  # unreadable: process_folder counts and reports it
    return found
