"""Natural batching (gateway.coalesce): concurrent calls share downstream calls, each caller gets
exactly its own answer or its own error, and no waiter is stranded."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from gateway.coalesce import Coalescer, CoalescingShard
from gateway.core import ShardQuery
from orbithash import DeadlineExceeded, InvalidInput, Unavailable


class Downstream:
    """A fake service: answers item * 10, records each call, can be held or made to fail."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[int], object]] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()
        self.fail: Exception | None = None
        self.delay = 0.0

    def send(self, items: list[int], timeout: float, key: object) -> list[int]:
        self.calls.append((list(items), key))
        self.entered.set()
        assert self.gate.wait(5)
        time.sleep(self.delay)
        if self.fail is not None:
            raise self.fail
        if any(i < 0 for i in items):
            raise InvalidInput(f"item {items.index(min(items))} is negative")
        return [i * 10 for i in items]


def hold_first(down: Downstream, coalescer: Coalescer, pool: ThreadPoolExecutor, key: object = None):
    """Start one call and block it inside the downstream service."""
    down.gate.clear()
    first = pool.submit(coalescer.call, [0], 5, key)
    assert down.entered.wait(5)
    return first


def wait_queued(coalescer: Coalescer, n: int) -> None:
    deadline = time.monotonic() + 5
    while len(coalescer._queue) < n:
        assert time.monotonic() < deadline, "callers never queued"
        time.sleep(0.001)


def test_a_lone_call_goes_at_once_with_its_own_items() -> None:
    down = Downstream()
    coalescer = Coalescer(down.send, name="svc", max_items=16, max_inflight=1)
    assert coalescer.call([1, 2], 5) == [10, 20]
    assert down.calls == [([1, 2], None)]


def test_calls_arriving_during_a_batch_leave_together_and_each_gets_its_own_answer() -> None:
    down = Downstream()
    coalescer = Coalescer(down.send, name="svc", max_items=64, max_inflight=1)
    with ThreadPoolExecutor(8) as pool:
        first = hold_first(down, coalescer, pool)
        later = [pool.submit(coalescer.call, [i, i + 100], 5) for i in range(1, 6)]
        wait_queued(coalescer, 5)
        down.gate.set()
        assert first.result(5) == [0]
        for i, future in enumerate(later, start=1):
            assert future.result(5) == [i * 10, (i + 100) * 10]
    assert len(down.calls) == 2, down.calls
    assert sorted(down.calls[1][0]) == sorted(x for i in range(1, 6) for x in (i, i + 100))


def test_only_equal_keys_join_and_limits_split_batches() -> None:
    down = Downstream()
    coalescer = Coalescer(down.send, name="svc", max_items=3, max_inflight=1, max_weight=100, weight=lambda i: i)
    with ThreadPoolExecutor(8) as pool:
        first = hold_first(down, coalescer, pool, key="a")
        a = [pool.submit(coalescer.call, [1], 5, "a") for _ in range(4)]
        wait_queued(coalescer, 4)
        b = pool.submit(coalescer.call, [2], 5, "b")
        heavy = pool.submit(coalescer.call, [99], 5, "a")
        wait_queued(coalescer, 6)
        down.gate.set()
        assert [f.result(5) for f in (first, *a, b, heavy)] == [[0], [10], [10], [10], [10], [20], [990]]
    for items, key in down.calls:
        assert len(items) <= 3 and (sum(items) <= 100 or len(items) == 1)
        assert key in ("a", "b")
    assert [items for items, key in down.calls if key == "b"] == [[2]]
    assert sum(len(items) for items, _ in down.calls) == 7


def test_a_batch_refused_for_its_content_is_sent_again_request_by_request() -> None:
    down = Downstream()
    coalescer = Coalescer(down.send, name="svc", max_items=64, max_inflight=1)
    with ThreadPoolExecutor(8) as pool:
        first = hold_first(down, coalescer, pool)
        good = [pool.submit(coalescer.call, [i], 5) for i in (1, 2)]
        bad = pool.submit(coalescer.call, [3, -4], 5)
        wait_queued(coalescer, 3)
        down.gate.set()
        assert first.result(5) == [0]
        assert [f.result(5) for f in good] == [[10], [20]]
        with pytest.raises(InvalidInput, match="item 1 is negative"):  # its own position, not the batch's
            bad.result(5)


