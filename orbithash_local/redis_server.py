"""A real ``redis-server`` on a free loopback port with its own data directory."""

from __future__ import annotations

import shutil
from pathlib import Path

import redis

from orbithash import Unavailable
from orbithash_local.processes import ManagedProcess, free_port


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise Unavailable("redis-server is not installed (apt-get install -y redis-server)")
    return path


class RedisServer:
    """redis-server in ``data_dir``, append-only with fsync before each reply: no acknowledged write is lost."""

    def __init__(self, data_dir: Path, port: int | None = None, appendfsync: str = "always") -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(data_dir), "--appendonly", "yes", "--appendfsync", appendfsync,
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
        ]
        self.process = ManagedProcess("redis-server", argv, data_dir / "redis.log")
        self.process.wait_ready(self._ping, timeout=20)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def _ping(self) -> bool:
        return bool(self.client().ping())

    def stop(self) -> None:
        self.process.stop()
