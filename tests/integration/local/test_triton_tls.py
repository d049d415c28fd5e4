"""The hop encoder → Triton over mutual TLS: a real tritonserver that speaks only TLS on gRPC, opens
no plaintext inference port, and serves only clients holding a certificate of the cluster CA."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as tgrpc
from pydantic import ValidationError
from tritonclient.utils import InferenceServerException

from encoder_service.__main__ import build_backend
from encoder_service.backends import OnnxRuntimeBackend, TritonBackend
from encoder_service.settings import EncoderSettings
from orbithash.data import Split
from orbithash.export.repository import model_path
from orbithash.images import pixels_batch
from orbithash_local.pki import Identity, cluster_pki
from orbithash_local.triton import TritonServer

MEMBERS = ["triton", "encoder", "client"]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    return cluster_pki(tmp_path_factory.mktemp("pki"), MEMBERS)


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Identity:
    """An identity of another CA, with the same names as the cluster's."""
    return cluster_pki(tmp_path_factory.mktemp("other_pki"), ["client"])["client"]


@pytest.fixture(scope="module")
def triton(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory,
           pki: dict[str, Identity]) -> Iterator[TritonServer]:
    server = TritonServer(trained_repo, tmp_path_factory.mktemp("triton_tls"), tls=pki["triton"])
    yield server
    server.stop()


def tls_client(url: str, ca: Path, me: Identity | None) -> tgrpc.InferenceServerClient:
    identity = {"private_key": str(me.key), "certificate_chain": str(me.cert)} if me else {}
    return tgrpc.InferenceServerClient(url, ssl=True, root_certificates=str(ca), **identity)


def refused(client: tgrpc.InferenceServerClient, model: str) -> str:
    """The status of a readiness call that must fail (the TLS handshake does not complete)."""
    try:
        with pytest.raises(InferenceServerException) as err:
            client.is_model_ready(model, client_timeout=5.0)
    finally:
        client.close()
    return str(err.value.status())


def listening_ports(pid: int) -> set[int]:
    """Ports on which the process ``pid`` has a socket in LISTEN state."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:["):-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                ports.add(int(fields[1].split(":")[1], 16))
    return ports


def test_details_say_tls_and_only_grpc_and_metrics_listen(triton: TritonServer) -> None:
    assert triton.details()["tls"] is True and triton.details()["mutual_tls"] is True
    assert triton.http_port is None
    assert listening_ports(triton.process.pid) == {triton.grpc_port, triton.metrics_port}


def test_plaintext_client_fails(triton: TritonServer) -> None:
    assert "UNAVAILABLE" in refused(tgrpc.InferenceServerClient(triton.url), triton.model_name)


def test_cluster_certificate_gets_ready_and_infers(triton: TritonServer, pki: dict[str, Identity]) -> None:
    client = tls_client(triton.url, pki["client"].ca, pki["client"])
    try:
        assert client.is_model_ready(triton.model_name, client_timeout=5.0)
        config = client.get_model_config(triton.model_name, as_json=True, client_timeout=5.0)["config"]
        size = int(config["parameters"]["orbithash.input_size"]["string_value"])
        inp = tgrpc.InferInput(config["input"][0]["name"], [1, 3, size, size], "UINT8")
        inp.set_data_from_numpy(np.zeros((1, 3, size, size), np.uint8))
        result = client.infer(triton.model_name, [inp], client_timeout=30.0)
        assert result.as_numpy(config["output"][0]["name"]).shape[0] == 1
    finally:
        client.close()


def test_client_without_certificate_is_refused(triton: TritonServer, pki: dict[str, Identity]) -> None:
    assert "UNAVAILABLE" in refused(tls_client(triton.url, pki["client"].ca, None), triton.model_name)


def test_client_trusting_another_ca_is_refused(triton: TritonServer, pki: dict[str, Identity],
                                               stranger: Identity) -> None:
    assert "UNAVAILABLE" in refused(tls_client(triton.url, stranger.ca, pki["client"]), triton.model_name)


def test_client_certificate_of_another_ca_is_refused(triton: TritonServer, pki: dict[str, Identity],
                                                     stranger: Identity) -> None:
    assert "UNAVAILABLE" in refused(tls_client(triton.url, pki["client"].ca, stranger), triton.model_name)


def encoder_argv(triton: TritonServer, me: Identity, ca: Path) -> list[str]:
    return ["--triton-url", triton.url, "--model-name", triton.model_name, "--triton-tls", "true",
            "--tls-ca", str(ca), "--tls-cert", str(me.cert), "--tls-key", str(me.key)]


def test_encoder_backend_encodes_through_tls_triton(triton: TritonServer, pki: dict[str, Identity],
                                                    trained_repo: Path, ucm_subset: Split) -> None:
    settings = EncoderSettings.from_argv(encoder_argv(triton, pki["encoder"], pki["encoder"].ca))
    assert settings.triton_tls is True
    backend = build_backend(settings)
    assert isinstance(backend, TritonBackend) and backend.ready()
    batch = pixels_batch([r.data for r in ucm_subset.queries[:2]], backend.facts)
    u, logits = backend.infer(batch)
    local_u, _ = OnnxRuntimeBackend(model_path(trained_repo, triton.model_name), 1).infer(batch)
    assert u.shape == (2, backend.facts.bits) and logits.shape[0] == 2
    np.testing.assert_allclose(u, local_u, atol=1e-4)


def test_encoder_backend_trusting_another_ca_does_not_start(triton: TritonServer, pki: dict[str, Identity],
                                                            stranger: Identity) -> None:
    from orbithash import Unavailable

    settings = EncoderSettings.from_argv(encoder_argv(triton, pki["encoder"], stranger.ca))
    with pytest.raises(Unavailable):
        build_backend(settings)


def test_triton_tls_needs_a_ca() -> None:
    with pytest.raises(ValidationError, match="triton_tls needs tls_ca"):
        EncoderSettings.from_argv(["--triton-url", "127.0.0.1:1", "--triton-tls", "true"])
    assert EncoderSettings.from_argv(["--triton-tls", "false"]).triton_tls is False
