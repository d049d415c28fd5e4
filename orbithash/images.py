"""Image decoding and the model's preprocessing, shared by training and serving.

Training and the encoder service call the same functions, so a served code equals the code the
model produced while it was evaluated.

Decoding is bounded before any pixel is decoded: :func:`read_header` reads only the header (Pillow
opens lazily; tifffile lists a series' shape and sample type without decoding it) and estimates
the bytes the decode will need at its peak; :func:`check_limits` refuses an image over the
:class:`DecodeLimits`. Samples deeper than 8 bits are stretched to uint8 in row blocks, so no
float64 copy of the whole image is ever made, and :func:`decode_pixels` lets libjpeg decode a
JPEG far larger than the model's input at ½, ¼ or ⅛ scale (never one near the input size: a
256×256 UC Merced scene decodes to exactly the pixels it always did).
"""

from __future__ import annotations

import io
import math
import struct
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import tifffile
from PIL import Image, UnidentifiedImageError

from orbithash import InvalidInput
from orbithash.model_facts import ModelFacts

MB = 1_000_000
SUPPORTED_FORMATS = ("JPEG", "PNG")  # TIFF goes through tifffile
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")

# Bytes per pixel of a decoded image inside Pillow: 1 for 1/L/P, 2 for I;16*, else 4 (one int32 per pixel).
_PILLOW_BYTES = {"1": 1, "L": 1, "P": 1}
# A JPEG is reduced in the DCT domain only when the reduced image keeps at least this many times
# the model's input size on both sides; images below 2 × DRAFT_MARGIN × size decode at full scale.
DRAFT_MARGIN = 2
BLOCK_BYTES = 8 * 1024 * 1024  # float64 working block of the depth conversion
DECODER_SLACK = 8 * MB          # decoders' own buffers (rows, Huffman tables, one TIFF strip's bytes)
# tifffile's series detection grows faster than linearly with the page count (4000 one-pixel pages:
# 2.5 s, 20 000: 68 s for 4.8 MB); counting the pages first costs 1 µs each.
MAX_TIFF_PAGES = 256
# Pillow parses PNG chunks and JPEG marker segments in Python (about 2-4 µs each, at open and again
# at load), and libjpeg runs over every coefficient of the image once per progressive scan: 300
# repeated scans in a 100 KB JPEG of 4000² pixels take 4.5 s. Legitimate files have tens of each.
MAX_JPEG_SEGMENTS = 512  # marker segments before the first scan
MAX_JPEG_SCANS = 64      # standard progressive JPEGs have 6-10; libjpeg's "max_scans" advice is ~100
MAX_JPEG_STRAY_BYTES = 65_536  # Pillow skips bytes between segments one read at a time (about 1 µs each)
# tifffile's series detection for these formats reads their XML or tags and may build lists as long
# as the metadata claims (OME's NumPlanes=10⁸: 1.5 GB); a ground station's TIFFs are plain or GeoTIFF.
_TIFF_NO_METADATA_SERIES = {f"is_{kind}": False for kind in (
    "lsm", "mmstack", "ome", "imagej", "ndtiff", "fluoview", "stk", "sis", "svs", "scn", "qpi", "ndpi", "bif",
    "avs", "eer", "philips", "scanimage", "nih", "mdgel")}
# Deflate strips are inflated with a bound here; tifffile (without imagecodecs) would inflate any
# strip whole, and LZMA or PackBits the same way or slower.
_TIFF_COMPRESSIONS = {1, 8, 32946}  # none, Adobe deflate, deflate
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class DecodeLimits:
    """Per-image bounds, checked on the header before any pixel is decoded.

    ``max_encoded_bytes``: size of the image as sent; ``max_pixels``: width × height as sent;
    ``max_decode_bytes``: estimated peak working memory of decoding it (see :attr:`ImageHeader.decode_bytes`).
    """

    max_encoded_bytes: int = 64 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_decode_bytes: int = 400 * MB

    def __post_init__(self) -> None:
        for name in ("max_encoded_bytes", "max_pixels", "max_decode_bytes"):
            if getattr(self, name) < 1:
                raise ValueError(f"DecodeLimits.{name} must be positive")


