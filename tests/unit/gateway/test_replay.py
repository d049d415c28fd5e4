"""Replies of recent writes by request id: a write sent again gets the first one's reply (no gRPC)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from support.clock import ManualClock

from gateway.replay import RecentReplies, StreamDigest, request_key
from orbithash import InvalidInput, Unavailable
from orbithash_api.v1 import orbithash_pb2 as pb


def test_a_request_sent_again_gets_the_first_reply_and_runs_once() -> None:
    replies = RecentReplies()
    runs: list[str] = []

    def delete() -> str:
        runs.append("ran")
        return f"deleted 3 (run {len(runs)})"

    key = ("station-a", "Delete", "r1")
    assert replies.once(key, delete, 10, size=1) == "deleted 3 (run 1)"
    assert replies.once(key, delete, 10, size=1) == "deleted 3 (run 1)"
    assert runs == ["ran"] and replies.replayed == 1
    assert replies.once(("station-b", "Delete", "r1"), delete, 10, size=1) == "deleted 3 (run 2)"  # another caller
    assert replies.once(None, delete, 10, size=1) == "deleted 3 (run 3)"  # no request id: always runs


def test_a_failed_request_runs_again_when_sent_again() -> None:
    replies = RecentReplies()
    calls = 0

    def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise Unavailable("shard 1 broke off")
        return "stored"

    with pytest.raises(Unavailable):
        replies.once(("a", "Ingest", "r"), flaky, 10, size=1)
    assert replies.once(("a", "Ingest", "r"), flaky, 10, size=1) == "stored" and calls == 2


def test_replies_are_forgotten_after_their_time_and_beyond_the_size_bound() -> None:
    clock = ManualClock()
    replies = RecentReplies(ttl_s=60, max_bytes=100, clock=clock)
    replies.once(("a", "Delete", "old"), lambda: "first", 10, size=10)
    clock.now = 61
    assert replies.once(("a", "Delete", "old"), lambda: "second", 10, size=10) == "second"
    for i in range(20):  # 20 × 10 bytes: the oldest go
        replies.once(("a", "Delete", f"r{i}"), lambda i=i: f"reply {i}", 10, size=10)
    assert replies.held_bytes <= 100
    assert replies.once(("a", "Delete", "r0"), lambda: "ran again", 10, size=10) == "ran again"
    assert replies.once(("a", "Delete", "r19"), lambda: "ran again", 10, size=10) == "reply 19"


def test_a_copy_arriving_while_the_first_runs_waits_for_its_reply() -> None:
    replies = RecentReplies()
    started, release = threading.Event(), threading.Event()
    runs = 0

    def slow() -> str:
        nonlocal runs
        runs += 1
        started.set()
        release.wait(5)
        return "deleted 2"

    first: list[str] = []
    thread = threading.Thread(target=lambda: first.append(replies.once(("a", "Delete", "r"), slow, 10, size=1)))
    thread.start()
    started.wait(5)
    threading.Timer(0.2, release.set).start()
    assert replies.once(("a", "Delete", "r"), slow, 10, size=1) == "deleted 2"
    thread.join(5)
    assert first == ["deleted 2"] and runs == 1


def test_a_copy_that_cannot_wait_for_the_first_is_told_so() -> None:
    replies = RecentReplies()
    started, release = threading.Event(), threading.Event()
    thread = threading.Thread(target=lambda: replies.once(("a", "Delete", "r"),
                                                          lambda: (started.set(), release.wait(5), "done")[2], 10,
                                                          size=1))
    thread.start()
    started.wait(5)
    begun = time.monotonic()
    with pytest.raises(Unavailable, match="the first copy of request r is still running"):
        replies.once(("a", "Delete", "r"), lambda: "second run", 0.2, size=1)
    assert time.monotonic() - begun < 2
    release.set()
    thread.join(5)


def test_an_id_reused_for_another_write_is_refused() -> None:
    replies = RecentReplies()
    replies.once(("a", "Delete", "r"), lambda: "deleted x", 10, size=1, fingerprint=b"ids: x")
    with pytest.raises(InvalidInput, match="request id r was already used for another Delete"):
        replies.once(("a", "Delete", "r"), lambda: "deleted y", 10, size=1, fingerprint=b"ids: y")
    assert replies.once(("a", "Delete", "r"), lambda: "ran", 10, size=1, fingerprint=b"ids: x") == "deleted x"


def test_a_stream_is_fingerprinted_once_read_and_an_id_reused_for_another_stream_is_refused() -> None:
    """A stream's digest is known only once it has been read: the first try's after its run, a
    copy's by reading its own stream through (the fingerprint callable) before any reply is replayed."""
    replies = RecentReplies()
    read: list[str] = []

    def stream(name: str) -> Callable[[], bytes]:
        def digest() -> bytes:
            read.append(name)
            return name.encode()
        return digest

    assert replies.once(("a", "Ingest", "r"), lambda: "stored 1", 10, size=1, fingerprint=stream("x")) == "stored 1"
    assert read == ["x"]  # the first try's, after its run
    assert replies.once(("a", "Ingest", "r"), lambda: "ran", 10, size=1, fingerprint=stream("x")) == "stored 1"
    with pytest.raises(InvalidInput, match="request id r was already used for another Ingest"):
        replies.once(("a", "Ingest", "r"), lambda: "stored 2", 10, size=1, fingerprint=stream("y"))
    assert read == ["x", "x", "y"] and replies.replayed == 1


