"""Shared fixtures: real servers on free loopback ports, cleaned up after use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from orbithash.local.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture()
def redis_client(redis_server: RedisServer):
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()
