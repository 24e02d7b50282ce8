"""Apply G (anonymize) or G_R (recover) to every image of a folder.

The input folder is only read; outputs keep the input's relative file names; an output
file that already exists is never overwritten (counted and logged as skipped), and each
file is written to a temp name first and renamed, so a killed run leaves no torn images.
Unreadable images are skipped, counted and logged; grayscale/RGBA/16-bit inputs are
converted to 8-bit RGB.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, List, Tuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

log = logging.getLogger(__name__)

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class FolderReport:
    written: int = 0
    skipped_existing: int = 0
    skipped_unreadable: List[str] = field(default_factory=list)

    def line(self) -> str:
        return (f"written {self.written}, skipped (already in output) {self.skipped_existing}, "
                f"skipped (unreadable) {len(self.skipped_unreadable)}")


def check_folders(inp: str, out: str) -> Tuple[Path, Path]:
    """--input must exist; --output must not be the input nor inside it (it would be re-read)."""
    src = Path(inp).resolve()
    dst = Path(out).resolve()
    if not src.is_dir():
        raise FileNotFoundError(f"--input: not a folder: {inp}")
    if dst == src or src in dst.parents:
        raise ValueError(f"--output: {out} is the input folder or inside it; choose a folder outside {inp}")
    return src, dst


def list_images(root: Path) -> List[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def read_rgb(path: Path) -> np.ndarray:
    """8-bit RGB array from any PIL-readable image (16-bit and float are rescaled, alpha dropped)."""
    with Image.open(path) as im:
        im.load()
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            arr = np.asarray(im, dtype=np.float64)
            top = 65535.0 if arr.max() > 255 else 255.0
            im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8))
        elif im.mode == "F":
            arr = np.asarray(im, dtype=np.float64)
            im = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8))
        return np.asarray(im.convert("RGB"))


def _batches(files: List[Path], size: int) -> Iterator[List[Path]]:
    for i in range(0, len(files), size):
        yield files[i:i + size]


def process_folder(inp: str, out: str, fn: Callable[[torch.Tensor], torch.Tensor], height: int, width: int,
                   batch_size: int = 32, device: str = "cpu", desc: str = "images") -> FolderReport:
    """Resize to the model's size, run ``fn`` on [0,1] batches, write results with the same names."""
    src, dst = check_folders(inp, out)
    files = list_images(src)
    report = FolderReport()
    todo = []
    for f in files:
        if (dst / f.relative_to(src)).exists():
            report.skipped_existing += 1
        else:
            todo.append(f)
    with tqdm(total=len(todo), desc=desc, unit="img", disable=None, dynamic_ncols=True) as bar:
        for chunk in _batches(todo, batch_size):
            tensors, names = [], []
            for f in chunk:
                try:
                    arr = read_rgb(f)
                except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                    report.skipped_unreadable.append(str(f))
                    log.warning("skipping unreadable image %s: %s", f, exc)
                    continue
                img = Image.fromarray(arr).resize((width, height), Image.BILINEAR)
                tensors.append(torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1))
                names.append(f)
            if tensors:
                x = torch.stack(tensors).to(device=device, dtype=torch.float32) / 255.0
                with torch.no_grad():
                    y = fn(x).clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
                for f, arr in zip(names, y):
                    _write(dst / f.relative_to(src), arr)
                    report.written += 1
            bar.update(len(chunk))
    if report.skipped_unreadable:
        log.warning("%d unreadable image(s) skipped", len(report.skipped_unreadable))
    return report


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{path.suffix}")
    im = Image.fromarray(arr)
    fmt = Image.registered_extensions().get(path.suffix.lower(), "PNG")
    im.save(tmp, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    os.replace(tmp, path)
