"""Who is calling, and may they: bearer tokens with roles on the public API, certificate names on
the internal ones. Every call is admitted here (by the shared interceptor) before its handler runs.

Tokens are static and stored hashed (docs/security.md says why not JWT): the token file holds the
SHA-256 of each token, its name, role and optional expiry, and is read again when it changes, so a
token is added or revoked without a restart. A token is 256 random bits, so a fast hash is as good
as a slow one against guessing; the plain token exists only with its holder. Neither a token nor
its hash ever appears in a log line, a metric or an error message; the token's name does.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import enum
import hashlib
import json
import logging
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import grpc

from orbithash import OrbitHashError
from orbithash_serving.private_files import write_private

log = logging.getLogger("orbithash.access")

TOKEN_PREFIX = "ohk_"
RELOAD_CHECK_S = 1.0


class Unauthenticated(OrbitHashError):
    """The caller did not say who it is, or not credibly (maps to UNAUTHENTICATED)."""


class PermissionDenied(OrbitHashError):
    """The caller is known but may not do this (maps to PERMISSION_DENIED)."""


class Role(enum.IntEnum):
    """Each role may do what the roles below it may."""

    READER = 1
    WRITER = 2
    ADMIN = 3

    @classmethod
    def parse(cls, text: str) -> Role:
        try:
            return cls[text.strip().upper()]
        except KeyError:
            raise ValueError(f"unknown role {text!r}: choose reader, writer or admin") from None

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Principal:
    """The caller as admitted: a token's name and role, a certificate's name, or a peer address."""

    name: str
    role: Role
    kind: str  # "token", "certificate" or "peer"
    peer: str = ""


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("orbithash_principal", default=None)


def current_principal() -> Principal | None:
    """The caller of the RPC this thread is handling (set by the interceptor)."""
    return _current.get()


def set_current_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    return _current.set(principal)


def reset_current_principal(token: contextvars.Token[Principal | None]) -> None:
    _current.reset(token)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh bearer token: the prefix makes it recognisable to secret scanners."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


@dataclass(frozen=True)
class TokenEntry:
    name: str
    role: Role
    sha256: str
    expires: dt.datetime | None = None

    def as_json(self) -> dict[str, str]:
        out = {"name": self.name, "role": self.role.label, "sha256": self.sha256}
        if self.expires is not None:
            out["expires"] = self.expires.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return out


def parse_token_file(text: str) -> dict[str, TokenEntry]:
    """``{"tokens": [{"name", "role", "sha256", "expires"?}]}`` → entries by hash; raises ValueError."""
    document = json.loads(text)
    if not isinstance(document, dict) or not isinstance(document.get("tokens"), list):
        raise ValueError('a token file is a JSON object {"tokens": [...]}')
    entries: dict[str, TokenEntry] = {}
    for position, raw in enumerate(document["tokens"]):
        if not isinstance(raw, dict) or not {"name", "role", "sha256"} <= raw.keys():
            raise ValueError(f"token {position}: needs name, role and sha256")
        digest = str(raw["sha256"]).lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError(f"token {raw['name']!r}: sha256 must be 64 hex digits (the hash, never the token)")
        expires = None
        if raw.get("expires"):
            expires = dt.datetime.fromisoformat(str(raw["expires"]).replace("Z", "+00:00"))
            if expires.tzinfo is None:
                expires = expires.replace(tzinfo=dt.UTC)
        entries[digest] = TokenEntry(str(raw["name"]), Role.parse(str(raw["role"])), digest, expires)
    return entries


def write_token_file(path: Path, entries: list[TokenEntry]) -> None:
    write_private(path, json.dumps({"tokens": [e.as_json() for e in entries]}, indent=2) + "\n")


class TokenBook:
    """The token file, read again when it changes; a file that does not parse keeps the last good one."""

    def __init__(self, path: str, clock: Callable[[], dt.datetime] | None = None) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        self._lock = threading.Lock()
        self._checked = 0.0
        self._stamp = self.path.stat().st_mtime_ns
        self._entries = parse_token_file(self.path.read_text())  # a bad file at start is fatal

    def _refresh(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._checked < RELOAD_CHECK_S:
                return
            self._checked = now
            try:
                stamp = self.path.stat().st_mtime_ns
                if stamp == self._stamp:
                    return
                entries = parse_token_file(self.path.read_text())
            except (OSError, ValueError) as exc:
                log.error("token file %s changed but cannot be used (%s); keeping the previous tokens",
                          self.path, exc)
                return
            self._stamp, self._entries = stamp, entries
            log.info("token file reloaded: %d tokens", len(entries))

    def identify(self, token: str) -> Principal:
        self._refresh()
        entry = self._entries.get(hash_token(token))
        if entry is None:
            raise Unauthenticated("the bearer token is not valid here (unknown or revoked); "
                                  "ask this cluster's operator for a token")
        if entry.expires is not None and entry.expires <= self._clock():
            raise Unauthenticated(f"the bearer token {entry.name!r} expired at "
                                  f"{entry.expires.strftime('%Y-%m-%dT%H:%M:%SZ')}; ask the operator for a new one")
        return Principal(entry.name, entry.role, "token")


class Admission(Protocol):
    def admit(self, method: str, context: grpc.ServicerContext) -> Principal: ...


def bearer_token(metadata: Iterable[tuple[str, str | bytes]]) -> str:
    """The token of the one ``authorization`` value. More than one is refused: a proxy that checks
    the first while this reads the last would let a forged token ride along a real one."""
    values = [v for k, v in metadata if k == "authorization"]
    if not values:
        raise Unauthenticated("this service needs a bearer token: send the metadata "
                              "'authorization: Bearer <token>' (orbithash --token-file FILE, or the token in "
                              "$ORBITHASH_TOKEN; OrbitHashClient(token=...))")
    if len(values) > 1:
        raise Unauthenticated(f"send exactly one 'authorization' metadata, not {len(values)}")
    raw = values[0]
    value = raw.decode(errors="replace") if isinstance(raw, bytes) else raw
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthenticated("the authorization metadata must read 'Bearer <token>'")
    return token.strip()


class TokenAdmission:
    """The public API: a bearer token whose role is at least the one the method needs.

    A method missing from ``needs`` needs ADMIN: a new method is closed until someone opens it.
    """

    def __init__(self, book: TokenBook, needs: Mapping[str, Role]) -> None:
        self._book = book
        self._needs = dict(needs)

    def admit(self, method: str, context: grpc.ServicerContext) -> Principal:
        principal = self._book.identify(bearer_token(context.invocation_metadata() or ()))
        need = self._needs.get(method, Role.ADMIN)
        if principal.role < need:
            raise PermissionDenied(f"token {principal.name!r} has the role {principal.role.label}; "
                                   f"{method} needs {need.label} or above")
        return Principal(principal.name, principal.role, principal.kind, context.peer())


class PeerAdmission:
    """Internal APIs: the caller's verified certificate must name one of ``allowed`` (any name when
    empty: the TLS handshake already required a certificate of the cluster's CA)."""

    def __init__(self, allowed: frozenset[str], names: Callable[[grpc.ServicerContext], frozenset[str]]) -> None:
        self._allowed = allowed
        self._names = names

    def admit(self, method: str, context: grpc.ServicerContext) -> Principal:
        names = self._names(context)
        if not names:
            raise Unauthenticated(f"{method} needs a client certificate of this cluster (mutual TLS)")
        matching = sorted(names & self._allowed) if self._allowed else sorted(names)
        if not matching:
            shown = ", ".join(sorted(names))
            raise PermissionDenied(f"the client certificate ({shown}) may not call {method}; "
                                   f"this service admits {', '.join(sorted(self._allowed))}")
        return Principal(matching[0], Role.ADMIN, "certificate", context.peer())


class OpenAdmission:
    """No identity asked (a plaintext or TLS-only service): the caller is named by its address,
    which is what per-client limits count by."""

    def admit(self, method: str, context: grpc.ServicerContext) -> Principal:
        peer = context.peer() or "unknown"
        return Principal(_peer_host(peer), Role.ADMIN, "peer", peer)


def _peer_host(peer: str) -> str:
    """``ipv4:10.0.0.5:41234`` → ``ipv4:10.0.0.5``: one client, whichever port it calls from."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        return f"{kind}:{rest.rpartition(':')[0]}"
    return peer
