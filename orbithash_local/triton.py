"""A real ``tritonserver`` (from the nvidia-pytriton wheel) serving a model repository on CPU.

The wheel ships the server and its Python backend but no ONNX Runtime backend, so the CPU
configuration runs ``model.onnx`` through the Python backend's ``model.py``. Three things make it
work outside NVIDIA's container (see docs/triton.md): a backend directory with the stub for the
running Python, ``LD_LIBRARY_PATH`` pointing at this interpreter's libpython, and this virtual
environment's ``bin`` first on ``PATH`` so the stub imports our numpy and onnxruntime.

tritonserver starts one ``triton_python_backend_stub`` process (≈350 MB) per model instance, in
its process group, and a shared-memory region ``/dev/shm/<prefix><uuid>`` for each. A stub that
is busy or stuck when tritonserver dies stays behind with its region; so every instance gets a
prefix of its own (``--backend-config=python,shm-region-prefix-name=…``), stopping kills the whole
group, and before a start the previous instance's leftover stubs are killed and its regions removed.

With ``tls`` the gRPC port speaks TLS only (mutual by default: a client certificate signed by the
cluster CA is required) and the HTTP inference port is not opened, since Triton's HTTP endpoint
has no TLS and would be a plaintext way around it. The metrics port stays plaintext: it serves
only counters, for probes and Prometheus.
"""

from __future__ import annotations

import os
import secrets
import socket
import sys
import sysconfig
from pathlib import Path
from typing import TYPE_CHECKING

from orbithash import Unavailable
from orbithash_local.pki import Identity
from orbithash_local.processes import ManagedProcess, free_port

if TYPE_CHECKING:
    import tritonclient.grpc

SHM_DIR = Path("/dev/shm")


def pytriton_root() -> Path:
    try:
        import pytriton
    except ImportError as exc:
        raise Unavailable("nvidia-pytriton is not installed; it provides tritonserver") from exc
    return Path(pytriton.__file__).parent / "tritonserver"


def prepare_backends(work_dir: Path) -> Path:
    """A backend directory whose python/ holds the backend library and this Python's stub."""
    root = pytriton_root()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    sources = {
        "libtriton_python.so": root / "backends" / "python" / "libtriton_python.so",
        "triton_python_backend_utils.py": root / "backends" / "python" / "triton_python_backend_utils.py",
        "triton_python_backend_stub": root / "python_backend_stubs" / version / "triton_python_backend_stub",
    }
    backends = work_dir / "backends"
    python_dir = backends / "python"
    python_dir.mkdir(parents=True, exist_ok=True)
    for name, src in sources.items():
        if not src.exists():
            raise Unavailable(f"tritonserver wheel lacks {src}")
        link = python_dir / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(src)
    return backends


def listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def triton_env() -> dict[str, str]:
    env = dict(os.environ)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in [libdir, env.get("LD_LIBRARY_PATH", "")] if p)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    return env


