"""The shared gRPC server under TLS: a renewed certificate is served without a restart, and the
plaintext health port answers probes that cannot speak TLS while the API port refuses plaintext."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from prometheus_client import CollectorRegistry

from orbithash_local.pki import CertificateAuthority, Identity
from orbithash_serving import tls
from orbithash_serving.server import GrpcServer, service_name
from orbithash_serving.settings import ServiceSettings


def health(address: str, credentials: grpc.ChannelCredentials | None) -> str:
    channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
    with channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=3)
        except grpc.RpcError as exc:
            return exc.code().name
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@pytest.fixture()
def identities(tmp_path: Path) -> tuple[CertificateAuthority, CertificateAuthority, Identity]:
    first, second = CertificateAuthority(tmp_path / "ca-1"), CertificateAuthority(tmp_path / "ca-2")
    served = first.issue("encoder", tmp_path / "served", ("localhost",), ("127.0.0.1",))
    return first, second, served


@pytest.fixture()
def server(identities, monkeypatch: pytest.MonkeyPatch) -> Iterator[GrpcServer]:
    monkeypatch.setattr(tls, "RELOAD_CHECK_S", 0.0)
    _, _, served = identities
    settings = ServiceSettings(tls_cert=str(served.cert), tls_key=str(served.key), health_port=0)
    running = GrpcServer(settings, [service_name("Encoder")], lambda _: None, CollectorRegistry())
    running.start()
    yield running
    running.stop(0)


def test_plaintext_is_refused_on_the_api_port_and_answered_on_the_health_port(server, identities) -> None:
    first, _, _ = identities
    assert server.tls and server.health_port
    assert health(server.address, None) == "UNAVAILABLE"
    assert health(server.address, grpc.ssl_channel_credentials(first.cert_path.read_bytes())) == "SERVING"
    assert health(f"127.0.0.1:{server.health_port}", None) == "SERVING"


def test_a_renewed_certificate_is_served_without_a_restart(server, identities, tmp_path: Path) -> None:
    first, second, served = identities
    trusts_first = grpc.ssl_channel_credentials(first.cert_path.read_bytes())
    trusts_second = grpc.ssl_channel_credentials(second.cert_path.read_bytes())
    assert health(server.address, trusts_second) == "UNAVAILABLE"
    renewed = second.issue("encoder", tmp_path / "renewed", ("localhost",), ("127.0.0.1",))
    os.replace(renewed.key, served.key)
    os.replace(renewed.cert, served.cert)
    stamp = time.time_ns() + 2_000_000_000  # a new modification time even on a coarse clock
    os.utime(served.cert, ns=(stamp, stamp))
    assert health(server.address, trusts_second) == "SERVING"  # new connections get the new certificate
    assert health(server.address, trusts_first) == "UNAVAILABLE"


def test_settings_refuse_half_a_tls_configuration(identities) -> None:
    _, _, served = identities
    with pytest.raises(ValueError, match="tls_cert and tls_key go together"):
        ServiceSettings(tls_cert=str(served.cert))
    with pytest.raises(ValueError, match="tls_client_auth needs"):
        ServiceSettings(tls_client_auth=True)
    with pytest.raises(ValueError, match="allowed_peers needs tls_client_auth"):
        ServiceSettings(tls_cert=str(served.cert), tls_key=str(served.key), allowed_peers="gateway")
