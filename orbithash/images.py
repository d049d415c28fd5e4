"""Image decoding and the model's preprocessing, shared by training and serving.

Training and the encoder service call the same two functions, so a served code equals the code
the model produced while it was evaluated.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from orbithash import InvalidInput
from orbithash.model_facts import ModelFacts

MAX_IMAGE_BYTES = 64 * 1024 * 1024
MAX_PIXELS = 64 * 1024 * 1024
SUPPORTED_FORMATS = ("JPEG", "PNG")  # TIFF goes through tifffile


TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def bands_to_rgb8(bands: np.ndarray) -> np.ndarray:
    """H×W×B samples of any depth → H×W×3 uint8, by the documented rule.

    Band choice: one band is repeated as grey; two bands (grey + alpha) keep the first; three or
    more keep the first three as R, G, B (alpha or near-infrared beyond them is dropped).
    Depth: uint8 is kept; any other type (16-bit, 32-bit, float) is stretched linearly from the
    image's minimum..maximum over the kept bands to 0..255, so relative band balance survives.
    """
    if bands.ndim == 2:
        bands = bands[:, :, None]
    if bands.shape[2] == 2:
        bands = bands[:, :, :1]
    rgb = np.repeat(bands, 3, axis=2) if bands.shape[2] == 1 else bands[:, :, :3]
    if rgb.dtype == np.uint8:
        return np.ascontiguousarray(rgb)
    values = rgb.astype(np.float64)
    finite = values[np.isfinite(values)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return np.clip(np.nan_to_num((values - lo) * scale, nan=0.0), 0, 255).astype(np.uint8)


def _decode_tiff(data: bytes) -> np.ndarray:
    """TIFF through tifffile: 8/16/32-bit and float samples, contiguous or planar, any band count."""
    try:
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            series = tif.series[0]
            shape = series.shape
            if int(np.prod(shape)) > MAX_PIXELS * 16:
                raise InvalidInput(f"TIFF of shape {shape} is over the size limit")
            arr = series.asarray()
            axes = series.axes
    except InvalidInput:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InvalidInput(f"cannot decode TIFF: {exc}") from exc
    keep = [a for a in axes if a in "YXSC"]
    if len(keep) != arr.ndim:  # e.g. a stack of pages (Q/Z/T axes): take the first plane
        while arr.ndim > len(keep):
            arr = arr[0]
        axes = "".join(keep)[-arr.ndim:]
    if arr.ndim == 3 and axes.index("Y") > axes.index(next(a for a in axes if a in "SC")):
        arr = np.moveaxis(arr, 0, -1)  # planar (bands first) → bands last
    if arr.shape[0] * arr.shape[1] > MAX_PIXELS:
        raise InvalidInput(f"image has {arr.shape[1]}x{arr.shape[0]} pixels, limit {MAX_PIXELS}")
    return bands_to_rgb8(arr)


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/TIFF bytes to an H×W×3 uint8 array; raise InvalidInput with the reason."""
    if not data:
        raise InvalidInput("empty image bytes")
    if len(data) > MAX_IMAGE_BYTES:
        raise InvalidInput(f"image is {len(data)} bytes, limit {MAX_IMAGE_BYTES}")
    if data[:4] in TIFF_MAGIC:
        return _decode_tiff(data)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            if img.format not in SUPPORTED_FORMATS:
                raise InvalidInput(f"unsupported image format {img.format}; use JPEG, PNG or TIFF")
            if img.width * img.height > MAX_PIXELS:
                raise InvalidInput(f"image has {img.width}x{img.height} pixels, limit {MAX_PIXELS}")
            img.load()
            return np.asarray(img.convert("RGB"), dtype=np.uint8)
    except InvalidInput:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, Image.DecompressionBombError,
            Image.DecompressionBombWarning) as exc:
        raise InvalidInput(f"cannot decode image: {exc}") from exc


def resize_pixels(rgb: np.ndarray, size: int) -> np.ndarray:
    """H×W×3 uint8 → 3×S×S uint8 (bilinear): what the served model takes as input."""
    if rgb.shape[0] != size or rgb.shape[1] != size:
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def normalise(pixels: np.ndarray, facts: ModelFacts) -> np.ndarray:
    """uint8 pixels (…×3×S×S) → float32 (x − mean) / std, as the exported graph does inside."""
    shape = (3, 1, 1)
    mean = np.asarray(facts.mean, np.float32).reshape(shape)
    std = np.asarray(facts.std, np.float32).reshape(shape)
    return (pixels.astype(np.float32) - mean) / std


def preprocess(rgb: np.ndarray, facts: ModelFacts) -> np.ndarray:
    """H×W×3 uint8 → 3×S×S float32 normalised: the network's input during training."""
    return normalise(resize_pixels(rgb, facts.input_size), facts)


def pixels_batch(images: list[bytes], facts: ModelFacts) -> np.ndarray:
    """Decode and resize a batch to N×3×S×S uint8; the error names the failing image's index."""
    out = np.empty((len(images), 3, facts.input_size, facts.input_size), np.uint8)
    for i, data in enumerate(images):
        try:
            out[i] = resize_pixels(decode_image(data), facts.input_size)
        except InvalidInput as exc:
            raise InvalidInput(f"image {i}: {exc}") from exc
    return out

