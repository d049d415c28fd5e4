"""Bounded decoding: headers before pixels, limits with actionable messages, the depth stretch in
blocks, JPEG draft only far above the input size, and unchanged pixels for images near it."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
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
    with pytest.raises(InvalidInput, match=r"TIFF of more than 256 pages is over the limit of 256; send one image"):
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


# -- files whose structure, not their pixels, is the attack (found by a review) -----------------------

def with_page_chain(data: bytes, extra: int, loop_to: int | None) -> bytes:
    """A one-page little-endian TIFF followed by ``extra`` empty IFDs, the last pointing back at
    extra IFD ``loop_to`` (None: the chain ends there)."""
    out = bytearray(data)
    first = struct.unpack_from("<I", out, 4)[0]
    next_at = first + 2 + 12 * struct.unpack_from("<H", out, first)[0]
    offsets = [len(out) + 6 * i for i in range(extra)]
    struct.pack_into("<I", out, next_at, offsets[0])
    for i in range(extra):
        out += struct.pack("<HI", 0, offsets[i + 1] if i + 1 < extra else
                           (offsets[loop_to] if loop_to is not None else 0))
    return bytes(out)


@pytest.mark.parametrize(("extra", "loop_to"), [(150, 149), (60, 50), (20, 0)])
def test_a_tiff_whose_page_chain_loops_is_refused_at_once(extra: int, loop_to: int) -> None:
    """tifffile looks for a loop only at its 100th page: a 1 KB file whose chain loops after that
    kept ``len(tif.pages)`` counting for ever, 30 MB a second. A child process, so a hang fails."""
    looped = with_page_chain(tiff(np.zeros((1, 1), np.uint8)), extra, loop_to)
    code = ("import sys; from orbithash import InvalidInput; from orbithash.images import read_header\n"
            "try:\n    read_header(sys.stdin.buffer.read(), 224)\nexcept InvalidInput as exc:\n    print(exc)")
    done = subprocess.run([sys.executable, "-c", code], input=looped, capture_output=True, timeout=60)
    assert b"TIFF page chain loops back to page" in done.stdout, done.stdout + done.stderr


def test_a_tiff_page_chain_that_leaves_the_file_is_refused() -> None:
    data = bytearray(with_page_chain(tiff(np.zeros((1, 1), np.uint8)), 3, None))
    struct.pack_into("<I", data, len(data) - 4, len(data) + 1000)
    with pytest.raises(InvalidInput, match="TIFF page chain points outside the file"):
        read_header(bytes(data))


def test_tiff_metadata_claiming_millions_of_planes_allocates_nothing() -> None:
    """OME-XML with NumPlanes=N made tifffile build an N-entry list before any limit (10⁸: 1.5 GB)."""
    xml = ('<?xml version="1.0" encoding="UTF-8"?><OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">'
           '<Image ID="Image:0"><Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="1" SizeY="1" '
           'SizeC="1" SizeZ="1" SizeT="1"><Channel ID="Channel:0:0" SamplesPerPixel="1"/>'
           '<TiffData IFD="0" NumPlanes="10000000"/></Pixels></Image></OME>')
    data = tiff(np.zeros((1, 1), np.uint8), description=xml, metadata=None)
    tracemalloc.start()
    try:
        header = read_header(data, SIZE)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert (header.width, header.height) == (1, 1) and peak < 10_000_000


def one_strip_tiff(width: int, height: int, strip: bytes, compression: int) -> bytes:
    """A grey 8-bit TIFF of one strip holding ``strip`` as given (already compressed)."""
    tags = [(256, 4, width), (257, 4, height), (258, 3, 8), (259, 3, compression), (262, 3, 1),
            (273, 4, 8 + 2 + 12 * 9 + 4), (277, 3, 1), (278, 4, height), (279, 4, len(strip))]
    ifd = struct.pack("<H", len(tags)) + b"".join(
        struct.pack("<HHIHH", t, k, 1, v, 0) if k == 3 else struct.pack("<HHII", t, k, 1, v) for t, k, v in tags)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0) + strip


def test_a_deflate_strip_that_inflates_past_its_size_is_refused() -> None:
    """zlib inflated a strip whole, whatever the image's size: 583 KB for a 16×16 image took 1.2 GB."""
    assert decode_image(one_strip_tiff(16, 16, zlib.compress(bytes(range(256))), 8)).shape == (16, 16, 3)
    with pytest.raises(InvalidInput, match=r"TIFF strip 0 of page 0 inflates past the 256 bytes it should hold"):
        read_header(one_strip_tiff(16, 16, zlib.compress(bytes(50_000_000)), 8))


