"""The whole OrbitHash cluster as local processes on free loopback ports.

redis-server → tritonserver → encoder → N index shards → gateway, each started after the one it
depends on and waited on until gRPC health says SERVING; stopped in reverse order.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

import encoder_service
import gateway
import index_service
from orbithash.export.onnx_facts import load_facts_from_onnx
from orbithash.export.repository import model_path
from orbithash.model_facts import ModelFacts
from orbithash_local.processes import ManagedProcess, free_port
from orbithash_local.redis_server import RedisServer
from orbithash_local.triton import TritonServer

log = logging.getLogger("orbithash.cluster")
STATE_FILE = "cluster.json"


@dataclass
class ClusterConfig:
    model_repository: Path
    work_dir: Path
    model_name: str = "orbithash"
    shards: int = 2
    use_triton: bool = True
    gateway_port: int = 0
    max_k: int = 10_000
    startup_timeout_s: float = 180.0


@dataclass
class ServiceProcess:
    name: str
    address: str
    metrics_port: int
    process: ManagedProcess
    argv: list[str] = field(default_factory=list)


def grpc_serving(address: str, timeout: float = 1.0) -> bool:
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def start_service(name: str, package: ModuleType, args: list[str], log_dir: Path, port: int = 0,
                  timeout: float = 180.0, checkout: Path | None = None) -> ServiceProcess:
    """``python -m <package>`` on a free (or the given) port, waited on until health says SERVING.

    The service is passed as its imported package, so the dependency shows in the imports.
    ``checkout``: run the service from another checkout of this repository (a before/after bench).
    """
    port = port or free_port()
    metrics_port = free_port()
    argv = [sys.executable, "-m", package.__name__, "--port", str(port), "--metrics-port", str(metrics_port), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **({"PYTHONPATH": str(checkout)} if checkout else {}))
    process = ManagedProcess(name, argv, log_dir / f"{name}.log", env=env, cwd=checkout)
    address = f"127.0.0.1:{port}"
    process.wait_ready(lambda: grpc_serving(address), timeout)
    log.info("%s SERVING on %s (metrics :%d)", name, address, metrics_port)
    return ServiceProcess(name, address, metrics_port, process, argv)


class Cluster:
    """Start with :meth:`start` (or ``with Cluster(cfg) as c``); stop with :meth:`stop`."""

    def __init__(self, config: ClusterConfig) -> None:
        self.config = config
        self.facts: ModelFacts = load_facts_from_onnx(self.model_path)
        self.redis: RedisServer | None = None
        self.triton: TritonServer | None = None
        self.encoder: ServiceProcess | None = None
        self.shards: list[ServiceProcess] = []
        self.gateway: ServiceProcess | None = None

    @property
    def model_path(self) -> Path:
        return model_path(self.config.model_repository, self.config.model_name)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- starting ------------------------------------------------------------------------------

    def _service(self, name: str, package: ModuleType, args: list[str], port: int = 0) -> ServiceProcess:
        return start_service(name, package, args, self.config.work_dir / "logs", port,
                             self.config.startup_timeout_s)

    def start(self) -> None:
        cfg = self.config
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.redis = RedisServer(cfg.work_dir / "redis")
            log.info("redis-server on %s (data in %s)", self.redis.url, cfg.work_dir / "redis")
            encoder_args = ["--model-name", cfg.model_name, "--model-repository", str(cfg.model_repository)]
            if cfg.use_triton:
                self.triton = TritonServer(cfg.model_repository, cfg.work_dir / "triton", cfg.model_name,
                                           timeout=cfg.startup_timeout_s)
                log.info("tritonserver gRPC on %s (metrics :%d)", self.triton.url, self.triton.metrics_port)
                encoder_args += ["--triton-url", self.triton.url]
            self.encoder = self._service("encoder", encoder_service, encoder_args)
            for shard in range(cfg.shards):
                self.shards.append(self._service(f"shard-{shard}", index_service, self._shard_args(shard)))
            self.gateway = self._service("gateway", gateway, [
                "--encoder", self.encoder.address, "--shards", ",".join(s.address for s in self.shards),
                "--max-k", str(cfg.max_k)], port=cfg.gateway_port)
            self._write_state()
        except BaseException:
            self.stop()
            raise

    def _shard_args(self, shard: int) -> list[str]:
        assert self.redis is not None
        return ["--shard", str(shard), "--redis-url", self.redis.url, "--bits", str(self.facts.bits),
                "--model-version", self.facts.version]

    def restart_shard(self, shard: int, kill: bool = True) -> None:
        """Crash (SIGKILL) or stop a shard, then start it again on the same port."""
        old = self.shards[shard]
        if kill:
            old.process.kill()
        else:
            old.process.stop()
        port = int(old.address.rsplit(":", 1)[1])
        self.shards[shard] = self._service(old.name, index_service, self._shard_args(shard), port=port)

    # -- reporting and stopping ----------------------------------------------------------------

    def endpoints(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.gateway:
            out["gateway"] = self.gateway.address
            out["gateway_metrics"] = f"http://127.0.0.1:{self.gateway.metrics_port}/metrics"
        if self.encoder:
            out["encoder"] = self.encoder.address
            out["encoder_metrics"] = f"http://127.0.0.1:{self.encoder.metrics_port}/metrics"
        out["shards"] = [s.address for s in self.shards]
        out["shard_metrics"] = [f"http://127.0.0.1:{s.metrics_port}/metrics" for s in self.shards]
        if self.triton:
            out["triton_grpc"] = self.triton.url
            out["triton_metrics"] = f"http://127.0.0.1:{self.triton.metrics_port}/metrics"
        if self.redis:
            out["redis"] = self.redis.url
        out["model"] = {"name": self.facts.name, "version": self.facts.version, "bits": self.facts.bits}
        out["logs"] = str(self.config.work_dir / "logs")
        return out

    def child_pids(self) -> dict[str, int]:
        services = [self.encoder, *self.shards, self.gateway]
        pids = {s.name: s.process.pid for s in services if s is not None}
        for name, server in (("tritonserver", self.triton), ("redis-server", self.redis)):
            if server is not None:
                pids[name] = server.process.pid
        return pids

    def _write_state(self) -> None:
        state = {"pid": os.getpid(), "endpoints": self.endpoints(), "children": self.child_pids()}
        (self.config.work_dir / STATE_FILE).write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        services = [self.gateway, *reversed(self.shards), self.encoder]
        for service in services:
            if service is not None:
                service.process.stop()
        for server in (self.triton, self.redis):
            if server is not None:
                server.stop()
        self.gateway, self.shards, self.encoder, self.triton, self.redis = None, [], None, None, None
        (self.config.work_dir / STATE_FILE).unlink(missing_ok=True)
