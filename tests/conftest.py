"""Shared fixtures: real servers on free loopback ports, cleaned up after use."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from support import SHARED_DATA

from orbithash_local.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture()
def redis_client(redis_server: RedisServer):
    """An admin client on an emptied Redis."""
    client = redis_server.client()
    client.flushall()
    yield client
    client.close()


@pytest.fixture()
def shard0_redis(redis_server: RedisServer) -> dict[str, str]:
    """``IndexSettings`` fields that point shard 0 at ``redis_server`` as its own ACL user."""
    username, password_file = redis_server.shard_credentials(0)
    return {"redis_url": redis_server.url, "redis_username": username, "redis_password_file": str(password_file)}


@pytest.fixture(scope="session")
def ucm_subset():
    """A small real UC Merced split: 8 database + 2 query images per class (21 classes)."""
    from orbithash.data import load_split

    zip_path = SHARED_DATA / "ucmerced.zip"
    assert zip_path.exists(), f"tests need the real UC Merced data at {zip_path}"
    return load_split(zip_path, limit_per_class=10)


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory, ucm_subset) -> Path:
    """A model repository with a small real model trained here (32 bits, few epochs)."""
    from orbithash.training.finetune import train_and_export

    repo = tmp_path_factory.mktemp("model_repository")
    train_and_export(ucm_subset, bits=32, repo_dir=repo, progress=False)
    return repo


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, trained_repo: Path):
    """The real cluster: redis-server, tritonserver, encoder, two shards, gateway."""
    from orbithash_local.cluster import Cluster, ClusterConfig

    config = ClusterConfig(model_repository=trained_repo, work_dir=tmp_path_factory.mktemp("cluster"), shards=2)
    with Cluster(config) as running:
        yield running