class TritonServer:
    """tritonserver on free ports of ``host`` (loopback unless told otherwise), serving the repository.

    Repository control is off (``--model-control-mode=none``): every model in the repository is
    loaded at start and no client can load, unload or replace one. With control on, anyone who
    reaches the port could unload the served model or load a Python-backend model, that is run
    code as this user. gRPC, HTTP and metrics bind to ``host`` alone.

    ``tls`` is Triton's identity (its certificate, key and the CA); ``mutual`` requires clients to
    present a certificate that CA signed. The readiness probe presents ``tls`` itself as its client
    certificate: every certificate of the cluster CA is a valid client. ``http_port`` is None with TLS.
    """

    name = "tritonserver"

    def __init__(self, model_repository: Path, work_dir: Path, model_name: str = "orbithash",
                 timeout: float = 120.0, host: str = "127.0.0.1", tls: Identity | None = None,
                 mutual: bool = True) -> None:
        self.tls = tls
        self.mutual = mutual and tls is not None
        self.grpc_port, self.metrics_port = free_port(), free_port()
        self.http_port: int | None = None if tls else free_port()
        self.model_name = model_name
        self.host = host
        self.work_dir = work_dir
        self.model_repository = model_repository
        self.shm_prefix = f"orbithash_triton_{secrets.token_hex(6)}_"
        backends = prepare_backends(work_dir)
        argv = [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={model_repository.resolve()}",
            f"--backend-directory={backends.resolve()}",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--grpc-address={host}", f"--grpc-port={self.grpc_port}",
            *self._http_flags(host),
            f"--metrics-address={host}", f"--metrics-port={self.metrics_port}", "--allow-gpu-metrics=false",
            "--model-control-mode=none",
            "--log-verbose=0", "--exit-on-error=true",
            *self._tls_flags(),
        ]
        self.timeout = timeout
        self.process = ManagedProcess(self.name, argv, work_dir / "tritonserver.log", env=triton_env(),
                                      cleanup=self.remove_shm_regions)
        self.process.wait_ready(self.ready, timeout)

    def _http_flags(self, host: str) -> list[str]:
        if self.http_port is None:
            return ["--allow-http=false"]
        return [f"--http-address={host}", f"--http-port={self.http_port}"]

    def _tls_flags(self) -> list[str]:
        if self.tls is None:
            return []
        flags = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.tls.cert.resolve()}",
                 f"--grpc-server-key={self.tls.key.resolve()}", f"--grpc-root-cert={self.tls.ca.resolve()}"]
        return [*flags, "--grpc-use-ssl-mutual=true"] if self.mutual else flags

    def client(self) -> tritonclient.grpc.InferenceServerClient:
        """A tritonclient.grpc client for this server: over TLS, as ``tls``'s identity, when TLS is on."""
        import tritonclient.grpc as tgrpc

        if self.tls is None:
            return tgrpc.InferenceServerClient(self.url)
        return tgrpc.InferenceServerClient(self.url, ssl=True, root_certificates=str(self.tls.ca),
                                           private_key=str(self.tls.key), certificate_chain=str(self.tls.cert))

    def shm_regions(self) -> list[Path]:
        """This instance's Python-backend shared-memory regions (and only this instance's)."""
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*"))

    def remove_shm_regions(self) -> None:
        for region in self.shm_regions():
            region.unlink(missing_ok=True)

    def stubs(self) -> list[int]:
        """PIDs of this instance's Python-backend stubs (its process group, less tritonserver)."""
        return [pid for pid in self.process.leftovers() if pid != self.process.pid]

    def restart(self) -> None:
        """Start again on the same ports (after :meth:`stop` or a crash): leftover stubs and shm regions go first."""
        if self.process.alive():
            self.process.stop()
        self.process.start()
        self.process.wait_ready(self.ready, self.timeout)

    @property
    def address(self) -> str:
        return self.url

    def details(self) -> dict[str, object]:
        """What the launcher's state file records beside the command line."""
        return {"http_port": self.http_port, "metrics_port": self.metrics_port,
                "shm_region_prefix": self.shm_prefix, "shm_dir": str(SHM_DIR),
                "tls": self.tls is not None, "mutual_tls": self.mutual}

    @property
    def url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def ready(self) -> bool:
        """The model is ready over gRPC, and the HTTP (if open) and metrics ports (started after gRPC) listen."""
        client = self.client()
        try:
            if client.is_model_ready(self.model_name, client_timeout=1.0):
                ports = [p for p in (self.http_port, self.metrics_port) if p is not None]
                return all(listening(self.host, port) for port in ports)
            for model in client.get_model_repository_index(as_json=True, client_timeout=1.0).get("models", []):
                if model.get("name") == self.model_name and model.get("state") == "UNAVAILABLE":
                    raise Unavailable(f"Triton could not load {self.model_name!r}: {model.get('reason', '?')}")
            return False
        finally:
            client.close()

    def stop(self) -> None:
        self.process.stop()
