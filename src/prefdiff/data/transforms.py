"""Pair transforms: one resize, one crop box and one flip for both images of a pair.

(The original Diffusion-DPO code flipped winner and loser independently, so a flipped winner
was compared with an unflipped loser; here the pair is transformed as one.) Unpaired images
(``images.jsonl``) take the same transform, one image at a time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image


@dataclass
class TransformedImage:
    """``pixels [3,H,W]`` in [-1, 1]; SDXL micro-conditioning ``original_size`` (h, w) and
    ``crop_top_left`` (top, left) in the resized image's coordinates."""

    pixels: torch.Tensor
    original_size: tuple[int, int]
    crop_top_left: tuple[int, int]


def _resize_short_side(image: Image.Image, resolution: int) -> Image.Image:
    width, height = image.size
    scale = resolution / min(width, height)
    size = (max(resolution, round(width * scale)), max(resolution, round(height * scale)))
    return image if size == image.size else image.resize(size, Image.Resampling.BICUBIC)


def _to_pixels(image: Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 127.5 - 1.0  # [H,W,3] in [-1,1]
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def transform_images(
    images: Sequence[Image.Image],
    resolution: int,
    center_crop: bool = True,
    random_flip: bool = False,
    generator: torch.Generator | None = None,
) -> list[TransformedImage]:
    """Resize each to ``resolution`` on the short side and crop a square at the same relative
    position; flip all or none. Randomness comes from ``generator`` only (one draw for all)."""
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    crop_u, crop_v, flip_u = torch.rand(3, generator=gen).tolist()
    flip = random_flip and flip_u < 0.5
    out = []
    for image in images:
        original = (image.height, image.width)
        resized = _resize_short_side(image, resolution)
        spare_w, spare_h = resized.width - resolution, resized.height - resolution
        if center_crop:
            left, top = spare_w // 2, spare_h // 2
        else:
            left, top = round(crop_u * spare_w), round(crop_v * spare_h)
        cropped = resized.crop((left, top, left + resolution, top + resolution))
        if flip:
            cropped = cropped.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
            left = resized.width - (left + resolution)  # where the crop sits in the flipped image
        out.append(TransformedImage(_to_pixels(cropped), original, (top, left)))
    return out


def transform_pair(
    winner: Image.Image,
    loser: Image.Image,
    resolution: int,
    center_crop: bool = True,
    random_flip: bool = False,
    generator: torch.Generator | None = None,
) -> tuple[TransformedImage, TransformedImage]:
    """:func:`transform_images` of a pair: one crop position and one flip for both images."""
    won, lost = transform_images([winner, loser], resolution, center_crop, random_flip, generator)
    return won, lost