def test_a_service_failure_fails_every_caller_in_the_batch_without_retries() -> None:
    down = Downstream()
    coalescer = Coalescer(down.send, name="svc", max_items=64, max_inflight=1)
    with ThreadPoolExecutor(8) as pool:
        first = hold_first(down, coalescer, pool)
        later = [pool.submit(coalescer.call, [i], 5) for i in (1, 2, 3)]
        wait_queued(coalescer, 3)
        down.fail = Unavailable("svc: UNAVAILABLE connection reset")
        down.gate.set()
        for future in (first, *later):
            with pytest.raises(Unavailable, match="connection reset"):
                future.result(5)
    assert len(down.calls) == 2  # the held call and one batch: nothing sent twice


def test_a_caller_past_its_deadline_leaves_the_queue_and_is_never_sent() -> None:
    down = Downstream()
    coalescer = Coalescer(down.send, name="svc", max_items=64, max_inflight=1)
    with ThreadPoolExecutor(8) as pool:
        first = hold_first(down, coalescer, pool)
        late = pool.submit(coalescer.call, [7], 0.05)
        patient = pool.submit(coalescer.call, [8], 5)
        with pytest.raises(DeadlineExceeded, match=r"svc: no answer within 0\.05 s"):
            late.result(5)
        down.gate.set()
        assert first.result(5) == [0]
        assert patient.result(5) == [80]
    assert all(7 not in items for items, _ in down.calls)
    assert coalescer.call([9], 5) == [90]  # nothing left in flight: the next call goes at once
    assert coalescer._inflight == 0


def test_each_caller_returns_by_its_own_deadline_whatever_the_batch_waits_for() -> None:
    """A batch is sent with its latest deadline; the caller with the shortest one must not be the
    thread that waits for it (a gRPC worker held 10 s past a 1 s deadline)."""
    down = Downstream()

    def send(items: list[int], timeout: float, key: object) -> list[int]:
        if down.calls:
            time.sleep(1.5)  # the shared batch outlives the short deadline
        return down.send(items, timeout, key)

    coalescer = Coalescer(send, name="svc", max_items=64, max_inflight=1)
    with ThreadPoolExecutor(8) as pool:
        first = hold_first(down, coalescer, pool)
        short = pool.submit(coalescer.call, [1], 0.3)
        wait_queued(coalescer, 1)
        long = pool.submit(coalescer.call, [2], 5)
        wait_queued(coalescer, 2)
        down.gate.set()
        start = time.monotonic()
        with pytest.raises(DeadlineExceeded, match=r"svc: no answer within 0\.3 s"):
            short.result(5)
        assert time.monotonic() - start < 1.0
        assert first.result(5) == [0]
        assert long.result(5) == [20]
    assert down.calls[1][0] == [1, 2]  # the short caller was sent; only its answer was dropped
    assert coalescer._inflight == 0 and not coalescer._queue


def test_many_threads_hammering_get_exactly_their_answers() -> None:
    down = Downstream()
    down.delay = 0.002  # a call takes time, so others arrive meanwhile
    coalescer = Coalescer(down.send, name="svc", max_items=8, max_inflight=2)

    def one(i: int) -> list[int]:
        return coalescer.call([i, i + 1], 5)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(400)))
    assert answers == [[i * 10, (i + 1) * 10] for i in range(400)]
    assert coalescer._inflight == 0 and not coalescer._queue
    assert len(down.calls) < 400  # some calls were shared


class FakeShard:
    address = "fake:1"

    def __init__(self) -> None:
        self.queries: list[ShardQuery] = []

    def search(self, query: ShardQuery, timeout: float) -> list[list[str]]:
        self.queries.append(query)
        return [[code.hex()] for code in query.codes]


def test_shard_searches_join_only_when_asked_alike_and_reranking_goes_alone() -> None:
    fake = FakeShard()
    shard = CoalescingShard(fake, 0, max_codes=64, max_inflight=1)  # type: ignore[arg-type]
    q = ShardQuery(codes=(b"\x01", b"\x02"), k=5, bits=8, model_version="m")
    assert shard.search(q, 5) == [["01"], ["02"]]
    assert fake.queries == [q]
    reranked = ShardQuery(codes=(b"\x03",), k=5, bits=8, model_version="m", u=(0.5,) * 8, candidates=10)
    assert shard.search(reranked, 5) == [["03"]]
    assert fake.queries[-1] is reranked
    assert shard.address == "fake:1"
