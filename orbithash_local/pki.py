"""A local certificate authority and one certificate per cluster member, made with ``cryptography``.

``orbithash up --tls`` (and the tests) call :func:`cluster_pki`: a CA and, for every member (gateway,
encoder, shard-N, triton, redis, launcher, and a ``client`` for the operator's tools), an EC P-256
key and a certificate whose common name and first DNS name are the member's name. That name is the
identity the internal services check (``allowed_peers``); the certificates also name ``localhost``
and ``127.0.0.1`` so that every loopback address verifies. Each certificate may serve and call
(server and client auth), which is what the internal hops need for mutual TLS.

Keys are written with mode 0600; an existing, still valid set is reused, so a restarted cluster
keeps its identities and clients keep trusting the same CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from orbithash_serving.private_files import write_private

CA_NAME = "OrbitHash local CA"
LOOPBACK_NAMES = ("localhost",)
LOOPBACK_IPS = ("127.0.0.1", "::1")
RENEW_BEFORE = dt.timedelta(days=7)  # a certificate closer than this to expiry is made anew


@dataclass(frozen=True)
class Identity:
    """Where one member's certificate and key lie, and the CA that signed them."""

    name: str
    cert: Path
    key: Path
    ca: Path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    write_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))


def _write_cert(path: Path, cert: x509.Certificate) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    os.replace(tmp, path)


def _still_valid(cert_path: Path, key_path: Path) -> bool:
    if not (cert_path.exists() and key_path.exists()):
        return False
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError:
        return False
    return cert.not_valid_after_utc - _now() > RENEW_BEFORE


class CertificateAuthority:
    """A self-signed CA in ``directory`` (``ca.pem``, ``ca.key``) that issues member certificates."""

    def __init__(self, directory: Path, days: int = 365) -> None:
        self.directory = directory
        self.cert_path = directory / "ca.pem"
        self.key_path = directory / "ca.key"
        if not _still_valid(self.cert_path, self.key_path):
            self._create(days)
        self.cert = x509.load_pem_x509_certificate(self.cert_path.read_bytes())
        loaded = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        assert isinstance(loaded, ec.EllipticCurvePrivateKey)
        self.key = loaded

    def _create(self, days: int) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, CA_NAME)])
        now = _now()
        cert = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256())
        )
        _write_key(self.key_path, key)
        _write_cert(self.cert_path, cert)

    def issue(self, name: str, directory: Path, dns_names: tuple[str, ...] = (), ip_addresses: tuple[str, ...] = (),
              days: int = 90, force: bool = False) -> Identity:
        """``<name>.pem`` and ``<name>.key`` in ``directory``; reused while valid unless ``force``."""
        cert_path, key_path = directory / f"{name}.pem", directory / f"{name}.key"
        if force or not _still_valid(cert_path, key_path) or not self._signed_by_me(cert_path):
            key = ec.generate_private_key(ec.SECP256R1())
            alt_names: list[x509.GeneralName] = [x509.DNSName(n) for n in dict.fromkeys((name, *dns_names))]
            alt_names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ip_addresses)]
            now = _now()
            cert = (
                x509.CertificateBuilder()
                .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
                .issuer_name(self.cert.subject).public_key(key.public_key())
                .serial_number(x509.random_serial_number())
                .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                               critical=False)
                .sign(self.key, hashes.SHA256())
            )
            _write_key(key_path, key)
            _write_cert(cert_path, cert)
        return Identity(name, cert_path, key_path, self.cert_path)

    def _signed_by_me(self, cert_path: Path) -> bool:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        try:
            cert.verify_directly_issued_by(self.cert)
        except (ValueError, TypeError, Exception):  # InvalidSignature is not a ValueError
            return False
        return True


def cluster_pki(directory: Path, members: list[str], hosts: tuple[str, ...] = ()) -> dict[str, Identity]:
    """The CA in ``directory`` and an identity per member; ``hosts`` adds names or addresses (the
    gateway's public ones from ``orbithash up --host``) to every certificate. Paths are absolute:
    redis-server changes its directory before it reads them."""
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    ca = CertificateAuthority(directory)
    dns = tuple(h for h in hosts if not _is_ip(h))
    ips = tuple(h for h in hosts if _is_ip(h))
    return {m: ca.issue(m, directory, (*LOOPBACK_NAMES, *dns), (*LOOPBACK_IPS, *ips)) for m in members}


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
