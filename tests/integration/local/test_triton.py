"""The launcher's tritonserver: reachable on loopback only, and no client can change what it serves."""

from __future__ import annotations

from pathlib import Path

import pytest
import tritonclient.grpc as tgrpc
from tritonclient.utils import InferenceServerException

from orbithash_local.triton import TritonServer

# 127.0.0.1 as /proc/net/tcp writes it, and as /proc/net/tcp6 writes the IPv4-mapped ::ffff:127.0.0.1
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F"}


def listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel lists them) with a socket in LISTEN state on ``port``."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if int(hex_port, 16) == port and fields[3] == "0A":
                found.add(address)
    return found


@pytest.fixture(scope="module")
def triton(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory):
    server = TritonServer(trained_repo, tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


def test_every_triton_port_listens_on_loopback_only(triton: TritonServer) -> None:
    for port in (triton.grpc_port, triton.http_port, triton.metrics_port):
        found = listening_addresses(port)
        assert found and found <= LOOPBACK, f"port {port} listens on {found}"


def test_clients_cannot_unload_or_load_models(triton: TritonServer) -> None:
    client = tgrpc.InferenceServerClient(triton.url)
    try:
        # Triton's refusal when repository control is off. Any error would not do: with control on,
        # loading "intruder" fails too (no such folder), and an unreachable server also raises.
        refused = "explicit model load / unload is not allowed"
        with pytest.raises(InferenceServerException, match=refused):
            client.unload_model(triton.model_name)
        with pytest.raises(InferenceServerException, match=refused):
            client.load_model("intruder", config='{"backend": "python"}')
        assert client.is_model_ready(triton.model_name)
    finally:
        client.close()
