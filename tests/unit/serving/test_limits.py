"""Per-client limits: a token bucket that trips and recovers, stream slots, message sizes."""

from __future__ import annotations

import pytest
from support.clock import ManualClock

from orbithash import ResourceExhausted
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_serving.limits import (
    MIB,
    RateLimiter,
    StreamSlots,
    check_message_size,
    fitting_thumbnails,
    parse_message_limits,
)


def test_the_bucket_allows_a_burst_then_the_rate_then_recovers() -> None:
    clock = ManualClock(100.0)
    limiter = RateLimiter(rate=8, burst=5, clock=clock)
    for _ in range(5):
        limiter.take("station-a")
    with pytest.raises(ResourceExhausted, match=r"'station-a': 8 requests/s \(bursts of 5\) exceeded; retry in 125 ms"):
        limiter.take("station-a")
    limiter.take("station-b")  # another client has its own bucket
    clock.now += 0.125  # one token back
    limiter.take("station-a")
    with pytest.raises(ResourceExhausted):
        limiter.take("station-a")
    clock.now += 10  # refilled, but never above the burst
    for _ in range(5):
        limiter.take("station-a")
    with pytest.raises(ResourceExhausted):
        limiter.take("station-a")


def test_rate_zero_is_no_limit() -> None:
    limiter = RateLimiter(rate=0, burst=1)
    for _ in range(10_000):
        limiter.take("x")


def test_idle_clients_are_forgotten() -> None:
    clock = ManualClock(100.0)
    limiter = RateLimiter(rate=100, burst=1, clock=clock, max_clients=10)
    for n in range(11):
        limiter.take(f"c{n}")
        clock.now += 1
    assert limiter.tracked <= 2


def test_clients_that_are_all_active_stay_bounded_and_the_least_recent_goes_first() -> None:
    # Many addresses (an IPv6 /64) each sending within the refill time: none is idle, and before
    # this every call above the bound scanned every bucket under the lock while the table kept growing.
    clock = ManualClock(100.0)
    limiter = RateLimiter(rate=1, burst=2, clock=clock, max_clients=10)
    limiter.take("station")
    limiter.take("station")  # its burst is spent
    for n in range(50):
        limiter.take(f"addr-{n}")
        if n % 5 == 0:
            with pytest.raises(ResourceExhausted):
                limiter.take("station")  # still limited: a recent client keeps its bucket
        assert limiter.tracked <= 10
    assert limiter.tracked == 10
    limiter.take("addr-0")  # the least recent went first: a fresh bucket
    limiter.take("addr-0")
    with pytest.raises(ResourceExhausted):
        limiter.take("addr-0")


def test_stream_slots_refuse_beyond_the_limit_and_free_on_exit() -> None:
    slots = StreamSlots(2)
    with slots.hold("a", "Ingest"), slots.hold("a", "Ingest"):
        with pytest.raises(ResourceExhausted, match="'a' already has 2 streams open"), slots.hold("a", "Ingest"):
            pass
        with slots.hold("b", "Ingest"):
            pass
    with slots.hold("a", "Ingest"), slots.hold("a", "Ingest"):
        pass
    with pytest.raises(RuntimeError), slots.hold("a", "Ingest"):
        raise RuntimeError("the stream failed")
    assert slots._open == {}


def test_message_limits_parse_and_apply() -> None:
    limits = parse_message_limits("Search=64, Get=0.5")
    assert limits == {"Search": 64 * MIB, "Get": MIB // 2}
    check_message_size("Get", MIB // 2, limits)
    check_message_size("Info", 10 * MIB, limits)  # no limit named: gRPC's own
    with pytest.raises(ResourceExhausted, match=r"Get request message is 0.5 MiB; .* at most 0.5 MiB"):
        check_message_size("Get", MIB // 2 + 1, limits)
    for bad, why in (("Search", "write Method=MiB"), ("=3", "write Method=MiB"), ("Search=0", r"MiB must be in"),
                     ("Search=x", r"message limit 'Search=x': MiB must be a number"),
                     ("Search=nan", r"MiB must be in")):
        with pytest.raises(ValueError, match=why):
            parse_message_limits(bad)


def test_a_reply_with_thumbnails_over_the_limit_says_its_size_and_what_fits() -> None:
    reply = pb.GetItemsResponse(items=[pb.StoredItem(id=f"i-{i}", thumbnail=bytes(MIB // 4)) for i in range(4)])
    assert fitting_thumbnails(reply, 2 * MIB) is reply
    with pytest.raises(ResourceExhausted, match=r"^the reply with thumbnails would be 1\.0 MiB, over the 0\.5 MiB "
                                                r"message limit .* about 49% of them fit\), or ask without"):
        fitting_thumbnails(reply, MIB // 2)
