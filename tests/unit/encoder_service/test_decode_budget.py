"""The encoder's decode bounds without gRPC: per-request pixel budget, process-wide memory budget."""

from __future__ import annotations

import io
import threading
import time

import pytest
from PIL import Image
from prometheus_client import CollectorRegistry
from support.encoders import ZeroBackend, facts

from encoder_service.budget import MemoryBudget
from encoder_service.encoder import DecodePolicy, Encoder, EncoderMetrics
from orbithash import InvalidInput, ResourceExhausted
from orbithash.images import DecodeLimits, read_header

FACTS = facts(8)


def png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side), (10, 20, 30)).save(buf, "PNG")
    return buf.getvalue()


def encoder(threads: int = 2, **policy: object) -> Encoder:
    return Encoder(ZeroBackend(FACTS), 4, 16, EncoderMetrics(CollectorRegistry()), threads, DecodePolicy(**policy))


def test_budget_waits_for_room_then_gives_up() -> None:
    budget = MemoryBudget(100)
    assert budget.acquire(80, 0)
    start = time.monotonic()
    assert not budget.acquire(30, 0.2)
    assert time.monotonic() - start >= 0.2
    assert not budget.acquire(101, 10)  # never fits: refused at once
    threading.Timer(0.1, budget.release, (80,)).start()
    assert budget.acquire(30, 5)  # woken by the release
    assert budget.used == 30


def test_a_request_over_the_pixel_budget_is_refused_before_any_decode() -> None:
    enc = encoder(max_request_pixels=2 * 300 * 300)
    assert len(enc.encode([png(300)] * 2).codes) == 2
    with pytest.raises(ResourceExhausted, match=r"^3 images of 0\.3 Mpx in all are over the per-request budget "
                                                r"of 0\.2 Mpx; send them in smaller requests, or downscale them$"):
        enc.encode([png(300)] * 3)


def test_an_image_over_the_per_image_limit_is_named_by_its_index() -> None:
    enc = encoder(image=DecodeLimits(max_pixels=100_000))
    with pytest.raises(InvalidInput, match=r"^image 2: 400x400 pixels \(0\.2 Mpx\) is over the per-image limit of "
                                           r"0\.1 Mpx; downscale it before sending$"):
        enc.encode([png(300), png(300), png(400)])


def test_an_image_waits_for_decode_memory_held_by_other_requests_then_is_refused() -> None:
    enc = encoder(memory_bytes=50_000_000, wait_s=0.3)
    need = read_header(png(300), FACTS.input_size).decode_bytes
    assert enc.memory.acquire(50_000_000 - need + 1, 0)  # another request holds almost all of it
    start = time.monotonic()
    with pytest.raises(ResourceExhausted, match=r"^image 0 \(300x300 pixels \(0\.1 Mpx\)\) needs about \d+ MB to "
                                                r"decode, and the encoder's decode memory budget of 50 MB stayed "
                                                r"taken by other requests for 0\.3 s; retry shortly"):
        enc.encode([png(300)])
    assert time.monotonic() - start >= 0.3
    threading.Timer(0.1, enc.memory.release, (50_000_000 - need + 1,)).start()
    assert len(enc.encode([png(300)]).codes) == 1  # the other request finished within the wait
    assert enc.memory.used == 0


def test_the_wait_is_cut_short_by_the_callers_deadline() -> None:
    enc = encoder(memory_bytes=50_000_000, wait_s=30)
    assert enc.memory.acquire(50_000_000, 0)
    start = time.monotonic()
    with pytest.raises(ResourceExhausted):
        enc.encode([png(300), png(300)], timeout=0.2)
    assert time.monotonic() - start < 2


def test_concurrent_requests_never_hold_more_than_the_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    enc = encoder(threads=8, memory_bytes=40_000_000, wait_s=10)
    seen: list[int] = []
    acquire = enc.memory.acquire

    def watched(nbytes: int, timeout: float) -> bool:
        ok = acquire(nbytes, timeout)
        seen.append(enc.memory.used)
        return ok

    monkeypatch.setattr(enc.memory, "acquire", watched)
    images = [png(1000)] * 4  # about 12 MB each: three fit at once; eight decode threads would take eight
    threads = [threading.Thread(target=enc.encode, args=(images,)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 12 and max(seen) <= 40_000_000
    assert enc.memory.used == 0


def test_memory_is_returned_when_a_decode_fails() -> None:
    enc = encoder()
    data = png(300)
    with pytest.raises(InvalidInput, match="image 1: cannot decode image"):
        enc.encode([data, data[: len(data) // 2] + b"\x00" * 10])
    assert enc.memory.used == 0
