"""The commands' one door to the network: a client of the gateway and what its errors mean here.

Exit codes by the client's exceptions: UNAVAILABLE and DEADLINE_EXCEEDED (after the client's own
retries) → 3, the gateway is unreachable; INVALID_ARGUMENT, OUT_OF_RANGE, RESOURCE_EXHAUSTED,
UNAUTHENTICATED and PERMISSION_DENIED → 2, the request was refused as it is (nothing changed);
anything else (NOT_FOUND, FAILED_PRECONDITION, INTERNAL) → 1 with the server's message.
"""

from __future__ import annotations

from orbithash_cli import CliError, GatewayUnreachable, UsageError
from orbithash_client import (
    DeadlineExceeded,
    InvalidArgument,
    OrbitHashClient,
    OrbitHashClientError,
    PermissionDenied,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)

REFUSED = (InvalidArgument, ResourceExhausted)
DENIED = (Unauthenticated, PermissionDenied)
UNREACHABLE = (Unavailable, DeadlineExceeded)
# What a connection failure's gRPC message shows, and what to check then.
_UNREACHABLE_ADVICE = (
    ("Socket closed", " (a TLS gateway closes plaintext connections like this: give --tls-ca or $ORBITHASH_TLS_CA)"),
    ("Connection refused", " (nothing listens there: is the cluster running, and is this the gateway's port? "
                           "`orbithash up` prints it and records it in runs/cluster/cluster.json)"),
    ("CERTIFICATE_VERIFY_FAILED", " (the gateway's certificate is not signed by the CA given: give that cluster's "
                                  "CA, runs/cluster/pki/ca.pem for `orbithash up --tls`)"),
)
TIMEOUT_S = 60.0  # each call's deadline, retries included (an ingest batch has its own, --timeout)


def connect(address: str, *, token: str | None = None, tls_ca: str | None = None, tls_cert: str | None = None,
            tls_key: str | None = None, timeout: float = TIMEOUT_S, **client_options: object) -> OrbitHashClient:
    """A client of ``address``: TLS when any of the TLS files is given, the token on every call."""
    flags = {"ca_file": ("--tls-ca", tls_ca), "cert_file": ("--tls-cert", tls_cert), "key_file": ("--tls-key", tls_key)}
    try:
        return OrbitHashClient(address, timeout=timeout, token=token, tls=bool(tls_ca or tls_cert), ca_file=tls_ca,
                               cert_file=tls_cert, key_file=tls_key, **client_options)  # type: ignore[arg-type]
    except OSError as exc:
        flag = next((f for f, path in flags.values() if path is not None and str(path) == str(exc.filename)), "")
        raise UsageError(f"{flag + ': ' if flag else ''}cannot read {exc.filename}: {exc.strerror or exc}") from exc
    except ValueError as exc:
        message = str(exc).replace("ca_file= (or tls=True)", "--tls-ca PEM")
        for name, (flag, _) in flags.items():  # the library's argument names, as this command spells them
            message = message.replace(name, flag)
        raise UsageError(message) from exc


def cli_error(exc: BaseException) -> CliError:
    """The one-line error a command ends with, carrying its exit code."""
    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, UNREACHABLE):
        hint = next((advice for sign, advice in _UNREACHABLE_ADVICE if sign in exc.message), "")
        return GatewayUnreachable(f"the gateway cannot be reached: {exc.message}{hint}")
    if isinstance(exc, REFUSED):
        return UsageError(f"refused by the gateway: {exc.message}")
    if isinstance(exc, DENIED):
        return UsageError(f"{exc.code.name if exc.code else 'denied'}: {exc.message}")
    if isinstance(exc, OrbitHashClientError):
        return CliError(f"the gateway answered {exc.code.name if exc.code else 'an error'}: {exc.message}")
    return CliError(f"{type(exc).__name__}: {exc}")