DEFAULT_LIMITS = DecodeLimits()


@dataclass(frozen=True)
class ImageHeader:
    """What an image's header says, and what decoding it will cost.

    ``width``/``height``: the image as sent (of a TIFF: its first plane); ``bands``: samples per
    pixel as stored; ``reduce``: the JPEG DCT scaling the decode will use (1, 2, 4 or 8);
    ``decode_bytes``: estimated peak working memory of the decode this header was read for
    (:func:`decode_image` when ``size`` was None, :func:`decode_pixels` otherwise).
    """

    format: str
    width: int
    height: int
    bands: int
    sample_type: str
    decode_bytes: int
    reduce: int = 1
    size: int | None = None
    tiff_pages: int = 0  # TIFF: pages of the series the first plane spans (0: the whole series)

    @property
    def pixels(self) -> int:
        return self.width * self.height

    def describe(self) -> str:
        return f"{self.width}x{self.height} pixels ({mpx(self.pixels)})"


def mpx(pixels: float) -> str:
    return f"{pixels / 1e6:.1f} Mpx"


def megabytes(n: float) -> str:
    return f"{n / MB:.0f} MB"


# -- header ------------------------------------------------------------------------------------------


def read_header(data: bytes, size: int | None = None) -> ImageHeader:
    """The header of JPEG/PNG/TIFF bytes, without decoding pixels; InvalidInput if unreadable.

    ``size``: the square side the pixels will be resized to (:func:`decode_pixels`); None for a
    full-size decode (:func:`decode_image`). It decides JPEG reduction and the memory estimate.
    """
    if not data:
        raise InvalidInput("empty image bytes")
    if data[:4] in TIFF_MAGIC:
        return _tiff_header(data, size)
    scans = _check_structure(data)
    img = _open_pillow(data)
    layers = len(img.getbands())
    reduce = _jpeg_reduce(img, size)
    width, height = img.size
    dw, dh = math.ceil(width / reduce), math.ceil(height / reduce)
    stored = dw * dh * _PILLOW_BYTES.get(img.mode, 2 if img.mode.startswith("I;16") else 4)
    converted = 0 if img.mode == "RGB" else dw * dh * 4
    # A JPEG of more than one scan (progressive, or baseline with its components in separate scans)
    # holds every DCT coefficient (2 bytes each) of the full-size image while it decodes.
    buffered = img.format == "JPEG" and (img.info.get("progressive") or scans > 1)
    coefficients = width * height * layers * 2 if buffered else 0
    as_array = dw * dh * 6 if size is None else 0  # tobytes() joins 3-byte chunks; decode_pixels stays in Pillow
    peak = stored + max(coefficients, converted + as_array)
    sample = "uint16" if img.mode.startswith("I;16") else {"I": "int32", "F": "float32"}.get(img.mode, "uint8")
    return ImageHeader(str(img.format), width, height, layers, sample, peak + DECODER_SLACK, reduce, size)


def _check_structure(data: bytes) -> int:
    """Refuse PNG/JPEG files whose chunk, segment or scan counts would cost seconds, not pixels;
    the number of scans of a JPEG (0 for anything else)."""
    if data.startswith(PNG_SIGNATURE):
        _check_png_chunks(data)
    elif data.startswith(b"\xff\xd8"):
        return _check_jpeg_segments(data)
    return 0


