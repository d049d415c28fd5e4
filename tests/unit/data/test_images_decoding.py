"""Bounded decoding: headers before pixels, limits with actionable messages, the depth stretch in
blocks, JPEG draft only far above the input size, and unchanged pixels for images near it."""

from __future__ import annotations

import io
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import tifffile
from PIL import Image

from orbithash import InvalidInput, images
from orbithash.data import Split
from orbithash.images import (
    DecodeLimits,
    bands_to_rgb8,
    decode_image,
    decode_pixels,
    read_header,
)

SIZE = 224  # the model's input side


# -- straightforward references: what decoding did before it was bounded --------------------------

def reference_rgb8(bands: np.ndarray) -> np.ndarray:
    """The documented rule on whole float64 copies (memory-hungry, obviously right)."""
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


def reference_decode(data: bytes) -> np.ndarray:
    if data[:4] in images.TIFF_MAGIC:
        arr = tifffile.imread(io.BytesIO(data))
        with tifffile.TiffFile(io.BytesIO(data)) as tif:
            planar = tif.series[0].axes[0] in "SC"
        return reference_rgb8(np.moveaxis(arr, 0, -1) if planar and arr.ndim == 3 else arr)
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def reference_pixels(data: bytes, size: int = SIZE) -> np.ndarray:
    rgb = reference_decode(data)
    if rgb.shape[:2] != (size, size):
        rgb = np.asarray(Image.fromarray(rgb).resize((size, size), Image.BILINEAR))
    return rgb.transpose(2, 0, 1)


def tiff(arr: np.ndarray, **kw: object) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def pillow(arr: np.ndarray, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, fmt, **kw)
    return buf.getvalue()


def scene(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Smooth content with some noise, as aerial scenes have (JPEG-friendly)."""
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) * 127 // max(h + w - 2, 1)], -1)
    noise = np.random.default_rng(seed).integers(-8, 9, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


# -- the depth stretch ------------------------------------------------------------------------------

def depth_cases() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    floats = rng.normal(100, 40, (23, 37, 3)).astype(np.float32)
    floats[2, 3, 0], floats[4, 5, 1], floats[6, 7, 2] = np.nan, np.inf, -np.inf
    return {
        "uint16-grey": rng.integers(900, 3100, (23, 37)).astype(np.uint16),
        "uint16-rgb": rng.integers(0, 65535, (23, 37, 3)).astype(np.uint16),
        "int16-4band": rng.integers(-2000, 2000, (23, 37, 4)).astype(np.int16),
        "uint32-grey-alpha": rng.integers(0, 2**31, (23, 37, 2)).astype(np.uint32),
        "float32-nan-inf": floats,
        "float64-all-nan": np.full((23, 37), np.nan),
        "float16": rng.normal(0, 1, (23, 37, 3)).astype(np.float16),
        "constant": np.full((23, 37, 3), 500, np.uint16),
        "bool": rng.integers(0, 2, (23, 37)).astype(bool),
    }


@pytest.mark.parametrize("block_bytes", [64, 8 * 37 * 3 * 5, images.BLOCK_BYTES],
                         ids=["pieces-of-rows", "blocks-of-rows", "one-block"])
@pytest.mark.parametrize("name", list(depth_cases()))
def test_depth_stretch_equals_the_float64_reference(name: str, block_bytes: int,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(images, "BLOCK_BYTES", block_bytes)  # force many blocks on a small image
    bands = depth_cases()[name]
    np.testing.assert_array_equal(bands_to_rgb8(bands), reference_rgb8(bands))


@pytest.mark.parametrize("dtype", [np.uint16, np.float32])
def test_planar_and_stacked_tiffs_equal_the_reference(dtype: type) -> None:
    rng = np.random.default_rng(3)
    planes = (rng.random((4, 40, 30)) * 5000).astype(dtype)
    planes[1, 2, 3] = 7
    planar = tiff(planes, photometric="minisblack", planarconfig="separate", compression="zlib")
    np.testing.assert_array_equal(decode_image(planar), reference_rgb8(np.moveaxis(planes, 0, -1)))
    stack = tiff(planes, photometric="minisblack")  # four pages: the first is the image
    np.testing.assert_array_equal(decode_image(stack), reference_rgb8(planes[0]))
    assert read_header(stack).tiff_pages == 1


def test_a_deep_tiff_decodes_within_its_estimate() -> None:
    """numpy and tifffile allocations (tracemalloc sees both) stay inside the header's estimate."""
    data = tiff((np.random.default_rng(0).random((3, 1024, 1024)) * 60000).astype(np.uint16),
                photometric="minisblack", planarconfig="separate", compression="zlib")
    for size in (None, SIZE):
        header = read_header(data, size)
        tracemalloc.start()
        try:
            decode_image(data) if size is None else decode_pixels(data, size)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        # the old float64 copies alone were 1024×1024×3×8 bytes, three times over
        assert peak <= header.decode_bytes < 3 * 1024 * 1024 * 3 * 8


# -- pixels the model sees ----------------------------------------------------------------------------

def palette_png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).convert("P").save(buf, "PNG")
    return buf.getvalue()


