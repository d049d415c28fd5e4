"""The whole OrbitHash cluster as local processes on free loopback ports.

redis-server → tritonserver → encoder → N index shards → gateway, each started after the one it
depends on and waited on until gRPC health says SERVING; stopped in reverse order. With
``supervise`` (what ``orbithash up`` does) a :class:`~orbithash_local.supervisor.Supervisor` starts a
child that exited again on the same port, and the state file (``cluster.json`` in the work
directory) is kept current: per child its pid, address, command line, restarts and last exit. The
launcher's own metrics (restarts, children up) are served on loopback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry, start_http_server

import encoder_service
import gateway
import index_service
from orbithash.export.onnx_facts import load_facts_from_onnx
from orbithash.export.repository import model_path
from orbithash.model_facts import ModelFacts
from orbithash_local.processes import ManagedProcess, free_port
from orbithash_local.redis_server import RedisServer
from orbithash_local.security import LocalSecurity, prepare
from orbithash_local.supervisor import Backoff, Supervisor
from orbithash_local.triton import TritonServer
from orbithash_serving.tls import channel_credentials

log = logging.getLogger("orbithash.cluster")
STATE_FILE = "cluster.json"
LOOPBACK = "127.0.0.1"


def connect_host(bind_host: str) -> str:
    """Where this machine reaches a server bound to ``bind_host`` (loopback for the wildcard)."""
    return LOOPBACK if bind_host in ("0.0.0.0", "") else bind_host


@dataclass
class ClusterConfig:
    model_repository: Path
    work_dir: Path
    model_name: str = "orbithash"
    shards: int = 2
    use_triton: bool = True
    gateway_port: int = 0
    gateway_host: str = LOOPBACK  # the address the gateway binds (`orbithash up --host`); the others stay on loopback
    max_k: int = 10_000
    thumbnail_size: int = 128  # JPEG thumbnails stored with each item (0: none); the services' own default is off
    startup_timeout_s: float = 180.0
    supervise: bool = False  # restart children that exit (``orbithash up``); off for tests that crash them
    backoff: Backoff = field(default_factory=Backoff)
    metrics_port: int = 0  # the launcher's own /metrics on loopback, when supervising (0: a free port)
    tls: bool = False  # TLS on every hop, mutual inside, tokens on the gateway (`orbithash up --tls`)


@dataclass
class ServiceProcess:
    name: str
    address: str
    metrics_port: int
    process: ManagedProcess
    argv: list[str] = field(default_factory=list)
    credentials: grpc.ChannelCredentials | None = None  # TLS for the readiness probe (None: plaintext)

    def ready(self) -> bool:
        return grpc_serving(self.address, credentials=self.credentials)

    def details(self) -> dict[str, object]:
        """What the launcher's state file records beside the command line."""
        return {"metrics_port": self.metrics_port}


def grpc_serving(address: str, timeout: float = 1.0, credentials: grpc.ChannelCredentials | None = None) -> bool:
    channel = (grpc.insecure_channel(address) if credentials is None
               else grpc.secure_channel(address, credentials))
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout)
        except grpc.RpcError:
            return False
        return reply.status == health_pb2.HealthCheckResponse.SERVING