def _check_png_chunks(data: bytes) -> None:
    allowed = max(1024, len(data) // 1024)  # a legitimate PNG's IDAT chunks hold kilobytes each
    chunks, pos = 0, len(PNG_SIGNATURE)
    while pos + 8 <= len(data):
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > allowed:
            raise InvalidInput(f"PNG of more than {allowed} chunks, the limit for {len(data):,} bytes; re-encode it")
        if kind == b"IEND":
            break
        pos += 12 + length


def _check_jpeg_segments(data: bytes) -> int:
    """Count as Pillow parses: it skips stray bytes (and 0xFF00 pairs) between segments and goes on."""
    scans = data.count(b"\xff\xda")  # 0xFF in entropy-coded data is always stuffed: these are scans
    if scans > MAX_JPEG_SCANS:
        raise InvalidInput(f"JPEG of {scans} scans is over the limit of {MAX_JPEG_SCANS}; "
                           "re-encode it as baseline or standard progressive")
    segments, stray, pos = 0, 0, 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF or data[pos + 1] == 0x00:
            marker_at = data.find(b"\xff", pos + 1 if data[pos] == 0xFF else pos)
            stray += (len(data) if marker_at < 0 else marker_at) - pos
            if stray > MAX_JPEG_STRAY_BYTES:
                raise InvalidInput(f"JPEG with more than {MAX_JPEG_STRAY_BYTES} stray bytes between its marker "
                                   "segments; re-encode it")
            if marker_at < 0:
                break
            pos = marker_at
            continue
        marker = data[pos + 1]
        if marker == 0xFF or 0xD0 <= marker <= 0xD8 or marker == 0x01:  # fill byte, RSTn, SOI, TEM
            pos += 1 if marker == 0xFF else 2
            continue
        if marker == 0xDA:
            break
        segments += 1
        if segments > MAX_JPEG_SEGMENTS:
            raise InvalidInput(f"JPEG of more than {MAX_JPEG_SEGMENTS} marker segments before its image "
                               "data; re-encode it")
        pos += 2 + struct.unpack_from(">H", data, pos + 2)[0]
    return scans


def _open_pillow(data: bytes) -> Image.Image:
    try:
        with warnings.catch_warnings():
            # The caller's DecodeLimits govern the size; Pillow's own bound (89 Mpx) would only warn.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=SUPPORTED_FORMATS)  # no other parser sees the bytes
    except Image.DecompressionBombError as exc:
        raise InvalidInput(f"{str(exc).rstrip('.')}; downscale it before sending") from exc
    except UnidentifiedImageError as exc:  # its message is a repr of our buffer: say what was seen
        raise InvalidInput(f"not a JPEG, PNG or TIFF image (it starts with {data[:8]!r})") from exc
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"cannot decode image: {exc}") from exc
    if img.format not in SUPPORTED_FORMATS:
        raise InvalidInput(f"unsupported image format {img.format}; use JPEG, PNG or TIFF")
    return img


