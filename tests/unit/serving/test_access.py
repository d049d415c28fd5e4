"""Tokens, roles and certificate names: who is admitted, and what a refused caller is told."""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from orbithash_local.security import add_token, revoke_token
from orbithash_serving import access
from orbithash_serving.access import (
    PeerAdmission,
    PermissionDenied,
    Role,
    TokenAdmission,
    TokenBook,
    TokenEntry,
    Unauthenticated,
    hash_token,
    parse_token_file,
    write_token_file,
)


class Context:
    """The two things admission reads from a gRPC context: metadata and the peer."""

    def __init__(self, metadata: list[tuple[str, str]] = (), peer: str = "ipv4:10.1.2.3:40000") -> None:
        self._metadata = tuple(metadata)
        self._peer = peer

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def peer(self) -> str:
        return self._peer


def bearer(token: str) -> Context:
    return Context([("authorization", f"Bearer {token}")])


@pytest.fixture()
def tokens(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    path = tmp_path / "tokens.json"
    issued = {role.label: add_token(path, f"ops-{role.label}", role) for role in Role}
    return path, issued


NEEDS = {"Search": Role.READER, "Ingest": Role.WRITER, "Delete": Role.ADMIN}


def test_each_role_may_do_what_its_role_allows_and_no_more(tokens) -> None:
    path, issued = tokens
    admission = TokenAdmission(TokenBook(str(path)), NEEDS)
    allowed = {(role, method) for role in issued for method in NEEDS
               if Role.parse(role) >= NEEDS[method]}
    for role, token in issued.items():
        for method in NEEDS:
            if (role, method) in allowed:
                who = admission.admit(method, bearer(token))
                assert (who.name, who.role, who.kind, who.peer) == (f"ops-{role}", Role.parse(role), "token",
                                                                      "ipv4:10.1.2.3:40000")
            else:
                with pytest.raises(PermissionDenied, match=rf"role {role}; {method} needs admin|role {role}; "
                                                           rf"{method} needs writer"):
                    admission.admit(method, bearer(token))
    assert ("reader", "Delete") not in allowed and ("admin", "Delete") in allowed


def test_a_method_not_in_the_table_needs_admin(tokens) -> None:
    path, issued = tokens
    admission = TokenAdmission(TokenBook(str(path)), NEEDS)
    with pytest.raises(PermissionDenied, match="Reindex needs admin"):
        admission.admit("Reindex", bearer(issued["writer"]))
    assert admission.admit("Reindex", bearer(issued["admin"])).role == Role.ADMIN


@pytest.mark.parametrize(("metadata", "message"), [
    ([], "needs a bearer token"),
    ([("authorization", "Basic dXNlcjpwdw==")], "must read 'Bearer <token>'"),
    ([("authorization", "Bearer ")], "must read 'Bearer <token>'"),
    ([("authorization", "Bearer ohk_not-a-real-token")], "not valid here"),
])
def test_missing_malformed_or_unknown_tokens_are_unauthenticated(tokens, metadata, message) -> None:
    path, _ = tokens
    with pytest.raises(Unauthenticated, match=message) as refused:
        TokenAdmission(TokenBook(str(path)), NEEDS).admit("Search", Context(metadata))
    assert "ohk_not-a-real-token" not in str(refused.value)  # a presented token is never echoed


@pytest.mark.parametrize("order", ["valid first", "valid last"])
def test_two_authorization_values_are_refused_whichever_comes_first(tokens, order) -> None:
    """A proxy that checks one value while the service reads the other would let a forged token
    ride along a real one; so more than one value is an error, not a choice."""
    path, issued = tokens
    values = [f"Bearer {issued['admin']}", "Bearer ohk_forged"]
    metadata = [("authorization", v) for v in (values if order == "valid first" else values[::-1])]
    with pytest.raises(Unauthenticated, match="exactly one 'authorization' metadata, not 2") as refused:
        TokenAdmission(TokenBook(str(path)), NEEDS).admit("Delete", Context(metadata))
    assert issued["admin"] not in str(refused.value) and "ohk_forged" not in str(refused.value)


def test_an_expired_token_is_refused_with_its_name_and_expiry(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    token = add_token(path, "old-station", Role.WRITER, dt.datetime(2026, 1, 1, tzinfo=dt.UTC))
    now = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    book = TokenBook(str(path), clock=lambda: now)
    with pytest.raises(Unauthenticated, match=r"'old-station' expired at 2026-01-01T00:00:00Z"):
        book.identify(token)
    earlier = TokenBook(str(path), clock=lambda: dt.datetime(2025, 12, 31, tzinfo=dt.UTC))
    assert earlier.identify(token).name == "old-station"


def test_the_file_holds_only_hashes(tokens) -> None:
    path, issued = tokens
    text = path.read_text()
    assert all(token not in text and hash_token(token) in text for token in issued.values())
    assert os.stat(path).st_mode & 0o077 == 0


def test_rotation_new_token_works_and_revoked_one_stops_without_a_restart(tokens, monkeypatch) -> None:
    monkeypatch.setattr(access, "RELOAD_CHECK_S", 0.0)
    path, issued = tokens
    book = TokenBook(str(path))
    assert book.identify(issued["writer"]).name == "ops-writer"
    new = add_token(path, "ops-writer-2", Role.WRITER)
    _touch_later(path)
    assert book.identify(new).name == "ops-writer-2"
    assert book.identify(issued["writer"]).name == "ops-writer"  # both valid while clients move
    assert revoke_token(path, "ops-writer") == 1
    _touch_later(path)
    with pytest.raises(Unauthenticated):
        book.identify(issued["writer"])
    assert book.identify(new).name == "ops-writer-2"


def test_a_broken_file_keeps_the_last_good_tokens(tokens, monkeypatch) -> None:
    monkeypatch.setattr(access, "RELOAD_CHECK_S", 0.0)
    path, issued = tokens
    book = TokenBook(str(path))
    path.write_text('{"tokens": [{"name": "x"')  # half-written
    _touch_later(path)
    assert book.identify(issued["admin"]).name == "ops-admin"


def test_a_token_file_with_a_plain_token_instead_of_a_hash_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "tokens.json"
    path.write_text('{"tokens": [{"name": "a", "role": "admin", "sha256": "ohk_abc"}]}')
    with pytest.raises(ValueError, match="64 hex digits"):
        TokenBook(str(path))
    with pytest.raises(ValueError, match="unknown role 'root'"):
        parse_token_file('{"tokens": [{"name": "a", "role": "root", "sha256": "' + "0" * 64 + '"}]}')


def test_write_and_parse_round_trip(tmp_path: Path) -> None:
    entry = TokenEntry("a", Role.READER, "ab" * 32, dt.datetime(2027, 5, 1, 12, tzinfo=dt.UTC))
    write_token_file(tmp_path / "t.json", [entry])
    assert parse_token_file((tmp_path / "t.json").read_text()) == {entry.sha256: entry}


def test_peer_admission_names_the_certificate_and_who_may_call() -> None:
    names = {"ipv4:1": frozenset({"gateway", "localhost"}), "ipv4:2": frozenset({"client"}), "ipv4:3": frozenset()}
    admission = PeerAdmission(frozenset({"gateway"}), lambda ctx: names[ctx.peer()])
    assert admission.admit("Search", Context(peer="ipv4:1")).name == "gateway"
    with pytest.raises(PermissionDenied, match=r"\(client\) may not call Add; this service admits gateway"):
        admission.admit("Add", Context(peer="ipv4:2"))
    with pytest.raises(Unauthenticated, match="needs a client certificate"):
        admission.admit("Add", Context(peer="ipv4:3"))


def _touch_later(path: Path) -> None:
    """A new modification time even on a coarse clock."""
    stamp = time.time_ns() + 5_000_000_000
    os.utime(path, ns=(stamp, stamp))


def test_the_missing_token_advice_names_options_that_exist(tokens) -> None:
    """The CLI takes --token-file or $ORBITHASH_TOKEN; `--token` itself is refused (it would show in ps)."""
    path, _ = tokens
    with pytest.raises(Unauthenticated) as refused:
        TokenAdmission(TokenBook(str(path)), NEEDS).admit("Search", Context([]))
    assert "--token-file" in str(refused.value) and "--token," not in str(refused.value)