def near_size_images() -> dict[str, bytes]:
    rgb = scene(256, 256)
    return {
        "jpeg-256": pillow(rgb, "JPEG", quality=90),
        "jpeg-256-progressive": pillow(rgb, "JPEG", quality=90, progressive=True),
        "jpeg-256-grey": pillow(rgb[..., 0], "JPEG"),
        "png-256": pillow(rgb, "PNG"),
        "png-256-palette": palette_png(rgb),
        "tiff-256-rgb8": tiff(rgb, photometric="rgb"),
        "tiff-256-rgb16": tiff(rgb.astype(np.uint16) * 200 + 77, photometric="rgb", compression="zlib"),
        "jpeg-895x1000": pillow(scene(895, 1000), "JPEG"),  # just under the reduction threshold (4 × 224)
    }


@pytest.mark.parametrize("name", list(near_size_images()))
def test_images_near_the_input_size_decode_to_the_same_pixels(name: str) -> None:
    data = near_size_images()[name]
    assert read_header(data, SIZE).reduce == 1
    np.testing.assert_array_equal(decode_image(data), reference_decode(data))
    np.testing.assert_array_equal(decode_pixels(data, SIZE), reference_pixels(data))


def test_uc_merced_scenes_decode_to_the_same_pixels(ucm_subset: Split) -> None:
    records = ucm_subset.database[::4]
    assert len(records) >= 40
    for record in records:
        np.testing.assert_array_equal(decode_pixels(record.data, SIZE), reference_pixels(record.data), record.id)


def test_a_large_jpeg_decodes_at_reduced_scale_and_looks_the_same() -> None:
    data = pillow(scene(2000, 1800), "JPEG", quality=92)
    header = read_header(data, SIZE)
    assert header.reduce == 4  # 1800 // 448 = 4: decoded at 500×450, still ≥ 2 × 224
    assert header.decode_bytes < read_header(data).decode_bytes / 4  # 500×450 decoded, not 1800×2000
    fast, full = decode_pixels(data, SIZE).astype(int), reference_pixels(data).astype(int)
    assert fast.shape == full.shape == (3, SIZE, SIZE)
    assert np.abs(fast - full).mean() < 2.0


# -- limits, from the header alone ---------------------------------------------------------------------

