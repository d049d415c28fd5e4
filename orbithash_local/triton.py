"""A real ``tritonserver`` (from the nvidia-pytriton wheel) serving a model repository on CPU.

The wheel ships the server and its Python backend but no ONNX Runtime backend, so the CPU
configuration runs ``model.onnx`` through the Python backend's ``model.py``. Three things make it
work outside NVIDIA's container (see docs/triton.md): a backend directory with the stub for the
running Python, ``LD_LIBRARY_PATH`` pointing at this interpreter's libpython, and this virtual
environment's ``bin`` first on ``PATH`` so the stub imports our numpy and onnxruntime.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

from orbithash import Unavailable
from orbithash_local.processes import ManagedProcess, free_port


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
    """

    def __init__(self, model_repository: Path, work_dir: Path, model_name: str = "orbithash",
                 timeout: float = 120.0, host: str = "127.0.0.1") -> None:
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.model_name = model_name
        self.host = host
        self.work_dir = work_dir
        self.model_repository = model_repository
        backends = prepare_backends(work_dir)
        argv = [
            str(pytriton_root() / "bin" / "tritonserver"),
            f"--model-repository={model_repository.resolve()}",
            f"--backend-directory={backends}",
            f"--grpc-address={host}", f"--grpc-port={self.grpc_port}",
            f"--http-address={host}", f"--http-port={self.http_port}",
            f"--metrics-address={host}", f"--metrics-port={self.metrics_port}", "--allow-gpu-metrics=false",
            "--model-control-mode=none",
            "--log-verbose=0", "--exit-on-error=true",
        ]
        self._argv = argv
        self._timeout = timeout
        self.process = self._launch()

    def _launch(self) -> ManagedProcess:
        process = ManagedProcess("tritonserver", self._argv, self.work_dir / "tritonserver.log", env=triton_env())
        process.wait_ready(self._model_ready, self._timeout)
        return process

    def restart(self) -> None:
        """Start again on the same ports (after :meth:`stop` or a crash)."""
        if self.process.alive():
            self.process.stop()
        self.process = self._launch()

    @property
    def url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    def _model_ready(self) -> bool:
        import tritonclient.grpc as tgrpc

        client = tgrpc.InferenceServerClient(self.url)
        try:
            if client.is_model_ready(self.model_name, client_timeout=1.0):
                return True
            for model in client.get_model_repository_index(as_json=True, client_timeout=1.0).get("models", []):
                if model.get("name") == self.model_name and model.get("state") == "UNAVAILABLE":
                    raise Unavailable(f"Triton could not load {self.model_name!r}: {model.get('reason', '?')}")
            return False
        finally:
            client.close()

    def stop(self) -> None:
        self.process.stop()
