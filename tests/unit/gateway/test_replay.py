"""Replies of recent writes by request id: a write sent again gets the first one's reply (no gRPC)."""

from __future__ import annotations

import threading
import time

import pytest

from gateway.replay import RecentReplies, request_key
from orbithash import InvalidInput, Unavailable


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


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
    clock = Clock()
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


@pytest.mark.parametrize("value", ["", "x" * 129, "has space", "semi;colon", "é"])
def test_a_request_id_must_be_short_and_plain(value: str) -> None:
    with pytest.raises(InvalidInput, match=r"orbithash-request-id must be 1\.\.128 letters, digits, '-' or '_'"):
        request_key([("orbithash-request-id", value)], "station-a", "Delete")


def test_the_key_is_the_caller_the_method_and_the_id() -> None:
    assert request_key([("x", "y")], "station-a", "Delete") is None
    assert request_key([("orbithash-request-id", "9f-a_0")], "station-a", "Delete") == ("station-a", "Delete",
                                                                                       "9f-a_0")