def start_service(name: str, package: ModuleType, args: list[str], log_dir: Path, port: int = 0,
                  timeout: float = 180.0, checkout: Path | None = None, host: str = LOOPBACK,
                  credentials: grpc.ChannelCredentials | None = None) -> ServiceProcess:
    """``python -m <package>`` on a free (or the given) port, waited on until health says SERVING.

    The service is passed as its imported package, so the dependency shows in the imports.
    ``checkout``: run the service from another checkout of this repository (a before/after bench).
    ``host``: the address it binds (gRPC and /metrics); its ``address`` is where this machine reaches it.
    ``credentials``: TLS for the readiness probe, when the service speaks TLS.
    """
    port = port or free_port()
    metrics_port = free_port()
    argv = [sys.executable, "-m", package.__name__, "--port", str(port), "--metrics-port", str(metrics_port),
            *(["--host", host] if host != LOOPBACK else []), *args]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **({"PYTHONPATH": str(checkout)} if checkout else {}))
    process = ManagedProcess(name, argv, log_dir / f"{name}.log", env=env, cwd=checkout)
    address = f"{connect_host(host)}:{port}"
    process.wait_ready(lambda: grpc_serving(address, credentials=credentials), timeout)
    log.info("%s SERVING on %s (metrics :%d)", name, address, metrics_port)
    return ServiceProcess(name, address, metrics_port, process, argv, credentials)


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
        self.supervisor: Supervisor | None = None
        self.metrics_port: int | None = None
        self.security: LocalSecurity | None = None
        self._probe_credentials: grpc.ChannelCredentials | None = None
        self._metrics_server = None
        self._state_lock = threading.Lock()
        self._stopping = False

    @property
    def model_path(self) -> Path:
        return model_path(self.config.model_repository, self.config.model_name)

    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- starting ------------------------------------------------------------------------------

    def _service(self, name: str, package: ModuleType, args: list[str], port: int = 0,
                 host: str = LOOPBACK) -> ServiceProcess:
        return start_service(name, package, [*args, *self._tls_args(name)], self.config.work_dir / "logs", port,
                             self.config.startup_timeout_s, host=host, credentials=self._probe_credentials)

    def _tls_args(self, name: str) -> list[str]:
        """A service's identity and who may call it: the gateway takes tokens, the rest only the gateway."""
        if self.security is None:
            return []
        me = self.security.identity(name)
        args = ["--tls-cert", str(me.cert), "--tls-key", str(me.key), "--tls-ca", str(me.ca)]
        if name == "gateway":
            return [*args, "--tokens-file", str(self.security.tokens_file)]
        return [*args, "--tls-client-auth", "true", "--allowed-peers", "gateway"]

    def _prepare_security(self) -> None:
        cfg = self.config
        public = () if cfg.gateway_host in (LOOPBACK, "0.0.0.0", "") else (cfg.gateway_host,)
        self.security = prepare(cfg.work_dir, cfg.shards, public)
        probe = self.security.identity("launcher")
        self._probe_credentials = channel_credentials(str(probe.ca), str(probe.cert), str(probe.key))

    def start(self) -> None:
        cfg = self.config
        cfg.work_dir.mkdir(parents=True, exist_ok=True)
        try:
            if cfg.tls:
                self._prepare_security()
            tls = self.security.identity if self.security is not None else None
            self.redis = RedisServer(cfg.work_dir / "redis", shards=cfg.shards, tls=tls("redis") if tls else None)
            log.info("redis-server on %s (data in %s)", self.redis.url, cfg.work_dir / "redis")
            encoder_args = ["--model-name", cfg.model_name, "--model-repository", str(cfg.model_repository)]
            if cfg.use_triton:
                self.triton = TritonServer(cfg.model_repository, cfg.work_dir / "triton", cfg.model_name,
                                           timeout=cfg.startup_timeout_s, tls=tls("triton") if tls else None)
                log.info("tritonserver gRPC on %s (metrics :%d)", self.triton.url, self.triton.metrics_port)
                encoder_args += ["--triton-url", self.triton.url, *(["--triton-tls", "true"] if tls else [])]
            self.encoder = self._service("encoder", encoder_service, encoder_args)
            for shard in range(cfg.shards):
                self.shards.append(self._service(f"shard-{shard}", index_service, self._shard_args(shard)))
            self.gateway = self._service("gateway", gateway, [
                "--encoder", self.encoder.address, "--shards", ",".join(s.address for s in self.shards),
                "--max-k", str(cfg.max_k), "--thumbnail-size", str(cfg.thumbnail_size)],
                port=cfg.gateway_port, host=cfg.gateway_host)
            if cfg.supervise:
                self._supervise()
            self._write_state()
        except BaseException:
            self.stop()
            raise

    def _supervise(self) -> None:
        registry = CollectorRegistry()
        self.supervisor = Supervisor(self.children(), registry, self.config.backoff, self.config.startup_timeout_s,
                                     on_change=self._write_state)
        self._metrics_server, _ = start_http_server(self.config.metrics_port, addr="127.0.0.1", registry=registry)
        self.metrics_port = int(self._metrics_server.server_port)
        log.info("launcher metrics on http://127.0.0.1:%d/metrics", self.metrics_port)
        self.supervisor.start()

    def _shard_args(self, shard: int) -> list[str]:
        assert self.redis is not None
        user, password_file = self.redis.shard_credentials(shard)  # a file: no password in argv or cluster.json
        return ["--shard", str(shard), "--redis-url", self.redis.url, "--redis-username", user,
                "--redis-password-file", str(password_file), "--bits", str(self.facts.bits),
                "--model-version", self.facts.version]

    def restart_shard(self, shard: int, kill: bool = True) -> None:
        """Crash (SIGKILL) or stop a shard, then start it again on the same port (tests; not when supervised)."""
        old = self.shards[shard]
        if kill:
            old.process.kill()
        else:
            old.process.stop()
        port = int(old.address.rsplit(":", 1)[1])
        self.shards[shard] = self._service(old.name, index_service, self._shard_args(shard), port=port)

    # -- clients ---------------------------------------------------------------------------------

    def gateway_channel(self) -> grpc.Channel:
        """A channel to the gateway as a client would open it: TLS verified by the cluster's CA when on."""
        assert self.gateway is not None
        if self.security is None:
            return grpc.insecure_channel(self.gateway.address)
        return grpc.secure_channel(self.gateway.address, channel_credentials(str(self.security.ca)))

    def call_metadata(self, role: str = "admin") -> list[tuple[str, str]]:
        """The metadata that authenticates a call with the local token of ``role`` (none without TLS)."""
        if self.security is None:
            return []
        token = self.security.token_files[role].read_text().strip()
        return [("authorization", f"Bearer {token}")]

    # -- reporting and stopping ----------------------------------------------------------------

    def endpoints(self) -> dict[str, object]:
        out: dict[str, object] = {}
        if self.gateway:
            out["gateway"] = self.gateway.address
            out["gateway_metrics"] = f"http://{connect_host(self.config.gateway_host)}:{self.gateway.metrics_port}/metrics"
            if self.config.gateway_host != LOOPBACK:
                out["gateway_bind"] = f"{self.config.gateway_host}:{self.gateway.address.rsplit(':', 1)[1]}"
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
        out["tls"] = self.security is not None
        if self.metrics_port is not None:
            out["launcher_metrics"] = f"http://127.0.0.1:{self.metrics_port}/metrics"
        return out

    def children(self) -> list[RedisServer | TritonServer | ServiceProcess]:
        """Every child in start order: redis-server, tritonserver, encoder, shards, gateway."""
        return [c for c in (self.redis, self.triton, self.encoder, *self.shards, self.gateway) if c is not None]

    def child_pids(self) -> dict[str, int]:
        return {child.name: child.process.pid for child in self.children()}

    def services_state(self) -> dict[str, dict[str, object]]:
        """Per child: pid, address, how to start it by hand (argv, env, cwd, command), restarts, last exit, state."""
        out = {}
        for child in self.children():
            process = child.process
            if self.supervisor is not None:
                status = self.supervisor.status[child.name].as_dict()
            else:
                status = {"state": "running" if process.alive() else "exited", "restarts": 0, "last_exit": None}
            out[child.name] = {
                "pid": process.pid, "address": child.address, **child.details(),
                "argv": process.argv, "env": process.extra_env, "cwd": str(process.cwd),
                "command": process.command(), "log": str(process.log_path),
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(process.started_at)),
                **status,
            }
        return out

    def _write_state(self) -> None:
        """Rewrite the state file at once (a reader never sees half of it); never after :meth:`stop` began."""
        with self._state_lock:
            if self._stopping:
                return
            state = {"pid": os.getpid(), "supervised": self.supervisor is not None,
                     "metrics_port": self.metrics_port, "log": str(self.config.work_dir / "logs" / "launcher.log"),
                     "updated_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "endpoints": self.endpoints(),
                     "security": self.security.record() if self.security else None,
                     "children": self.child_pids(), "services": self.services_state()}
            path = self.config.work_dir / STATE_FILE
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(json.dumps(state, indent=2))
            os.replace(tmp, path)

    def stop(self) -> None:
        """Stop supervising first (no restart from here on), then every child in reverse start order."""
        with self._state_lock:
            self._stopping = True
        if self.supervisor is not None:
            self.supervisor.stop()
        for child in reversed(self.children()):
            log.info("stopping %s (pid %d)", child.name, child.process.pid)
            child.process.stop()
        if self._metrics_server is not None:
            self._metrics_server.shutdown()
            self._metrics_server.server_close()
        self.gateway, self.shards, self.encoder, self.triton, self.redis = None, [], None, None, None
        self.supervisor, self._metrics_server, self.metrics_port = None, None, None
        (self.config.work_dir / STATE_FILE).unlink(missing_ok=True)
        self._stopping = False
