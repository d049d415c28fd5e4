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
    """redis-server in ``data_dir``, append-only with fsync before each reply: no acknowledged write is lost.

    ``appendfsync always`` (the default here) writes and fsyncs the append-only file before Redis
    replies, so a write a shard acknowledged survives a SIGKILL of redis-server and even of the
    machine; ``everysec`` would lose up to a second of them on a power cut (not on a SIGKILL alone).
    Started again on the same port and data directory (:meth:`restart`, or the launcher's
    supervisor) it loads the append-only file and holds every acknowledged write.
    """

    name = "redis-server"

    def __init__(self, data_dir: Path, port: int | None = None, appendfsync: str = "always",
                 timeout: float = 20.0) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.timeout = timeout
        data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
            "--dir", str(data_dir.resolve()), "--appendonly", "yes", "--appendfsync", appendfsync,
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
        ]
        self.process = ManagedProcess(self.name, argv, data_dir / "redis.log")
        self.process.wait_ready(self.ready, timeout=timeout)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def details(self) -> dict[str, object]:
        """What the launcher's state file records beside the command line."""
        return {"url": self.url, "data_dir": str(self.data_dir.resolve())}

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)

    def ready(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def restart(self) -> None:
        """Start again on the same port and data directory (after :meth:`stop` or a crash)."""
        if self.process.alive():
            self.process.stop()
        self.process.start()
        self.process.wait_ready(self.ready, self.timeout)

    def stop(self) -> None:
        self.process.stop()
