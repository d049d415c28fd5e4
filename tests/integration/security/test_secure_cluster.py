"""The secure cluster (`orbithash up --tls`) on real servers: TLS on the public port, tokens with
roles, mutual TLS on the internal ports, per-client limits, and an audit line for every write.

One cluster for the module (embedded encoder, one shard): Redis, shard, encoder, gateway, all on
loopback with the launcher's own CA. A second gateway with tight limits runs beside it against the
same encoder and shard.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from support import REPO

import gateway as gateway_package
from orbithash.data import Split
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_client import Item, OrbitHashClient, PermissionDenied, Unauthenticated, Unavailable
from orbithash_local.cluster import Cluster, ClusterConfig, ServiceProcess, start_service
from orbithash_local.pki import CertificateAuthority
from orbithash_local.security import add_token
from orbithash_serving.access import Role


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory, trained_repo: Path) -> Iterator[Cluster]:
    config = ClusterConfig(model_repository=trained_repo, work_dir=tmp_path_factory.mktemp("secure"), shards=1,
                           use_triton=False, tls=True)
    with Cluster(config) as running:
        yield running


def token(cluster: Cluster, role: str) -> str:
    assert cluster.security is not None
    return cluster.security.token_files[role].read_text().strip()


def client(cluster: Cluster, role: str | None, **options) -> OrbitHashClient:
    assert cluster.gateway is not None and cluster.security is not None
    return OrbitHashClient(cluster.gateway.address, timeout=30, retries=0, ca_file=cluster.security.ca,
                           token=None if role is None else token(cluster, role), **options)


def test_a_plaintext_client_cannot_talk_to_the_tls_gateway(secure: Cluster) -> None:
    assert secure.gateway is not None
    with grpc.insecure_channel(secure.gateway.address) as channel, pytest.raises(grpc.RpcError) as refused:
        rpc.GatewayStub(channel).Info(pb.InfoRequest(), timeout=5,
                                      metadata=[("authorization", f"Bearer {token(secure, 'admin')}")])
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_cluster_ca_is_refused(secure: Cluster, tmp_path: Path) -> None:
    other = CertificateAuthority(tmp_path / "other-ca")
    assert secure.gateway is not None
    with OrbitHashClient(secure.gateway.address, timeout=5, retries=0, ca_file=other.cert_path,
                         token=token(secure, "reader")) as stranger, pytest.raises(Unavailable):
        stranger.info()


def test_roles_reader_writer_admin(secure: Cluster, ucm_subset: Split) -> None:
    image = ucm_subset.database[0].data
    with client(secure, "reader") as reader, client(secure, "writer") as writer, client(secure, "admin") as admin:
        assert all(s.healthy for s in reader.info().shards)
        with pytest.raises(PermissionDenied, match="role reader; Ingest needs writer"):
            reader.ingest([Item("sec-1", image)])
        stored = writer.ingest([Item("sec-1", image), Item("sec-2", ucm_subset.database[30].data)])
        assert stored.ingested == 2
        assert {h.id for h in reader.search(image=image, k=5)} >= {"sec-1"}
        with pytest.raises(PermissionDenied, match="role writer; Delete needs admin"):
            writer.delete(["sec-1"])
        with pytest.raises(PermissionDenied, match="role reader; Delete needs admin"):
            reader.delete(["sec-1"])
        assert reader.get(["sec-1"]).items[0].id == "sec-1"  # nothing was deleted
        assert admin.delete(["sec-1", "sec-2"]).deleted == 2


def test_no_unknown_or_expired_token_is_unauthenticated(secure: Cluster) -> None:
    assert secure.security is not None
    with client(secure, None) as anonymous, pytest.raises(Unauthenticated, match="needs a bearer token"):
        anonymous.info()
    with client(secure, None, metadata=[("authorization", "Bearer ohk_made-up")]) as unknown, \
            pytest.raises(Unauthenticated, match="not valid here") as refused:
        unknown.info()
    assert "ohk_made-up" not in str(refused.value)
    expired = add_token(secure.security.tokens_file, "expired-station", Role.ADMIN,
                        dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1))
    time.sleep(1.1)  # the gateway looks at the file at most once a second
    with client(secure, None, metadata=[("authorization", f"Bearer {expired}")]) as late, \
            pytest.raises(Unauthenticated, match="'expired-station' expired at"):
        late.info()


def test_a_second_authorization_value_beside_a_valid_token_is_refused(secure: Cluster) -> None:
    with client(secure, "admin", metadata=[("authorization", "Bearer ohk_forged")]) as doubled, \
            pytest.raises(Unauthenticated, match="exactly one 'authorization' metadata, not 2"):
        doubled.delete(["sec-nothing"])


def test_a_new_token_works_without_a_restart(secure: Cluster) -> None:
    assert secure.security is not None and secure.gateway is not None
    fresh = add_token(secure.security.tokens_file, "station-b", Role.READER)
    time.sleep(1.1)
    with OrbitHashClient(secure.gateway.address, timeout=10, retries=0, ca_file=secure.security.ca,
                         token=fresh) as station:
        assert all(s.healthy for s in station.info().shards)


def internal_stub(cluster: Cluster, credentials: grpc.ChannelCredentials | None) -> tuple[grpc.Channel, object]:
    shard = cluster.shards[0].address
    channel = grpc.insecure_channel(shard) if credentials is None else grpc.secure_channel(shard, credentials)
    return channel, rpc.IndexShardStub(channel)


def test_internal_ports_admit_only_the_gateway_certificate(secure: Cluster, tmp_path: Path) -> None:
    assert secure.security is not None
    ca = secure.security.ca.read_bytes()

    def stats(credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
        channel, stub = internal_stub(secure, credentials)
        with channel:
            try:
                stub.Stats(pb.StatsRequest(), timeout=5)
            except grpc.RpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    def as_member(name: str) -> grpc.ChannelCredentials:
        member = secure.security.identity(name)
        return grpc.ssl_channel_credentials(ca, member.key.read_bytes(), member.cert.read_bytes())

    stranger_ca = CertificateAuthority(tmp_path / "stranger")
    stranger = stranger_ca.issue("gateway", tmp_path / "stranger", ("localhost",), ("127.0.0.1",))
    assert stats(None) == grpc.StatusCode.UNAVAILABLE  # plaintext
    assert stats(grpc.ssl_channel_credentials(ca)) == grpc.StatusCode.UNAVAILABLE  # TLS, no client certificate
    assert stats(grpc.ssl_channel_credentials(ca, stranger.key.read_bytes(), stranger.cert.read_bytes())) \
        == grpc.StatusCode.UNAVAILABLE  # a certificate named "gateway", but not of this cluster's CA
    assert stats(as_member("client")) == grpc.StatusCode.PERMISSION_DENIED  # the cluster's, but not the gateway
    assert stats(as_member("gateway")) == grpc.StatusCode.OK


@pytest.fixture(scope="module")
def tight_gateway(secure: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """A second gateway in front of the same encoder and shard, with limits a test can trip."""
    assert secure.security is not None and secure.encoder is not None
    me = secure.security.identity("gateway")
    launcher = secure.security.identity("launcher")
    service = start_service("gateway-tight", gateway_package, [
        "--encoder", secure.encoder.address, "--shards", secure.shards[0].address,
        "--tls-cert", str(me.cert), "--tls-key", str(me.key), "--tls-ca", str(me.ca),
        "--tokens-file", str(secure.security.tokens_file),
        "--rate-limit-rps", "4", "--rate-limit-burst", "3", "--max-streams-per-client", "1",
        "--message-limits-mb", "Get=0.01"],
        tmp_path_factory.mktemp("tight"), timeout=120,
        credentials=grpc.ssl_channel_credentials(launcher.ca.read_bytes(), launcher.key.read_bytes(),
                                                 launcher.cert.read_bytes()))
    yield service
    service.process.stop()


def tight_stub(secure: Cluster, gateway: ServiceProcess) -> tuple[grpc.Channel, rpc.GatewayStub]:
    assert secure.security is not None
    channel = grpc.secure_channel(gateway.address, grpc.ssl_channel_credentials(secure.security.ca.read_bytes()))
    return channel, rpc.GatewayStub(channel)


def test_the_rate_limit_trips_per_token_and_recovers(secure: Cluster, tight_gateway: ServiceProcess) -> None:
    channel, stub = tight_stub(secure, tight_gateway)
    reader = [("authorization", f"Bearer {token(secure, 'reader')}")]
    writer = [("authorization", f"Bearer {token(secure, 'writer')}")]
    with channel:
        codes = []
        for _ in range(6):
            try:
                stub.Info(pb.InfoRequest(), timeout=10, metadata=reader)
                codes.append(grpc.StatusCode.OK)
            except grpc.RpcError as exc:
                codes.append(exc.code())
                if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                    assert "'local-reader': 4 requests/s" in exc.details() and "retry in" in exc.details()
        assert codes[:3] == [grpc.StatusCode.OK] * 3
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in codes[3:]
        stub.Info(pb.InfoRequest(), timeout=10, metadata=writer)  # another token has its own budget
        time.sleep(1.0)  # four requests' worth back
        stub.Info(pb.InfoRequest(), timeout=10, metadata=reader)


def test_one_stream_per_client_and_the_message_size_limit(secure: Cluster, tight_gateway: ServiceProcess,
                                                          ucm_subset: Split) -> None:
    channel, stub = tight_stub(secure, tight_gateway)
    writer = [("authorization", f"Bearer {token(secure, 'writer')}")]
    release = threading.Event()

    def slow_stream() -> Iterator[pb.IngestItem]:
        yield pb.IngestItem(id="tight-1", image=ucm_subset.database[1].data)
        release.wait(20)

    time.sleep(1.0)  # a full rate bucket
    with channel:
        first = stub.Ingest.future(slow_stream(), timeout=30, metadata=writer)
        time.sleep(0.5)
        with pytest.raises(grpc.RpcError) as second:
            stub.Ingest(iter([pb.IngestItem(id="tight-2", image=ucm_subset.database[2].data)]), timeout=10,
                        metadata=writer)
        assert second.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "already has 1 streams open" in second.value.details()
        release.set()
        assert first.result().ingested == 1
        with pytest.raises(grpc.RpcError) as big:
            stub.Get(pb.GetItemsRequest(ids=[f"x{i:06d}" for i in range(2000)]), timeout=10, metadata=writer)
        assert big.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "Get request message is 0.0 MiB" in big.value.details() or "at most 0.01 MiB" in big.value.details()
        admin = [("authorization", f"Bearer {token(secure, 'admin')}")]
        assert stub.Delete(pb.DeleteRequest(ids=["tight-1"]), timeout=10, metadata=admin).deleted == 1


def test_every_write_and_delete_has_an_audit_line_and_no_log_holds_a_token(secure: Cluster, ucm_subset: Split) -> None:
    with client(secure, "writer") as writer, client(secure, "admin") as admin:
        writer.ingest([Item("audit-1", ucm_subset.database[3].data), Item("audit-2", ucm_subset.database[4].data)])
        admin.delete(["audit-1", "audit-2", "audit-never-stored"])
    time.sleep(0.3)
    logs = secure.config.work_dir / "logs"
    lines = [json.loads(line.split(" orbithash.audit ", 1)[1]) for line in
             (logs / "gateway.log").read_text().splitlines() if " orbithash.audit " in line]
    assert {"audit": "ingest", "who": "local-writer", "role": "writer", "outcome": "OK", "received": 2,
            "stored": 2} .items() <= next(x for x in lines if x["audit"] == "ingest" and x["who"] == "local-writer"
                                           and x["received"] == 2).items()
    delete = [x for x in lines if x["audit"] == "delete" and x.get("requested") == 3][-1]
    assert (delete["who"], delete["deleted"], delete["missing"], delete["outcome"]) == ("local-admin", 2, 1, "OK")
    assert secure.security is not None
    secrets = [token(secure, role) for role in ("reader", "writer", "admin")]
    for path in logs.glob("*.log"):
        text = path.read_text(errors="replace")
        assert not any(s in text for s in secrets), f"a token is in {path}"
    state = (secure.config.work_dir / "cluster.json").read_text()
    assert not any(s in state for s in secrets)


def test_the_fuzzer_over_tls_finds_every_credential_refused_and_nothing_else(secure: Cluster) -> None:
    """bench/fuzz.py as a user points it at a secured cluster: hostile requests with the admin token
    and the gateway's certificate, then probes with missing, malformed, doubled and too-low tokens
    and with another member's certificate on the internal ports."""
    assert secure.security is not None and secure.gateway is not None and secure.encoder is not None
    sec = secure.security
    me, stranger = sec.identity("gateway"), sec.identity("client")
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fuzz.py"), "--target", secure.gateway.address,
         "--shard", secure.shards[0].address, "--encoder", secure.encoder.address,
         "--tls-ca", str(sec.ca), "--tls-cert", str(me.cert), "--tls-key", str(me.key),
         "--token-file", str(sec.token_files["admin"]), "--reader-token-file", str(sec.token_files["reader"]),
         "--writer-token-file", str(sec.token_files["writer"]), "--stranger-cert", str(stranger.cert),
         "--stranger-key", str(stranger.key), "--calls", "4", "--raw", "1", "--probes", "8", "--seed", "5"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(lines[-1])
    assert result["violations"] == {}, result["examples"]
    assert result["tls"] is True
    gateway = {m: c for m, c in result["probes"].items() if m.startswith("Gateway.")}
    internal = {m: c for m, c in result["probes"].items() if not m.startswith("Gateway.")}
    assert set(gateway) == {f"Gateway.{m.name}" for m in pb.DESCRIPTOR.services_by_name["Gateway"].methods}
    assert len(internal) == len(pb.DESCRIPTOR.services_by_name["IndexShard"].methods) + len(
        pb.DESCRIPTOR.services_by_name["Encoder"].methods)
    assert all(sum(c.values()) == 8 for c in result["probes"].values())
    assert {s for c in gateway.values() for s in c} == {"UNAUTHENTICATED", "PERMISSION_DENIED"}
    assert {s for c in internal.values() for s in c} == {"PERMISSION_DENIED"}
    assert sum(c.get("OK", 0) for c in result["by_method"].values()) > len(result["by_method"])  # got through
    assert done.returncode == 0
