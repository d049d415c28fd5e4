"""Thumbnails made by the encoder from the pixels it decoded for the model (no gRPC)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from prometheus_client import CollectorRegistry
from support.encoders import ZeroBackend, facts

from encoder_service.encoder import Encoder, EncoderMetrics
from encoder_service.thumbnails import MAX_THUMBNAIL_SIZE, thumbnail
from orbithash import InvalidInput

FACTS = facts(32)


def image(width: int, height: int, colour: tuple[int, int, int], kind: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buf, kind)
    return buf.getvalue()


def encoder() -> Encoder:
    return Encoder(ZeroBackend(FACTS), 4, 16, EncoderMetrics(CollectorRegistry()), 2)


def test_thumbnails_keep_the_aspect_ratio_and_the_colours() -> None:
    images = [image(300, 150, (200, 40, 10)), image(90, 270, (10, 200, 40), "JPEG"), image(64, 64, (0, 0, 250))]
    out = encoder().encode(images, thumbnail_size=48)
    assert len(out.thumbnails) == 3
    decoded = [Image.open(io.BytesIO(t)) for t in out.thumbnails]
    assert [d.format for d in decoded] == ["JPEG"] * 3
    assert [d.size for d in decoded] == [(48, 24), (16, 48), (48, 48)]
    for d, colour in zip(decoded, [(200, 40, 10), (10, 200, 40), (0, 0, 250)], strict=True):
        mean = np.asarray(d.convert("RGB"), np.float64).reshape(-1, 3).mean(axis=0)
        assert np.abs(mean - colour).max() < 8


def test_no_thumbnails_unless_asked_and_the_codes_do_not_change() -> None:
    images = [image(40, 40, (1, 2, 3)), image(50, 30, (9, 9, 9))]
    plain = encoder().encode(images)
    with_thumbs = encoder().encode(images, thumbnail_size=16)
    assert plain.thumbnails == ()
    assert (plain.codes == with_thumbs.codes).all() and (plain.u == with_thumbs.u).all()


@pytest.mark.parametrize("size", [-1, MAX_THUMBNAIL_SIZE + 1])
def test_a_thumbnail_size_out_of_range_is_refused(size: int) -> None:
    with pytest.raises(InvalidInput, match=f"thumbnail_size must be in 0..{MAX_THUMBNAIL_SIZE}"):
        encoder().encode([image(10, 10, (0, 0, 0))], thumbnail_size=size)


def test_a_one_pixel_wide_image_still_gets_a_thumbnail() -> None:
    pixels = np.zeros((3, 32, 32), np.uint8)
    assert Image.open(io.BytesIO(thumbnail(pixels, 1, 4000, 64))).size == (1, 64)