@pytest.mark.parametrize(("compression", "name"), [(34925, "LZMA"), (32773, "PACKBITS"), (5, "LZW")])
def test_tiff_compressions_other_than_deflate_are_refused_by_name(compression: int, name: str) -> None:
    with pytest.raises(InvalidInput, match=rf"TIFF compression {name} is not supported; send it uncompressed or "
                                           r"with deflate \(zlib\)"):
        read_header(one_strip_tiff(16, 16, bytes(256), compression))


def jpeg_segment(marker: int, body: bytes) -> bytes:
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(body) + 2) + body


def three_scan_baseline_jpeg(width: int, height: int) -> bytes:
    """A baseline JPEG whose three components come in three scans (all grey): libjpeg then holds
    every DCT coefficient, as for a progressive JPEG."""
    out = b"\xff\xd8" + jpeg_segment(0xDB, b"\x00" + b"\x01" * 64)
    out += jpeg_segment(0xC0, struct.pack(">BHHB", 8, height, width, 3)
                        + b"".join(bytes([c, 0x11, 0]) for c in (1, 2, 3)))
    one_code = bytes([1] + [0] * 15) + b"\x00"  # one 1-bit code, for symbol 0
    out += jpeg_segment(0xC4, b"\x00" + one_code + b"\x10" + one_code)  # DC: category 0; AC: end of block
    blocks = -(-width // 8) * -(-height // 8)
    for c in (1, 2, 3):
        out += jpeg_segment(0xDA, bytes([1, c, 0x00, 0, 63, 0])) + b"\x00" * (blocks * 2 // 8 + 16)
    return out + b"\xff\xd9"


def test_a_baseline_jpeg_of_several_scans_is_estimated_with_its_coefficients() -> None:
    """Measured: a 6000² one peaked at 210 MB against an estimate of 10 MB (reduced decode)."""
    data = three_scan_baseline_jpeg(2000, 2000)
    assert decode_pixels(data, SIZE).shape == (3, SIZE, SIZE)
    assert read_header(data, SIZE).decode_bytes >= 2000 * 2000 * 3 * 2
    one_scan = pillow(scene(2000, 2000), "JPEG")
    assert read_header(one_scan, SIZE).decode_bytes < 2000 * 2000 * 3 * 2  # interleaved baseline: no such buffer


def test_stray_bytes_do_not_hide_jpeg_segments_from_the_count() -> None:
    """Pillow skips stray bytes and goes on parsing; the count stopped at the first one (4M
    segments behind a 6-byte prefix took 18 s). A long run of them is refused too."""
    base = pillow(scene(64, 64), "JPEG")
    with pytest.raises(InvalidInput, match=r"JPEG of more than 512 marker segments"):
        read_header(base[:2] + b"\xff\xff\x00\x00\x02\x00" + b"\xff\xfe\x00\x02" * 513 + base[2:])
    app0_end = 4 + struct.unpack_from(">H", base, 4)[0]
    assert read_header(base[:app0_end] + b"\x00\x00" + base[app0_end:]).width == 64  # a few are tolerated
    with pytest.raises(InvalidInput, match=r"JPEG with more than 65536 stray bytes between its marker segments"):
        read_header(base[:app0_end] + b"\x00" * 70_000 + base[app0_end:])


def test_only_jpeg_and_png_are_parsed_by_pillow() -> None:
    """Pillow tried every format it knows before the format check: a 16 MB EPS took 9 s of
    byte-by-byte parsing, only to be refused."""
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n" + b"%comment\n" * 1000
    with pytest.raises(InvalidInput, match=r"not a JPEG, PNG or TIFF image \(it starts with b'%!PS-Ado'\)"):
        read_header(eps)


def test_a_truncated_image_under_the_limits_is_invalid_input() -> None:
    data = pillow(scene(300, 300), "PNG")
    with pytest.raises(InvalidInput, match="cannot decode image"):
        decode_pixels(data[: len(data) // 2], SIZE)
    with pytest.raises(InvalidInput, match="cannot decode TIFF"):
        decode_pixels(tiff(np.ones((300, 300), np.uint16), compression="zlib")[:-50], SIZE)


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_pixels"):
        DecodeLimits(max_pixels=0)
