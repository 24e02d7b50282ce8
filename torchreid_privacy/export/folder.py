"""``anonymize --onnx``: a folder through an exported anonymizer, with numpy, PIL and onnxruntime.

Why not ``folder.process_folder``: that loop hands torch tensors to a torch function; at the
edge the anonymizer is an ONNX file and no torch model is loaded. The rules are the same and
so are the helpers (``check_folders``, ``list_images``, ``read_rgb``, ``output_names``) and the
publication channel: the input folder is only read, outputs keep the input's relative names (with
the publish format's suffix), P is written as the run publishes it, an existing output is
never overwritten (counted as skipped), each image is written to a temp name and linked into
place, unreadable images are skipped and counted. Pixels equal the torch path's up to one grey
level (onnxruntime's float arithmetic differs from torch's by ~1e-6, which can move a value
across a rounding boundary).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
from PIL import UnidentifiedImageError
from tqdm import tqdm

from torchreid_privacy.utils.atomic import write_new
from torchreid_privacy.utils.images import resize_rgb
from torchreid_privacy.publish import PublishChannel
from torchreid_privacy.folders.process import (FolderReport, batches, check_folders, list_images, output_names, output_path,
                                               pending_outputs, read_rgb)
from torchreid_privacy.export.runtime import OnnxAnonymizer

log = logging.getLogger(__name__)


def to_uint8(p01: np.ndarray) -> np.ndarray:
    """(N, 3, H, W) float in [0,1] -> (N, H, W, 3) uint8, rounded half to even like the torch path."""
    return np.rint(np.clip(p01, 0.0, 1.0) * np.float32(255)).astype(np.uint8).transpose(0, 2, 3, 1)


def anonymize_folder_onnx(inp: str, out: str, anonymizer: OnnxAnonymizer, batch_size: int = 32,
                          desc: str = "anonymize (onnx)", channel: Optional[PublishChannel] = None) -> FolderReport:
    """Resize every image of ``inp`` to the graph's size, anonymize, write P under ``out`` as
    ``channel`` publishes it (default: the format and quality the exported run publishes with)."""
    if batch_size < 1:
        raise ValueError(f"--batch-size: expected >= 1, got {batch_size}")
    src, dst = check_folders(inp, out)
    channel = channel or PublishChannel(anonymizer.publish_format, anonymizer.publish_quality)
    report = FolderReport()
    todo = pending_outputs(src, dst, output_names(src, list_images(src), channel, report), report, Path.exists)
    with tqdm(total=len(todo), desc=desc, unit="img", disable=None, dynamic_ncols=True) as bar:
        for chunk in batches(todo, batch_size):
            arrays, names = [], []
            for f, rel in chunk:
                try:
                    arr = read_rgb(f)
                except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
                    report.skipped_unreadable.append(str(f))
                    log.warning("skipping unreadable image %s: %s", f, exc)
                    continue
                arrays.append(resize_rgb(arr, anonymizer.height, anonymizer.width))
                names.append(rel)
            if arrays:
                x = np.stack(arrays).transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255)
                for rel, img in zip(names, to_uint8(anonymizer(x))):
                    try:
                        write_new(output_path(dst, rel), channel.encode(img))
                    except FileExistsError:
                        log.warning("skipping %s: it appeared meanwhile", dst / rel)
                        report.skipped_existing += 1
                        continue
                    except OSError as exc:  # this file alone fails (a name too long, a link in the way)
                        report.fail(rel.as_posix(), f"{rel.as_posix()}: {exc}")
                        continue
                    report.written += 1
            bar.update(len(chunk))
    if report.skipped_unreadable:
        log.warning("%d unreadable image(s) skipped", len(report.skipped_unreadable))
    return report