def _jpeg_reduce(img: Image.Image, size: int | None) -> int:
    """The DCT scaling Pillow's draft picks for a target of DRAFT_MARGIN × size (1 if none applies)."""
    if size is None or img.format != "JPEG" or len(img.tile) != 1:
        return 1
    target = DRAFT_MARGIN * size
    factor = min(img.width // target, img.height // target)
    return next((s for s in (8, 4, 2) if factor >= s), 1)


def _open_tiff(data: bytes) -> tifffile.TiffFile:
    """tifffile over ``data`` once its page chain is known to be short and sound."""
    _check_tiff_chain(data)
    return tifffile.TiffFile(io.BytesIO(data), **_TIFF_NO_METADATA_SERIES)


def _check_tiff_chain(data: bytes) -> None:
    """Walk the chain of pages (IFDs) before tifffile does: it looks for a loop only at its 100th
    page, so a chain looping back after that kept it counting for ever (its series detection
    counts the pages first); and counting costs about 1 µs a page, for millions in 64 MB."""
    order = "<" if data[:2] == b"II" else ">"
    big = data[2:4] in (b"+\x00", b"\x00+")
    count_format, entry_bytes, offset_format = ("Q", 20, "Q") if big else ("H", 12, "I")
    count_size, offset_size = struct.calcsize(count_format), struct.calcsize(offset_format)
    first_at = 8 if big else 4
    cut = InvalidInput("TIFF page chain points outside the file; the file is damaged or cut short")
    if len(data) < first_at + offset_size:
        raise cut
    offset = struct.unpack_from(order + offset_format, data, first_at)[0]
    page_of: dict[int, int] = {}
    while offset:
        if offset in page_of:
            raise InvalidInput(f"TIFF page chain loops back to page {page_of[offset]}; the file is damaged")
        if len(page_of) == MAX_TIFF_PAGES:
            raise InvalidInput(f"TIFF of more than {MAX_TIFF_PAGES} pages is over the limit of {MAX_TIFF_PAGES}; "
                               "send one image per file")
        page_of[offset] = len(page_of)
        if offset + count_size > len(data):
            raise cut
        next_at = offset + count_size + struct.unpack_from(order + count_format, data, offset)[0] * entry_bytes
        if next_at + offset_size > len(data):
            raise cut
        offset = struct.unpack_from(order + offset_format, data, next_at)[0]


def _check_tiff_strips(data: bytes, tif: tifffile.TiffFile) -> None:
    """Only uncompressed and deflate TIFFs, and no deflate strip (or tile) inflating past the bytes
    its pixels take: the header's estimate counts one strip's worth."""
    for p, page in enumerate(tif.pages):
        if not isinstance(page, tifffile.TiffPage) or not page.dataoffsets:
            continue
        compression = int(page.compression)
        if compression not in _TIFF_COMPRESSIONS:
            name = getattr(page.compression, "name", compression)
            raise InvalidInput(f"TIFF compression {name} is not supported; send it uncompressed or with deflate (zlib)")
        if compression == 1:
            continue
        expected = math.prod(page.chunks) * np.dtype(page.dtype).itemsize
        kind = "tile" if page.is_tiled else "strip"
        for i, (at, size) in enumerate(zip(page.dataoffsets, page.databytecounts, strict=True)):
            try:
                inflated = zlib.decompressobj().decompress(data[at:at + size], expected + 1)
            except zlib.error as exc:
                raise InvalidInput(f"TIFF {kind} {i} of page {p} is not valid deflate data: {exc}") from exc
            if len(inflated) > expected:
                raise InvalidInput(f"TIFF {kind} {i} of page {p} inflates past the {expected} bytes it should hold; "
                                   "the file is damaged or built to exhaust memory")


def _first_series(tif: tifffile.TiffFile) -> tifffile.TiffPageSeries:
    if not tif.series:
        raise InvalidInput("TIFF holds no image")
    return tif.series[0]


def _tiff_layout(series: tifffile.TiffPageSeries) -> tuple[tuple[int, ...], str, int]:
    """(shape, axes) of the series' first plane, and how many of its pages hold that plane (0: all).

    A plane keeps the Y, X, S and C axes; leading axes beyond them (pages of a stack, time, depth)
    are indexed at 0, as they always were.
    """
    shape, axes = tuple(series.shape), series.axes
    keep = "".join(a for a in axes if a in "YXSC")
    plane_shape = shape[len(shape) - len(keep):]
    if len(plane_shape) not in (2, 3) or "Y" not in keep or "X" not in keep:
        raise InvalidInput(f"TIFF with axes {axes} and shape {shape} is not an image this service reads")
    page = series.pages[0] if series.pages else None
    plane_size, page_size = math.prod(plane_shape), math.prod(page.shape) if page is not None else 0
    pages = 0
    if (page is not None and len(shape) > len(keep) and page_size and plane_size % page_size == 0
            and None not in series.pages[:plane_size // page_size]):
        pages = plane_size // page_size
    return plane_shape, keep, pages


def _tiff_header(data: bytes, size: int | None) -> ImageHeader:
    try:
        with _open_tiff(data) as tif:
            _check_tiff_strips(data, tif)
            series = _first_series(tif)
            plane_shape, axes, pages = _tiff_layout(series)
            dtype = np.dtype(series.dtype)
            page = series.pages[0]
            # tifffile decodes one strip or tile at a time (maxworkers=1): its bytes and its samples
            segment = (math.prod(page.chunks) * dtype.itemsize + max(page.databytecounts, default=0)
                       if page is not None else 0)
    except InvalidInput:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InvalidInput(f"cannot decode TIFF: {exc}") from exc
    if dtype.kind not in "biuf":
        raise InvalidInput(f"TIFF samples of type {dtype} are not supported; use integer or float samples")
    height, width = plane_shape[axes.index("Y")], plane_shape[axes.index("X")]
    bands = math.prod(plane_shape) // (height * width)
    px = width * height
    native = math.prod(plane_shape if pages else series.shape) * dtype.itemsize  # what tifffile returns
    converting = 3 * px + (0 if dtype == np.uint8 else 2 * BLOCK_BYTES)  # uint8 RGB + a float64 block
    resizing = 7 * px if size is not None else 0  # the uint8 RGB plus Pillow's copy of it
    peak = max(native + max(segment, converting), resizing)
    return ImageHeader("TIFF", width, height, bands, dtype.name, peak + DECODER_SLACK, 1, size, pages)


def check_encoded_size(encoded_bytes: int, limits: DecodeLimits) -> None:
    """InvalidInput if the image as sent is over the per-image limit (checked before parsing it)."""
    if encoded_bytes > limits.max_encoded_bytes:
        raise InvalidInput(f"{megabytes(encoded_bytes)} as sent is over the per-image limit of "
                           f"{megabytes(limits.max_encoded_bytes)}; compress or downscale it before sending")


def check_limits(header: ImageHeader, limits: DecodeLimits) -> None:
    """InvalidInput, saying what to do, if the image is over a per-image limit."""
    if header.pixels > limits.max_pixels:
        raise InvalidInput(f"{header.describe()} is over the per-image limit of {mpx(limits.max_pixels)}; "
                           "downscale it before sending")
    if header.decode_bytes > limits.max_decode_bytes:
        lighter = " or send 8-bit RGB" if header.sample_type != "uint8" or header.bands > 3 else ""
        raise InvalidInput(
            f"{header.describe()} of {header.bands} {header.sample_type} band(s) needs about "
            f"{megabytes(header.decode_bytes)} to decode, over the per-image limit of "
            f"{megabytes(limits.max_decode_bytes)}; downscale it{lighter} before sending")


# -- decoding ----------------------------------------------------------------------------------------


def decode_image(data: bytes, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode JPEG/PNG/TIFF bytes to an H×W×3 uint8 array at full size; InvalidInput with the reason."""
    check_encoded_size(len(data), limits)
    header = read_header(data)
    check_limits(header, limits)
    return decode_checked(data, header)


def decode_pixels(data: bytes, size: int, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode and resize to 3×S×S uint8, the model's input: equal to ``resize_pixels(decode_image(data), size)``
    except that a JPEG at least 2·DRAFT_MARGIN times larger than ``size`` is decoded at reduced scale."""
    check_encoded_size(len(data), limits)
    header = read_header(data, size)
    check_limits(header, limits)
    return decode_checked(data, header)


def decode_checked(data: bytes, header: ImageHeader) -> np.ndarray:
    """Decode an image whose header (from :func:`read_header`) passed :func:`check_limits`.

    H×W×3 uint8 if the header was read without a size, else 3×S×S uint8.
    """
    if header.format == "TIFF":
        rgb = _decode_tiff(data)
        return rgb if header.size is None else resize_pixels(rgb, header.size)
    img = _open_pillow(data)
    try:
        if header.reduce > 1:
            img.draft(img.mode, (DRAFT_MARGIN * header.size, DRAFT_MARGIN * header.size))
        img.load()
        rgb = img if img.mode == "RGB" else img.convert("RGB")
        if header.size is None:
            return np.asarray(rgb, dtype=np.uint8)
        if rgb.size != (header.size, header.size):
            rgb = rgb.resize((header.size, header.size), Image.BILINEAR)
        return np.ascontiguousarray(np.asarray(rgb, dtype=np.uint8).transpose(2, 0, 1))
    except (OSError, ValueError, SyntaxError) as exc:
        raise InvalidInput(f"cannot decode image: {exc}") from exc


def _decode_tiff(data: bytes) -> np.ndarray:
    """TIFF through tifffile: 8/16/32-bit and float samples, contiguous or planar, any band count."""
    try:
        with _open_tiff(data) as tif:
            series = _first_series(tif)
            plane_shape, axes, pages = _tiff_layout(series)
            if pages:  # read only the pages of the first plane of a stack
                key = 0 if pages == 1 else slice(0, pages)
                arr = series.asarray(key=key, maxworkers=1).reshape(plane_shape)
            else:
                arr = series.asarray(maxworkers=1)
                while arr.ndim > len(axes):  # a stack of planes (Q/Z/T axes): take the first
                    arr = arr[0]
    except InvalidInput:
        raise
    except Exception as exc:  # tifffile raises many types for damaged files
        raise InvalidInput(f"cannot decode TIFF: {exc}") from exc
    if arr.ndim == 3 and axes.index("Y") > axes.index(next(a for a in axes if a in "SC")):
        arr = np.moveaxis(arr, 0, -1)  # planar (bands first) → bands last
    return bands_to_rgb8(arr)


def bands_to_rgb8(bands: np.ndarray) -> np.ndarray:
    """H×W×B samples of any depth → H×W×3 uint8, by the documented rule.

    Band choice: one band is repeated as grey; two bands (grey + alpha) keep the first; three or
    more keep the first three as R, G, B (alpha or near-infrared beyond them is dropped).
    Depth: uint8 is kept; any other type (16-bit, 32-bit, float) is stretched linearly from the
    image's minimum..maximum over the kept bands (finite values only) to 0..255, so relative band
    balance survives. The stretch runs in blocks of rows into the uint8 output: its working memory
    is a few MB whatever the image size, and each value is computed as ``(v - lo) * 255 / (hi - lo)``
    in float64, then clipped and truncated.
    """
    if bands.ndim == 2:
        bands = bands[:, :, None]
    if bands.ndim != 3:
        raise InvalidInput(f"image samples of shape {bands.shape} are not H×W×bands")
    kept = bands[:, :, :1] if bands.shape[2] <= 2 else bands[:, :, :3]
    if kept.dtype == np.uint8:
        return np.repeat(kept, 3, axis=2) if kept.shape[2] == 1 else np.ascontiguousarray(kept)
    if kept.dtype.kind not in "biuf":
        raise InvalidInput(f"samples of type {kept.dtype} are not supported; use integer or float samples")
    lo, hi = _finite_range(kept)
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    out = np.empty((*kept.shape[:2], 3), np.uint8)
    for rows, cols in _blocks(kept.shape[0], kept.shape[1], kept.shape[2]):
        block = kept[rows, cols].astype(np.float64)
        block -= lo
        block *= scale
        np.nan_to_num(block, copy=False, nan=0.0)
        np.clip(block, 0, 255, out=block)
        out[rows, cols] = block  # one band broadcasts to R, G, B
    return out


def _finite_range(kept: np.ndarray) -> tuple[float, float]:
    """(min, max) over the finite samples, on the native type; (0, 0) when there is none."""
    if kept.size == 0:
        return 0.0, 0.0
    lo, hi = kept.min(), kept.max()
    if kept.dtype.kind != "f" or (np.isfinite(lo) and np.isfinite(hi)):
        return float(lo), float(hi)
    lo, hi = math.inf, -math.inf  # NaN or ±inf present: scan block by block
    for rows, cols in _blocks(kept.shape[0], kept.shape[1], kept.shape[2]):
        block = kept[rows, cols]
        finite = block[np.isfinite(block)]
        if finite.size:
            lo, hi = min(lo, float(finite.min())), max(hi, float(finite.max()))
    return (lo, hi) if lo <= hi else (0.0, 0.0)


def _blocks(height: int, width: int, bands: int) -> Iterator[tuple[slice, slice]]:
    """(rows, cols) slices covering H×W in blocks of about BLOCK_BYTES of float64."""
    per_block = max(1, BLOCK_BYTES // (8 * bands))
    if width <= per_block:
        step = per_block // width
        for top in range(0, height, step):
            yield slice(top, top + step), slice(None)
    else:
        for top in range(height):
            for left in range(0, width, per_block):
                yield slice(top, top + 1), slice(left, left + per_block)


# -- the model's input -------------------------------------------------------------------------------


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


def pixels_batch(images: list[bytes], facts: ModelFacts, limits: DecodeLimits = DEFAULT_LIMITS) -> np.ndarray:
    """Decode and resize a batch to N×3×S×S uint8, as the encoder does; the error names the failing image's index."""
    out = np.empty((len(images), 3, facts.input_size, facts.input_size), np.uint8)
    for i, data in enumerate(images):
        try:
            out[i] = decode_pixels(data, facts.input_size, limits)
        except InvalidInput as exc:
            raise InvalidInput(f"image {i}: {exc}") from exc
    return out
