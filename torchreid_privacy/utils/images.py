"""Conversions between image files' uint8 arrays, torchreid's normalized batches, [0,1] images
and GAN space [-1,1].

torchreid feeds ``(x - mean) / std``; desensitizers and image metrics work on [0,1];
pix2pix generators and discriminators work on [-1,1]. Keeping the three spaces explicit
avoids the classic bug of computing PSNR on normalized tensors. Every tool that feeds a model
image files (folders, search, ONNX folders, video boxes) resizes and batches them here, as
torchreid's test transform does, so their P and features are the evaluation's.
"""
from __future__ import annotations

import contextlib
import os
from typing import Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

MeanStd = Union[Sequence[float], torch.Tensor]


class ImageTooLarge(ValueError):
    """An image with more pixels than PIL agrees to decode (``PIL.Image.MAX_IMAGE_PIXELS``, twice it for
    an error): a decompression bomb, e.g. a 24 KB 1-bit PNG of 20000 x 10000. A ValueError, so every
    reader skips, counts and names it like any other unreadable image."""


# what reading an image file may raise: every tool that skips unreadable images catches these
UNREADABLE_IMAGE = (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@contextlib.contextmanager
def bombs_unreadable() -> Iterator[None]:
    """Inside the block PIL's ``DecompressionBombError`` (an ``Exception``, not an ``OSError``: callers
    catching "unreadable" missed it, and one such file ended a whole run) is :class:`ImageTooLarge`."""
    try:
        yield
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"too large to decode ({exc})") from None


def resize_rgb(arr: np.ndarray, height: int, width: int) -> np.ndarray:
    """(H, W, 3) uint8 at ``height x width`` as torchreid's test transform resizes (``Resize((h, w))``
    on a PIL image is PIL's bilinear resize); an image already that size is returned as it is."""
    if arr.shape[:2] == (height, width):
        return arr
    return np.asarray(Image.fromarray(np.ascontiguousarray(arr)).resize((width, height), Image.BILINEAR))


def to_batch01(arrays: Sequence[np.ndarray], device: Union[str, torch.device]) -> torch.Tensor:
    """uint8 HWC arrays -> (N, 3, H, W) float in [0,1] (``ToTensor``'s arithmetic)."""
    x = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return x.to(device=device, dtype=torch.float32).div(255)


def _as_tensor(v: MeanStd, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=like.dtype, device=like.device)
    return t.view(1, -1, 1, 1)


def denormalize(x: torch.Tensor, mean: MeanStd, std: MeanStd) -> torch.Tensor:
    """torchreid-normalized batch -> [0,1] images (clamped: random erasing may overshoot)."""
    return (x * _as_tensor(std, x) + _as_tensor(mean, x)).clamp_(0.0, 1.0)


def normalize(x01: torch.Tensor, mean: MeanStd, std: MeanStd) -> torch.Tensor:
    return (x01 - _as_tensor(mean, x01)) / _as_tensor(std, x01)


def to_gan(x01: torch.Tensor) -> torch.Tensor:
    return x01 * 2.0 - 1.0


def from_gan(x: torch.Tensor) -> torch.Tensor:
    return ((x + 1.0) * 0.5).clamp(0.0, 1.0)


def save_grid(path: str, columns: Sequence[torch.Tensor]) -> None:
    """Save a PNG whose rows are images and whose columns are O | M | P | R ([0,1] tensors)."""
    from torchvision.utils import save_image

    import io

    from torchreid_privacy.utils import atomic

    n = min(c.shape[0] for c in columns)
    rows = torch.stack([c[:n].detach().float().cpu() for c in columns], dim=1)  # n, k, C, H, W
    buf = io.BytesIO()
    save_image(rows.flatten(0, 1), buf, format="PNG", nrow=len(columns), padding=2)
    # atomic: an unpredictable temp name beside it (never a link planted there), renamed over it
    folder, name = os.path.split(os.path.abspath(path))
    atomic.write_bytes(atomic.safe_child(folder, name), buf.getvalue())
