"""Shared fixtures: real servers on free loopback ports, cleaned up after use."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import SHARED_DATA

from orbithash_local.redis_server import RedisServer

if TYPE_CHECKING:
    from orbithash.data import Split
    from orbithash.training.result import TrainResult


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


@dataclass(frozen=True)
class ShortTraining:
    split: Split
    result: TrainResult
    cache: Path  # the features cached by the training (pooled ones are added by tests that fit heads)


@pytest.fixture(scope="session")
def short_training(tmp_path_factory: pytest.TempPathFactory) -> ShortTraining:
    """One short real training (32 bits, 20 UC Merced images per class: 16 database + 4 queries),
    shared by every test that needs a trained model: it is the suite's costliest setup."""
    from orbithash.data import load_split
    from orbithash.training.finetune import train

    split = load_split(SHARED_DATA / "ucmerced.zip", limit_per_class=20)
    cache = tmp_path_factory.mktemp("features")
    return ShortTraining(split, train(split, bits=32, cache_dir=cache, progress=False), cache)


@pytest.fixture(scope="session")
def trained_repo(tmp_path_factory: pytest.TempPathFactory, short_training: ShortTraining) -> Path:
    """A model repository serving ``short_training``'s model under the default name."""
    from orbithash.training.result import export_trained

    repo = tmp_path_factory.mktemp("model_repository")
    export_trained(short_training.result, repo)
    return repo


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory, trained_repo: Path):
    """The real cluster: redis-server, tritonserver, encoder, two shards, gateway."""
    from orbithash_local.cluster import Cluster, ClusterConfig

    config = ClusterConfig(model_repository=trained_repo, work_dir=tmp_path_factory.mktemp("cluster"), shards=2)
    with Cluster(config) as running:
        yield running
