"""Reference implementations the plain tests check against and the benchmarks time against."""
from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from skimage import data as skdata

from torchreid_privacy.metrics.settings import gaussian_taps


def photo_crops(count: int, height: int = 256, width: int = 128) -> List[Image.Image]:
    """``count`` distinct crops of scikit-image's photographs (real textures, not noise)."""
    photos = [Image.fromarray(getattr(skdata, name)()) for name in ("astronaut", "chelsea", "coffee")]
    images = []
    for i in range(count):
        photo = photos[i % len(photos)]
        w, h = photo.size
        left = (i * 37) % (w // 2)
        crop = photo.crop((left, 0, left + w // 2, h)).resize((width, height), Image.BILINEAR)
        images.append(crop.transpose(Image.FLIP_LEFT_RIGHT) if i % 2 else crop)
    return images


def as_batch(images: List[Image.Image]) -> torch.Tensor:
    arrays = np.stack([np.asarray(img) for img in images])
    return torch.from_numpy(arrays).permute(0, 3, 1, 2).float().div_(255).contiguous()


def pil_mosaic(img: Image.Image, block: int) -> Image.Image:
    """Top-left-pixel mosaic with PIL: an affine NEAREST sample at each cell's top-left
    pixel centre, then an integer NEAREST upscale (a plain ``resize`` down samples cell
    centres instead, and drops partial cells)."""
    w, h = img.size
    cols, rows = -(-w // block), -(-h // block)
    offset = 0.5 - block / 2
    affine = (block, 0, offset, 0, block, offset)
    corners = img.transform((cols, rows), Image.AFFINE, affine, Image.NEAREST)
    return corners.resize((cols * block, rows * block), Image.NEAREST).crop((0, 0, w, h))


def naive_conv2d_ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The common pytorch-ssim recipe: five 11x11 depthwise conv2d passes, border cropped."""
    c = a.shape[1]
    taps = gaussian_taps().float()
    window = (taps[:, None] * taps[None, :]).expand(c, 1, 11, 11).contiguous()

    def blur(z):
        return F.conv2d(z, window, padding=5, groups=c)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b, cov = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return ssim_map[..., 5:-5, 5:-5].mean((1, 2, 3))


def market_ranking_problem(num_query: int = 3368, num_gallery: int = 15913, dim: int = 512):
    """Random 512-d features -> Euclidean distmat at Market-1501's sizes, ~750 ids x 6 cameras."""
    g = torch.Generator().manual_seed(0)
    qf = torch.randn(num_query, dim, generator=g)
    gf = torch.randn(num_gallery, dim, generator=g)
    rs = np.random.RandomState(0)
    ids = (rs.randint(0, 750, num_query), rs.randint(0, 750, num_gallery),
           rs.randint(0, 6, num_query), rs.randint(0, 6, num_gallery))
    return (torch.cdist(qf, gf).numpy(),) + ids
