"""Bit packing and image decoding (pure functions)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from orbithash import InvalidInput
from orbithash.bits import codes_to_pm1, pack_signs, padding_is_zero, unpack_codes
from orbithash.images import decode_image, normalise, resize_pixels
from orbithash.model_facts import ModelFacts


@pytest.mark.parametrize("bits", [8, 12, 48, 64, 100])
def test_pack_unpack_round_trip(bits: int) -> None:
    u = np.random.default_rng(bits).normal(size=(5, bits))
    codes = pack_signs(u)
    assert codes.shape == (5, (bits + 7) // 8)
    np.testing.assert_array_equal(unpack_codes(codes, bits), (u > 0).astype(np.uint8))
    np.testing.assert_array_equal(codes_to_pm1(codes, bits), np.where(u > 0, 1.0, -1.0))
    assert all(padding_is_zero(c.tobytes(), bits) for c in codes)


def test_first_bit_is_most_significant() -> None:
    u = np.array([[1.0] + [-1.0] * 15])
    assert pack_signs(u).tobytes() == b"\x80\x00"
    assert not padding_is_zero(b"\x00\x01", 12)
    assert padding_is_zero(b"\x00\x10", 12)


def _encode(arr: np.ndarray, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_formats_decode_to_rgb() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    np.testing.assert_array_equal(decode_image(_encode(rgb, "PNG")), rgb)
    np.testing.assert_array_equal(decode_image(_encode(rgb, "TIFF")), rgb)
    smooth = np.stack([*np.meshgrid(np.arange(30) * 8, np.arange(20) * 12), np.full((20, 30), 90)], axis=2)
    smooth = smooth.astype(np.uint8)
    jpeg = decode_image(_encode(smooth, "JPEG", quality=95))
    assert jpeg.shape == (20, 30, 3) and np.abs(jpeg.astype(int) - smooth).mean() < 3
    gray = rgb[:, :, 0]
    np.testing.assert_array_equal(decode_image(_encode(gray, "PNG")), np.stack([gray] * 3, axis=2))


def test_16_bit_tiff_is_rescaled() -> None:
    arr = (np.arange(100, dtype=np.uint16).reshape(10, 10) * 600).astype(np.uint16)
    out = decode_image(_encode(arr, "TIFF"))
    assert out.dtype == np.uint8 and out.shape == (10, 10, 3)
    assert out[0, 0, 0] == 0 and out[-1, -1, 0] == 255


@pytest.mark.parametrize(("data", "needle"), [
    (b"", "empty"),
    (b"GIF89a junk", r"^not a JPEG, PNG or TIFF image \(it starts with b'GIF89a j'\)$"),
    (_encode(np.zeros((4, 4, 3), np.uint8), "BMP"), r"^not a JPEG, PNG or TIFF image \(it starts with b'BM")])
def test_bad_bytes_are_invalid_input(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        decode_image(data)


def test_normalise_as_the_facts_say() -> None:
    facts = ModelFacts("m", "v1", 16, ("a", "b"), 8, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
    x = normalise(resize_pixels(np.full((16, 16, 3), 255, np.uint8), facts.input_size), facts)
    assert x.shape == (3, 8, 8) and np.allclose(x, 1.0)


def _tiff(arr: np.ndarray, **kw: object) -> bytes:
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, arr, **kw)
    return buf.getvalue()


def test_16_bit_rgb_tiff_is_stretched_not_truncated() -> None:
    # A dim 16-bit scene (1000..3000 of 65535): dropping the low byte would leave 3..11 of 255.
    ramp = np.linspace(1000, 3000, 64).astype(np.uint16)
    arr = np.stack([np.tile(ramp, (8, 1)), np.tile(ramp[::-1], (8, 1)), np.full((8, 64), 2000, np.uint16)], axis=2)
    out = decode_image(_tiff(arr, photometric="rgb"))
    expected = ((arr.astype(np.float64) - 1000) * (255 / 2000)).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)
    assert out[0, 0, 0] == 0 and out[0, -1, 0] == 255


def test_multiband_tiff_uses_its_first_three_bands() -> None:
    rng = np.random.default_rng(1)
    four = rng.integers(0, 4000, (10, 12, 4)).astype(np.uint16)
    four[..., 3] = 65535  # a bright near-infrared band must not change the RGB stretch
    out = decode_image(_tiff(four, photometric="minisblack", planarconfig="contig"))
    rgb = four[..., :3].astype(np.float64)
    expected = ((rgb - rgb.min()) * (255 / (rgb.max() - rgb.min()))).astype(np.uint8)
    np.testing.assert_array_equal(out, expected)


def test_planar_float_tiff_is_read_band_first() -> None:
    planes = np.zeros((5, 6, 7), np.float32)
    planes[0], planes[1], planes[2] = 1.0, 0.5, 0.0
    out = decode_image(_tiff(planes, photometric="minisblack", planarconfig="separate"))
    assert out.shape == (6, 7, 3)
    assert (out[0, 0, 0], out[0, 0, 1], out[0, 0, 2]) == (255, 127, 0)


def test_grey_alpha_and_single_band_tiffs() -> None:
    grey = np.arange(48, dtype=np.uint8).reshape(6, 8)
    np.testing.assert_array_equal(decode_image(_tiff(grey)), np.stack([grey] * 3, axis=2))
    ga = np.stack([grey, np.full_like(grey, 255)], axis=2)
    np.testing.assert_array_equal(decode_image(_tiff(ga, photometric="minisblack", planarconfig="contig")),
                                  np.stack([grey] * 3, axis=2))


def test_damaged_tiff_is_invalid_input() -> None:
    data = _tiff(np.zeros((64, 64), np.uint16))
    with pytest.raises(InvalidInput, match="TIFF"):
        decode_image(data[:12] + b"\x00" * 8)
