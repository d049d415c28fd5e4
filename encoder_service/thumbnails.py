"""Small JPEG previews of the images the encoder has already decoded, for clients to show with hits."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from orbithash import InvalidInput

MAX_THUMBNAIL_SIZE = 1024  # pixels on the longer side
JPEG_QUALITY = 80


def check_thumbnail_size(size: int) -> int:
    """0 (none) or 1..MAX_THUMBNAIL_SIZE pixels; InvalidInput otherwise."""
    if not 0 <= size <= MAX_THUMBNAIL_SIZE:
        raise InvalidInput(f"thumbnail_size must be in 0..{MAX_THUMBNAIL_SIZE} pixels (0: none), got {size}")
    return size


def thumbnail(pixels: np.ndarray, width: int, height: int, size: int, quality: int = JPEG_QUALITY) -> bytes:
    """A JPEG whose longer side is ``size`` pixels, made from the model's input.

    ``pixels``: the decoded, resized image the model sees (3×S×S uint8); ``width`` × ``height``:
    the image as sent, whose aspect ratio the thumbnail gets back. It costs one small resize and
    one JPEG encode (no second decode); its detail is that of the model's input, so a thumbnail
    larger than S pixels is an upscale of it.
    """
    scale = size / max(width, height)
    target = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = Image.fromarray(np.ascontiguousarray(pixels.transpose(1, 2, 0)), "RGB")
    if image.size != target:
        image = image.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()
