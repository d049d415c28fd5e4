"""The local CA of `orbithash up --tls`: identities that verify, keys kept private, reuse across
restarts, absolute paths (redis-server changes directory before it reads its certificate)."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cryptography import x509

from orbithash_local.pki import CertificateAuthority, cluster_pki


def test_members_get_named_certificates_signed_by_the_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    ids = cluster_pki(Path("runs") / "pki", ["gateway", "shard-0"], hosts=("orbithash.example", "10.0.0.7"))
    ca = x509.load_pem_x509_certificate(ids["gateway"].ca.read_bytes())
    for name, identity in ids.items():
        assert identity.cert.is_absolute() and identity.key.is_absolute() and identity.ca.is_absolute()
        cert = x509.load_pem_x509_certificate(identity.cert.read_bytes())
        cert.verify_directly_issued_by(ca)
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert names.get_values_for_type(x509.DNSName)[0] == name
        assert {"localhost", "orbithash.example"} <= set(names.get_values_for_type(x509.DNSName))
        assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} >= {"127.0.0.1", "10.0.0.7"}
        assert stat.S_IMODE(identity.key.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "runs" / "pki").stat().st_mode) == 0o700


def test_a_restart_reuses_the_ca_and_a_foreign_certificate_is_replaced(tmp_path: Path) -> None:
    first = cluster_pki(tmp_path / "pki", ["gateway"])["gateway"]
    before = first.cert.read_bytes(), first.ca.read_bytes()
    again = cluster_pki(tmp_path / "pki", ["gateway"])["gateway"]
    assert (again.cert.read_bytes(), again.ca.read_bytes()) == before
    other = CertificateAuthority(tmp_path / "other")
    other.issue("gateway", tmp_path / "pki")  # someone else's certificate in our place
    replaced = cluster_pki(tmp_path / "pki", ["gateway"])["gateway"]
    ca = x509.load_pem_x509_certificate(replaced.ca.read_bytes())
    x509.load_pem_x509_certificate(replaced.cert.read_bytes()).verify_directly_issued_by(ca)


def test_local_tokens_are_made_once_stored_hashed_and_kept_across_restarts(tmp_path: Path) -> None:
    from orbithash_local.security import prepare
    from orbithash_serving.access import TokenBook

    first = prepare(tmp_path, shards=1)
    tokens = {role: path.read_text().strip() for role, path in first.token_files.items()}
    book = TokenBook(str(first.tokens_file))
    assert {role: book.identify(t).role.label for role, t in tokens.items()} == {r: r for r in tokens}
    assert not any(t in first.tokens_file.read_text() for t in tokens.values())
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in [first.tokens_file, *first.token_files.values()])
    again = prepare(tmp_path, shards=1)
    assert {role: p.read_text().strip() for role, p in again.token_files.items()} == tokens
    assert all(t not in json.dumps(again.record()) for t in tokens.values())  # cluster.json: paths only
