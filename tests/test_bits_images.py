"""Bit packing and image decoding (pure functions)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from orbithash import InvalidInput
from orbithash.bits import codes_to_pm1, pack_signs, padding_is_zero, unpack_codes
from orbithash.images import decode_image, preprocess
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


@pytest.mark.parametrize(("data", "needle"), [(b"", "empty"), (b"not an image", "cannot decode"),
                                              (_encode(np.zeros((4, 4, 3), np.uint8), "BMP"), "unsupported")])
def test_bad_bytes_are_invalid_input(data: bytes, needle: str) -> None:
    with pytest.raises(InvalidInput, match=needle):
        decode_image(data)


def test_preprocess_normalises_as_the_facts_say() -> None:
    facts = ModelFacts("m", "v1", 16, ("a", "b"), 8, (127.0, 127.0, 127.0), (128.0, 128.0, 128.0))
    x = preprocess(np.full((16, 16, 3), 255, np.uint8), facts)
    assert x.shape == (3, 8, 8) and np.allclose(x, 1.0)
