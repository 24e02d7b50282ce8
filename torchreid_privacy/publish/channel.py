"""The publication channel: P as the 8-bit image file a user publishes, encoded and decoded.

Why one object: ``anonymize`` writes P's files with :meth:`PublishChannel.encode`, and every
number about P (evaluation, the upgrade gates, attacks, ``search --protect-gallery``, views, the
frontier) is computed on :meth:`PublishChannel.publish`, which is ``decode(encode(to_uint8(P)))``
through the very same functions. A file ``anonymize`` wrote therefore decodes to exactly the
tensor that was scored for that image.

Example::

    channel = PublishChannel("jpeg", 95)
    p_published = channel.publish(p01)        # (N,3,H,W) in [0,1], as the files decode
    data = channel.encode(to_uint8(p01)[0])    # the bytes of one file (suffix: channel.suffix)
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import torch
from PIL import Image

# name -> (Pillow format, file suffix)
FORMATS = {"jpeg": ("JPEG", ".jpg"), "png": ("PNG", ".png"), "webp": ("WEBP", ".webp")}


def to_uint8(x01: torch.Tensor) -> np.ndarray:
    """(N, 3, H, W) [0,1] images -> (N, H, W, 3) uint8 arrays: round to the nearest 8-bit level."""
    return x01.detach().clamp(0, 1).mul(255).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def round_to_8bit(x01: torch.Tensor) -> torch.Tensor:
    """[0,1] images on the nearest 8-bit level, as floats: ``k / 255`` exactly as ``uint8 / 255``
    computes it. Test images are 8-bit files; this undoes the float error of normalize/denormalize
    so G sees exactly what ``anonymize`` feeds it for the same file."""
    return x01.clamp(0, 1).mul(255).round_().div_(255)


def from_uint8(arrays: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    """(N, H, W, 3) uint8 -> (N, 3, H, W) [0,1] float on ``like``'s device and dtype (ToTensor's arithmetic)."""
    x = torch.from_numpy(np.ascontiguousarray(arrays)).permute(0, 3, 1, 2)
    return x.to(device=like.device, dtype=torch.float32).div(255).to(like.dtype)


@dataclass(frozen=True)
class PublishChannel:
    """``format`` (jpeg | png | webp) and ``quality`` (1-100; JPEG and WebP) of published P.

    PNG is lossless: publishing only rounds to 8 bits. JPEG is Pillow's (libjpeg, 4:2:0 chroma
    subsampling, the IJG quality scaling), as Market-1501 and most camera crops are stored.
    """

    format: str = "jpeg"
    quality: int = 95

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"privacy.publish.format: expected one of {', '.join(FORMATS)}, got {self.format!r}")
        if isinstance(self.quality, bool) or not isinstance(self.quality, (int, np.integer)) \
                or not 1 <= self.quality <= 100:
            raise ValueError(f"privacy.publish.quality: expected an integer in 1-100, got {self.quality!r}")

    @classmethod
    def from_config(cls, publish: Mapping[str, Any]) -> "PublishChannel":
        """From the ``privacy.publish`` section (``format``, ``quality``)."""
        return cls(str(publish["format"]), int(publish["quality"]))

    @property
    def lossless(self) -> bool:
        return self.format == "png"

    @property
    def suffix(self) -> str:
        """The file suffix published P is written with (``.jpg``, ``.png``, ``.webp``)."""
        return FORMATS[self.format][1]

    @property
    def label(self) -> str:
        """``jpeg95``, ``png``, ``webp80``: how reports name the channel."""
        return self.format if self.lossless else f"{self.format}{self.quality}"

    def as_dict(self) -> dict:
        return {"format": self.format, "quality": int(self.quality)}

    # ------------------------------------------------------------------ one file
    def encode(self, arr: np.ndarray) -> bytes:
        """(H, W, 3) uint8 -> the published file's bytes."""
        buf = io.BytesIO()
        options = {} if self.lossless else {"quality": int(self.quality)}
        Image.fromarray(arr).save(buf, format=FORMATS[self.format][0], **options)
        return buf.getvalue()

    @staticmethod
    def decode(data: bytes) -> np.ndarray:
        """A published file's bytes -> (H, W, 3) uint8, as any reader of the file sees it."""
        with Image.open(io.BytesIO(data)) as im:
            return np.asarray(im.convert("RGB"))

    # ------------------------------------------------------------------ batches
    def publish_uint8(self, x01: torch.Tensor) -> np.ndarray:
        """(N, 3, H, W) [0,1] -> (N, H, W, 3) uint8: what the published files decode to."""
        arrays = to_uint8(x01)
        return np.stack([self.decode(self.encode(a)) for a in arrays]) if len(arrays) else arrays

    @torch.no_grad()
    def publish(self, x01: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) [0,1] -> the same images as published files decode, on ``x01``'s device."""
        return from_uint8(self.publish_uint8(x01), x01)