def test_a_stream_copy_whose_first_failed_is_told_to_send_again() -> None:
    """A copy's stream was read to fingerprint it, so it cannot run: it is told to send again."""
    replies = RecentReplies()
    started, release = threading.Event(), threading.Event()

    def failing() -> str:
        started.set()
        release.wait(5)
        raise Unavailable("shard 0 broke off")

    errors: list[BaseException] = []

    def first() -> None:
        try:
            replies.once(("a", "Ingest", "r"), failing, 10, size=1, fingerprint=lambda: b"x")
        except Unavailable as exc:
            errors.append(exc)

    thread = threading.Thread(target=first)
    thread.start()
    started.wait(5)
    threading.Timer(0.2, release.set).start()
    with pytest.raises(Unavailable, match="the first try of request r failed; send it again"):
        replies.once(("a", "Ingest", "r"), lambda: "never", 10, size=1, fingerprint=lambda: b"x")
    thread.join(5)
    assert len(errors) == 1
    assert replies.once(("a", "Ingest", "r"), lambda: "stored", 10, size=1, fingerprint=lambda: b"x") == "stored"


def test_beyond_the_size_bound_exactly_the_oldest_replies_go() -> None:
    replies = RecentReplies(max_bytes=1000)
    for i in range(300):
        replies.once(("a", "Delete", f"r{i}"), lambda i=i: f"reply {i}", 10, size=10)
    assert replies.held_bytes == 1000 and replies.kept == 100
    assert replies.once(("a", "Delete", "r199"), lambda: "ran again", 10, size=10) == "ran again"
    assert replies.once(("a", "Delete", "r299"), lambda: "ran again", 10, size=10) == "reply 299"


def test_a_stream_digest_covers_every_item_read_or_left_and_refuses_a_stream_over_the_limit() -> None:
    def items(*ids: str) -> list[pb.IngestItem]:
        return [pb.IngestItem(id=i, image=b"img-" + i.encode()) for i in ids]

    read = StreamDigest(iter(items("a", "b")), max_items=3)
    assert [m.id for m in read] == ["a", "b"]  # the first try reads it through its run
    assert read.digest() == StreamDigest(iter(items("a", "b")), 3).digest()  # a copy, read by digest() alone
    half = StreamDigest(iter(items("a", "b")), 3)
    next(iter(half))
    assert half.digest() == read.digest()  # what the run left is read too
    assert StreamDigest(iter(items("a")), 3).digest() != read.digest()
    assert StreamDigest(iter(items("b", "a")), 3).digest() != read.digest()
    assert StreamDigest(iter(items("a", "b", "c", "d")), 3).digest() == b"over the item limit"


@pytest.mark.parametrize("value", ["", "x" * 129, "has space", "semi;colon", "é"])
def test_a_request_id_must_be_short_and_plain(value: str) -> None:
    with pytest.raises(InvalidInput, match=r"orbithash-request-id must be 1\.\.128 letters, digits, '-' or '_'"):
        request_key([("orbithash-request-id", value)], "station-a", "Delete")


def test_the_key_is_the_caller_the_method_and_the_id() -> None:
    assert request_key([("x", "y")], "station-a", "Delete") is None
    assert request_key([("orbithash-request-id", "9f-a_0")], "station-a", "Delete") == ("station-a", "Delete",
                                                                                       "9f-a_0")
