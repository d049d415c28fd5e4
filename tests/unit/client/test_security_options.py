"""The client's TLS and token options: where a token may go, and what is sent with each call."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest

from orbithash_client import OrbitHashClient
from orbithash_local.pki import CertificateAuthority


def test_a_token_is_never_sent_in_plaintext_beyond_loopback(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"would cross the network in plaintext to 10\.0\.0\.5:50051"):
        OrbitHashClient("10.0.0.5:50051", token="ohk_x")
    with OrbitHashClient("127.0.0.1:1", token="ohk_x") as local:
        assert ("authorization", "Bearer ohk_x") in local._metadata
    ca = CertificateAuthority(tmp_path / "ca")
    with OrbitHashClient("10.0.0.5:50051", token="ohk_x", ca_file=ca.cert_path) as remote:
        assert ("authorization", "Bearer ohk_x") in remote._metadata


def test_client_certificate_needs_its_key_and_files_must_exist(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cert_file and key_file go together"):
        OrbitHashClient("127.0.0.1:1", cert_file=tmp_path / "c.pem")
    with pytest.raises(FileNotFoundError):
        OrbitHashClient("127.0.0.1:1", ca_file=tmp_path / "missing.pem")


def test_a_tls_file_that_holds_no_pem_is_refused_by_name(tmp_path: Path) -> None:
    """gRPC would only say 'Failed to create security handshaker' on the first call (and log to stderr)."""
    token = tmp_path / "reader.token"
    token.write_text("ohk_x\n")  # the mix-up a newcomer makes: the token file given as the CA
    with pytest.raises(ValueError, match=r"ca_file .*reader\.token holds no PEM certificate"):
        OrbitHashClient("127.0.0.1:1", ca_file=token)
    ca = CertificateAuthority(tmp_path / "ca")
    with pytest.raises(ValueError, match=r"key_file .*reader\.token holds no PEM"):
        OrbitHashClient("127.0.0.1:1", ca_file=ca.cert_path, cert_file=ca.cert_path, key_file=token)


def _status_seen_with_default_roots(target: str, roots: Path) -> str:
    """The status a ``tls=True`` client (no ca_file) gets from ``target`` in a fresh interpreter whose
    default roots are ``roots``: gRPC reads GRPC_DEFAULT_SSL_ROOTS_FILE_PATH in place of the system's
    store, once per process."""
    code = ("import sys, grpc; from orbithash_client import OrbitHashClient\n"
            "with OrbitHashClient(sys.argv[1], tls=True, token='ohk_x') as client:\n"
            "    try:\n"
            "        client._channel.unary_unary('/probe.Probe/Call')(b'', timeout=20)\n"
            "    except grpc.RpcError as exc:\n"
            "        print(exc.code().name)\n")
    env = {**os.environ, "GRPC_DEFAULT_SSL_ROOTS_FILE_PATH": str(roots)}
    done = subprocess.run([sys.executable, "-c", code, target], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout.strip()


def test_tls_without_a_ca_file_uses_system_roots(tmp_path: Path) -> None:
    """A server whose CA is among the default roots is reached over TLS (a server without handlers
    answers UNIMPLEMENTED); one whose CA is not is refused: the client neither sends plaintext nor
    skips verification."""
    ca, stranger = CertificateAuthority(tmp_path / "ca"), CertificateAuthority(tmp_path / "stranger")
    served = ca.issue("gateway", tmp_path / "served", ("localhost",))
    server = grpc.server(ThreadPoolExecutor(2))
    port = server.add_secure_port("localhost:0", grpc.ssl_server_credentials(
        [(served.key.read_bytes(), served.cert.read_bytes())]))
    server.start()
    try:
        assert _status_seen_with_default_roots(f"localhost:{port}", ca.cert_path) == "UNIMPLEMENTED"
        assert _status_seen_with_default_roots(f"localhost:{port}", stranger.cert_path) == "UNAVAILABLE"
    finally:
        server.stop(0)


@pytest.mark.parametrize("target", ["127.0.0.1.nip.io:50051", "127.attacker.example:50051", "localhost.evil:1",
                                    "dns:///127.x.example:1", "[::ffff:10.0.0.5]:1", "10.0.0.5",
                                    "ipv4:127.0.0.1:1,10.0.0.5:1"])
def test_a_name_that_only_looks_like_loopback_gets_no_plaintext_token(target: str) -> None:
    with pytest.raises(ValueError, match="plaintext"):
        OrbitHashClient(target, token="ohk_x")


@pytest.mark.parametrize("target", ["127.0.0.1:1", "127.8.9.10:1", "localhost:1", "[::1]:1", "::1",
                                    "ipv4:127.0.0.1:1", "ipv6:[::1]:1", "dns:///localhost:1", "127.0.0.1"])
def test_loopback_addresses_may_carry_a_plaintext_token(target: str) -> None:
    with OrbitHashClient(target, token="ohk_x") as client:
        assert ("authorization", "Bearer ohk_x") in client._metadata
