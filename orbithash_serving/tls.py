"""TLS for every gRPC hop: server credentials that reload their files, channel credentials, and the
names in a caller's certificate.

One rule for all services: with ``tls_cert`` and ``tls_key`` a server listens with TLS only; with
``tls_client_auth`` it also requires a client certificate signed by ``tls_ca`` (mutual TLS, the
internal hops); a client verifies the server with ``tls_ca`` and presents ``tls_cert`` when it has
one. Certificates are read again when their files change (checked at each new connection, at most
once a second), so a renewed certificate is served without a restart.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from orbithash_serving.settings import ServiceSettings

log = logging.getLogger("orbithash.tls")
RELOAD_CHECK_S = 1.0


def _read(path: str | None) -> bytes | None:
    return None if path is None else Path(path).read_bytes()


class ReloadingServerCertificate:
    """The server's certificate configuration, read again when a file's bytes change.

    The bytes, not the modification time, say what changed: a file caught half-written and
    finished within one timestamp tick would otherwise never be read again. A half-written file
    fails to load (gRPC keeps the old configuration) and the next connection tries again.
    """

    def __init__(self, cert: str, key: str, ca: str | None, require_client_auth: bool) -> None:
        self._cert, self._key, self._ca = cert, key, ca
        self.require_client_auth = require_client_auth
        self._lock = threading.Lock()
        self._checked = 0.0
        self._files = self._read_files()
        self.initial = self._configuration(self._files)

    def _read_files(self) -> tuple[bytes | None, bytes | None, bytes | None]:
        return _read(self._cert), _read(self._key), _read(self._ca)

    @staticmethod
    def _configuration(files: tuple[bytes | None, bytes | None, bytes | None]) -> Any:
        cert, key, ca = files
        assert key is not None and cert is not None
        return grpc.ssl_server_certificate_configuration([(key, cert)], root_certificates=ca)

    def fetch(self) -> Any:
        """gRPC's certificate-configuration fetcher: None keeps the current one."""
        now = time.monotonic()
        with self._lock:
            if now - self._checked < RELOAD_CHECK_S:
                return None
            self._checked = now
            try:
                files = self._read_files()
                if files == self._files:
                    return None
                configuration = self._configuration(files)
            except (OSError, ValueError) as exc:
                log.warning("TLS files changed but cannot be read yet (%s); keeping the current certificate", exc)
                return None
            self._files = files
            log.info("TLS certificate reloaded from %s", self._cert)
            return configuration

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self.initial, self.fetch,
                                                   require_client_authentication=self.require_client_auth)


def server_credentials(settings: ServiceSettings) -> grpc.ServerCredentials | None:
    """TLS credentials for the service's port, or None for plaintext."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    return ReloadingServerCertificate(settings.tls_cert, settings.tls_key, settings.tls_ca,
                                      settings.tls_client_auth).credentials()


def channel_credentials(ca: str | None, cert: str | None = None, key: str | None = None) -> grpc.ChannelCredentials:
    """Verify the server with ``ca`` (None: the system's roots); present ``cert`` when given."""
    return grpc.ssl_channel_credentials(root_certificates=_read(ca), private_key=_read(key),
                                        certificate_chain=_read(cert))


def client_credentials(settings: ServiceSettings) -> grpc.ChannelCredentials | None:
    """For the next hop: TLS (with this service's certificate as its identity) when the service
    has ``tls_ca``; None (plaintext) otherwise."""
    if settings.tls_ca is None:
        return None
    return channel_credentials(settings.tls_ca, settings.tls_cert, settings.tls_key)


def peer_names(context: grpc.ServicerContext) -> frozenset[str]:
    """Common name and DNS names of the caller's verified client certificate (empty without one)."""
    auth = context.auth_context() or {}
    names = [*auth.get("x509_common_name", []), *auth.get("x509_subject_alternative_name", [])]
    return frozenset(n.decode(errors="replace") for n in names)
