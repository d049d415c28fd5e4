"""Image decoding and the model's preprocessing, shared by training and serving.

Training and the encoder service call the same two functions, so a served code equals the code
the model produced while it was evaluated.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

from orbithash import InvalidInput
from orbithash.model_facts import ModelFacts

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 64 * 1024 * 1024
SUPPORTED_FORMATS = ("JPEG", "PNG", "TIFF")


def _to_rgb8(img: Image.Image) -> np.ndarray:
    """RGB uint8 from any supported mode; 16-bit and float bands are rescaled by their range.

    Multi-band imagery keeps its first three bands (taken as R, G, B); single-band is repeated.
    """
    if img.mode in ("RGB", "L", "P", "RGBA", "LA", "CMYK", "YCbCr", "1"):
        return np.asarray(img.convert("RGB"), dtype=np.uint8)
    arr = np.asarray(img)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    arr = arr[:, :, :3].astype(np.float64)
    if arr.shape[2] == 1:
        arr = np.repeat(arr, 3, axis=2)
    if np.issubdtype(np.asarray(img).dtype, np.integer) and arr.max() <= 255 and arr.min() >= 0:
        return arr.astype(np.uint8)
    lo, hi = float(arr.min()), float(arr.max())
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip((arr - lo) * scale, 0, 255).astype(np.uint8)


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/TIFF bytes to an H×W×3 uint8 array; raise InvalidInput with the reason."""
    if not data:
        raise InvalidInput("empty image bytes")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"image is {len(data)} bytes, limit {MAX_IMAGE_BYTES}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in SUPPORTED_FORMATS:
                raise InvalidInput(f"unsupported image format {img.format}; use JPEG, PNG or TIFF")
            if img.width * img.height > MAX_PIXELS:
                raise InvalidInput(f"image has {img.width}x{img.height} pixels, limit {MAX_PIXELS}")
            img.load()
            return _to_rgb8(img)
    except InvalidInput:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"cannot decode image: {exc}") from exc


def preprocess(rgb: np.ndarray, facts: ModelFacts) -> np.ndarray:
    """H×W×3 uint8 → 3×S×S float32 normalised as the model expects (bilinear resize)."""
    size = facts.input_size
    if rgb.shape[0] != size or rgb.shape[1] != size:
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    x = rgb.astype(np.float32)
    x = (x - np.asarray(facts.mean, np.float32)) / np.asarray(facts.std, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess_batch(images: list[bytes], facts: ModelFacts) -> np.ndarray:
    """Decode and preprocess a batch; the error names the failing image's index."""
    out = np.empty((len(images), 3, facts.input_size, facts.input_size), np.float32)
    for i, data in enumerate(images):
        try:
            out[i] = preprocess(decode_image(data), facts)
        except InvalidInput as exc:
            raise InvalidInput(f"image {i}: {exc}") from exc
    return out
