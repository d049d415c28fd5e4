"""Replies of recent writes by the caller's request id.

A client that loses a write's reply (a dropped connection, a deadline that passed as the answer
came back) sends the write again. Run twice, a Delete answers "missing" for the ids its first run
deleted and an Ingest "replaced" for the items its first run stored. With the same
``orbithash-request-id`` on every try, the second gets the first one's reply instead, and a copy
arriving while the first still runs waits for it. A failed write is not kept: sent again, it runs
again (every write is safe to repeat). Kept in this process only: a try that reaches another
gateway replica runs again.

An id reused for another write is refused, never answered with the other write's reply: a unary
write is compared by its message's digest; a stream (Ingest) by the digest of its items, which is
known only once it has been read, so a copy reads its own stream through before it is answered.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from google.protobuf.message import Message

from orbithash import InvalidInput, Unavailable

REQUEST_ID_KEY = "orbithash-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
R = TypeVar("R")

S = TypeVar("S", bound=Message)
Key = tuple[str, str, str]  # (caller, method, request id)


def request_key(metadata: Iterable[tuple[str, Any]], caller: str, method: str) -> Key | None:
    """The write's key, or None when the call carries no request id."""
    for name, value in metadata:
        if name == REQUEST_ID_KEY:
            if not isinstance(value, str) or not _REQUEST_ID.fullmatch(value):
                raise InvalidInput(f"{REQUEST_ID_KEY} must be 1..128 letters, digits, '-' or '_' "
                                   "(one value per write, the same on each of its tries)")
            return caller, method, value
    return None


def message_digest(message: Message) -> bytes:
    """A unary write's fingerprint: the digest of its message."""
    return hashlib.sha256(message.SerializeToString(deterministic=True)).digest()


def _resolved(fingerprint: bytes | Callable[[], bytes]) -> bytes:
    """A unary write's digest as it is; a stream's once read (see StreamDigest.digest)."""
    return fingerprint if isinstance(fingerprint, bytes) else fingerprint()


class StreamDigest(Generic[S]):
    """A request stream read through this, each message hashed in turn, for ``once``'s fingerprint.

    ``digest()`` reads what is left of the stream first (a copy's whole stream, hashed and dropped),
    at most ``max_items`` messages: a longer stream cannot be the write that was answered, so it
    gets a digest no stream of ``max_items`` messages has.
    """

    def __init__(self, messages: Iterator[S], max_items: int) -> None:
        self._messages = messages
        self._max_items = max_items
        self._hash = hashlib.sha256()
        self._count = 0

    def _add(self, message: S) -> None:
        data = message.SerializeToString(deterministic=True)
        self._hash.update(len(data).to_bytes(8, "little"))
        self._hash.update(data)
        self._count += 1

    def __iter__(self) -> Iterator[S]:
        for message in self._messages:
            self._add(message)
            yield message

    def digest(self) -> bytes:
        for message in self._messages:
            if self._count >= self._max_items:
                return b"over the item limit"
            self._add(message)
        return self._hash.digest()


@dataclass
class _Entry:
    done: threading.Event = field(default_factory=threading.Event)
    reply: Any = None
    ok: bool = False
    size: int = 0
    kept_at: float = 0.0
    fingerprint: bytes | None = None  # None: not known yet (a stream still being read)


class RecentReplies:
    """The replies of the last writes, for ``ttl_s`` and within ``max_bytes`` (oldest go first)."""

    def __init__(self, ttl_s: float = 600.0, max_bytes: int = 64 * 2**20,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[Key, _Entry] = OrderedDict()
        self.held_bytes = 0
        self.replayed = 0  # tries answered with an earlier reply

    @property
    def kept(self) -> int:
        """Replies held (not counting first tries still running)."""
        with self._lock:
            return sum(1 for entry in self._entries.values() if entry.ok)

    def once(self, key: Key | None, run: Callable[[], R], wait_s: float | None, size: int | Callable[[R], int],
             fingerprint: bytes | Callable[[], bytes] = b"") -> R:
        """``run()``, unless a try of the same key ran: then its reply. ``wait_s``: how long a copy
        may wait for a first try still running; ``size``: the reply's bytes (or how to count them);
        ``fingerprint``: the request's digest, so an id reused for another write is refused; a
        callable for a stream, called once the stream is read (after ``run`` for the first try)."""
        if key is None:
            return run()
        wait_until = None if wait_s is None else time.monotonic() + wait_s  # reading a copy's stream counts
        known = fingerprint if isinstance(fingerprint, bytes) else None
        with self._lock:
            self._forget_expired()
            entry = self._entries.get(key)
            mine = entry is None
            if mine:
                entry = self._entries[key] = _Entry(fingerprint=known)
        assert entry is not None
        if mine:
            return self._run_first(key, entry, run, size, fingerprint)
        theirs = _resolved(fingerprint)
        if entry.fingerprint is not None and entry.fingerprint != theirs:
            raise self._reused(key)
        if not entry.done.wait(None if wait_until is None else max(0.0, wait_until - time.monotonic())):
            raise Unavailable(f"the first copy of request {key[2]} is still running; send it again later "
                              "with the same request id to get its reply")
        if not entry.ok:  # the first failed and was dropped
            if known is None:  # this copy's stream was read to fingerprint it: it cannot run now
                raise Unavailable(f"the first try of request {key[2]} failed; send it again with the same "
                                  "request id (nothing of this copy was stored)")
            return self.once(key, run, wait_s, size, fingerprint)
        if entry.fingerprint != theirs:
            raise self._reused(key)
        with self._lock:
            self.replayed += 1
        return entry.reply

    def _run_first(self, key: Key, entry: _Entry, run: Callable[[], R], size: int | Callable[[R], int],
                   fingerprint: bytes | Callable[[], bytes]) -> R:
        try:
            reply = run()
            digest = _resolved(fingerprint)
        except BaseException:
            with self._lock:
                self._entries.pop(key, None)
            entry.done.set()
            raise
        with self._lock:
            entry.reply, entry.ok, entry.kept_at, entry.fingerprint = reply, True, self._clock(), digest
            entry.size = size(reply) if callable(size) else size
            self.held_bytes += entry.size
            self._forget_oldest()
        entry.done.set()
        return reply

    @staticmethod
    def _reused(key: Key) -> InvalidInput:
        return InvalidInput(f"request id {key[2]} was already used for another {key[1]}; send each write with "
                            "an id of its own (and the same id only on its tries)")

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if not entry.ok or now - entry.kept_at <= self.ttl_s:
                return
            self._drop(key)

    def _forget_oldest(self) -> None:
        """Drop kept replies, oldest first, until within ``max_bytes`` (first tries still running stay)."""
        excess = self.held_bytes - self.max_bytes
        if excess <= 0:
            return
        dropped = []
        for key, entry in self._entries.items():
            if excess <= 0:
                break
            if entry.ok:
                dropped.append(key)
                excess -= entry.size
        for key in dropped:
            self._drop(key)

    def _drop(self, key: Key) -> None:
        self.held_bytes -= self._entries.pop(key).size
