"""Gateway settings refuse values the gateway cannot run with."""

from __future__ import annotations

import os
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.settings import MAX_K_LIMIT, GatewaySettings


@pytest.fixture(autouse=True)
def _no_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ORBITHASH_GATEWAY_"):
            monkeypatch.delenv(name)


def test_defaults_and_addresses() -> None:
    settings = GatewaySettings(shards=" a:1, b:2 ,,")
    assert settings.shard_addresses() == ["a:1", "b:2"]
    assert settings.max_k == 10_000
    assert settings.thumbnail_size == 0  # off unless asked for


@pytest.mark.parametrize("fields", [
    {"max_k": 0}, {"max_k": MAX_K_LIMIT + 1}, {"timeout_s": 0}, {"timeout_s": -1.0}, {"ingest_batch": 0},
    {"startup_timeout_s": 0}, {"shards": ""}, {"shards": " , "}, {"encoder": ""},
    {"thumbnail_size": -1}, {"thumbnail_size": 1025}, {"max_queries": 0}, {"max_hits": 0}, {"max_ids": 0},
    {"max_stream_bytes": 1000},
])
def test_out_of_bounds_settings_are_refused(fields: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        GatewaySettings(**fields)


def test_flags_are_checked_too() -> None:
    with pytest.raises(ValidationError):
        GatewaySettings.from_argv(["--max-k", "0"])
    assert GatewaySettings.from_argv(["--max-k", "5", "--shards", "x:1"]).max_k == 5
