"""Replies of recent writes by the caller's request id.

A client that loses a write's reply (a dropped connection, a deadline that passed as the answer
came back) sends the write again. Run twice, a Delete answers "missing" for the ids its first run
deleted and an Ingest "replaced" for the items its first run stored. With the same
``orbithash-request-id`` on every try, the second gets the first one's reply instead, and a copy
arriving while the first still runs waits for it. A failed write is not kept: sent again, it runs
again (every write is safe to repeat). Kept in this process only: a try that reaches another
gateway replica runs again.
"""

from __future__ import annotations

import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from orbithash import InvalidInput, Unavailable

REQUEST_ID_KEY = "orbithash-request-id"
_REQUEST_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
R = TypeVar("R")
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


@dataclass
class _Entry:
    done: threading.Event = field(default_factory=threading.Event)
    reply: Any = None
    ok: bool = False
    size: int = 0
    kept_at: float = 0.0
    fingerprint: bytes = b""


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

    def once(self, key: Key | None, run: Callable[[], R], wait_s: float | None, size: int | Callable[[R], int],
             fingerprint: bytes = b"") -> R:
        """``run()``, unless a try of the same key ran: then its reply. ``wait_s``: how long a copy
        may wait for a first try still running; ``size``: the reply's bytes (or how to count them);
        ``fingerprint``: the request's digest, when known, so an id reused for another write is refused."""
        if key is None:
            return run()
        with self._lock:
            self._forget_expired()
            entry = self._entries.get(key)
            mine = entry is None
            if mine:
                entry = self._entries[key] = _Entry(fingerprint=fingerprint)
        assert entry is not None
        if not mine and entry.fingerprint != fingerprint:
            raise InvalidInput(f"request id {key[2]} was already used for another {key[1]}; send each write with "
                               "an id of its own (and the same id only on its tries)")
        if not mine:
            if not entry.done.wait(wait_s):
                raise Unavailable(f"the first copy of request {key[2]} is still running; send it again later "
                                  "with the same request id to get its reply")
            if entry.ok:
                with self._lock:
                    self.replayed += 1
                return entry.reply
            return self.once(key, run, wait_s, size, fingerprint)  # the first failed and was dropped: run it now
        try:
            reply = run()
        except BaseException:
            with self._lock:
                self._entries.pop(key, None)
            entry.done.set()
            raise
        with self._lock:
            entry.reply, entry.ok, entry.kept_at = reply, True, self._clock()
            entry.size = size(reply) if callable(size) else size
            self.held_bytes += entry.size
            self._forget_oldest()
        entry.done.set()
        return reply

    def _forget_expired(self) -> None:
        now = self._clock()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if not entry.ok or now - entry.kept_at <= self.ttl_s:
                return
            self._drop(key)

    def _forget_oldest(self) -> None:
        for key in list(self._entries):
            if self.held_bytes <= self.max_bytes:
                return
            if self._entries[key].ok:
                self._drop(key)

    def _drop(self, key: Key) -> None:
        self.held_bytes -= self._entries.pop(key).size