def png_header(width: int, height: int) -> bytes:
    """A PNG that is all header: its one IDAT chunk is empty, so any pixel decode would fail."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", b"") + chunk(b"IEND", b"")


def test_headers_are_read_without_decoding_pixels() -> None:
    header = read_header(png_header(8192, 8192))
    assert (header.format, header.width, header.height, header.bands) == ("PNG", 8192, 8192, 3)
    deep = tiff(np.zeros((3000, 2000), np.uint16), compression="zlib")
    header = read_header(deep[:4096])  # the IFD is at the front; the strips are cut off
    assert (header.width, header.height, header.sample_type) == (2000, 3000, "uint16")


def test_an_image_over_the_pixel_limit_is_refused_with_what_to_do() -> None:
    with pytest.raises(InvalidInput, match=r"^8192x8192 pixels \(67\.1 Mpx\) is over the per-image limit of "
                                           r"40\.0 Mpx; downscale it before sending$"):
        decode_image(png_header(8192, 8192))


def test_an_image_over_the_decode_memory_limit_is_refused_with_what_to_do() -> None:
    data = tiff(np.zeros((2000, 2000, 4), np.float32), photometric="minisblack", planarconfig="contig",
                compression="zlib")
    with pytest.raises(InvalidInput, match=r"2000x2000 pixels \(4\.0 Mpx\) of 4 float32 band\(s\) needs about "
                                           r"\d+ MB to decode, over the per-image limit of 50 MB; downscale it or "
                                           r"send 8-bit RGB before sending"):
        decode_pixels(data, SIZE, DecodeLimits(max_decode_bytes=50_000_000))
    assert decode_pixels(data, SIZE, DecodeLimits(max_decode_bytes=200_000_000)).shape == (3, SIZE, SIZE)


def test_oversized_bytes_and_decompression_bombs_are_refused() -> None:
    with pytest.raises(InvalidInput, match="2 MB as sent is over the per-image limit of 1 MB"):
        decode_image(b"\x00" * 2_000_000, DecodeLimits(max_encoded_bytes=1_000_000))
    with pytest.raises(InvalidInput, match=r"exceeds limit .* downscale it before sending"):
        read_header(png_header(20_000, 20_000))  # Pillow's own bound, above any sane limit


def test_a_tiff_of_many_pages_is_refused_before_its_series_are_parsed() -> None:
    buf = io.BytesIO()
    with tifffile.TiffWriter(buf) as writer:
        for _ in range(images.MAX_TIFF_PAGES + 1):
            writer.write(np.zeros((1, 1), np.uint8), contiguous=False)  # each page its own series
    with pytest.raises(InvalidInput, match=r"TIFF of 257 pages is over the limit of 256; send one image per file"):
        read_header(buf.getvalue())


def test_files_built_to_cost_time_rather_than_pixels_are_refused() -> None:
    """Each was decoded before, at about 4 µs per chunk or segment (twice) or 15 ms per scan of 4000²."""
    base = pillow(scene(64, 64), "JPEG")
    with pytest.raises(InvalidInput, match=r"JPEG of more than 512 marker segments before its image data"):
        read_header(base[:2] + b"\xff\xfe\x00\x02" * 513 + base[2:])  # empty comments
    assert read_header(base[:2] + b"\xff\xfe\x00\x02" * 500 + base[2:]).width == 64
    progressive = pillow(scene(64, 64), "JPEG", progressive=True)
    last_scan = progressive[progressive.rfind(b"\xff\xda"):-2]
    with pytest.raises(InvalidInput, match=r"JPEG of 65 scans is over the limit of 64; re-encode it"):
        read_header(progressive[:-2] + last_scan * (65 - progressive.count(b"\xff\xda")) + b"\xff\xd9")
    png = pillow(scene(64, 64), "PNG")
    idat = png.index(b"IDAT") - 4
    empty = struct.pack(">I", 0) + b"aaAa" + struct.pack(">I", zlib.crc32(b"aaAa"))
    with pytest.raises(InvalidInput, match=r"PNG of more than 1024 chunks, the limit for [\d,]+ bytes; re-encode it"):
        read_header(png[:idat] + empty * 1024 + png[idat:])
    assert decode_image(png[:idat] + empty * 1000 + png[idat:]).shape == (64, 64, 3)


def test_a_truncated_image_under_the_limits_is_invalid_input() -> None:
    data = pillow(scene(300, 300), "PNG")
    with pytest.raises(InvalidInput, match="cannot decode image"):
        decode_pixels(data[: len(data) // 2], SIZE)
    with pytest.raises(InvalidInput, match="cannot decode TIFF"):
        decode_pixels(tiff(np.ones((300, 300), np.uint16), compression="zlib")[:-50], SIZE)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        DecodeLimits(max_pixels=0)
