"""Fixtures of the operator commands' tests: every command talks to a fake client."""

from __future__ import annotations

import pytest
from unit.cli.cli_support import FakeClient

from orbithash_cli import commands


@pytest.fixture()
def client(monkeypatch: pytest.MonkeyPatch) -> FakeClient:
    """A fake that every command in this test talks to instead of a gateway."""
    fake = FakeClient()
    monkeypatch.setattr(commands, "connect", lambda address, **security: fake)
    return fake


@pytest.fixture()
def run(client: FakeClient):
    """``run("ingest", "DIR", ...)``: the exit code of ``orbithash`` with these arguments."""
    from orbithash_local.cli import main

    def invoke(*argv: str) -> int:
        return main(list(argv))

    return invoke
