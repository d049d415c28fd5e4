"""Settings shared by every service; each service adds its own fields with its own env prefix.

Values come from, in rising priority: defaults, ``ORBITHASH_<SERVICE>_*`` environment variables,
command-line flags (``--field-name``), all through one pydantic-settings class per service.
"""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    host: str = Field("127.0.0.1", description="address the gRPC server binds")
    port: int = Field(0, ge=0, le=65535, description="gRPC port (0: the OS picks a free one)")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics HTTP port (0: the OS picks one)")
    workers: int = Field(16, ge=1, le=1024, description="gRPC handler threads")
    grace_s: float = Field(5.0, ge=0, description="seconds to drain in-flight RPCs on shutdown")
    log_level: str = Field("INFO", description="logging level")
    # Transport security (docs/security.md). With tls_cert and tls_key the gRPC port speaks TLS only;
    # the same certificate is this service's identity when it calls the next hop.
    tls_cert: str | None = Field(None, description="PEM certificate (chain) of this service; set with tls_key: TLS on")
    tls_key: str | None = Field(None, description="PEM private key of tls_cert")
    tls_ca: str | None = Field(None, description=(
        "PEM CA bundle that signs the cluster's certificates: verifies the servers this service calls "
        "and, with tls_client_auth, the clients that call it"))
    tls_client_auth: bool = Field(False, description=(
        "require a client certificate signed by tls_ca (mutual TLS: the internal hops)"))
    allowed_peers: str = Field("", description=(
        "comma-separated certificate names (common name or DNS name) allowed to call this service's "
        "API; empty: any certificate tls_ca signed. Needs tls_client_auth"))
    health_port: int | None = Field(None, ge=0, le=65535, description=(
        "a plaintext port serving only gRPC health checking, for probes that cannot speak TLS "
        "(Kubernetes' grpc probe); unset: none"))

    @model_validator(mode="after")
    def _tls_is_whole(self) -> ServiceSettings:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together: set both (TLS on) or neither")
        if self.tls_client_auth and (self.tls_cert is None or self.tls_ca is None):
            raise ValueError("tls_client_auth needs tls_cert, tls_key and tls_ca (the CA that signs the callers)")
        if self.allowed_peers.strip() and not self.tls_client_auth:
            raise ValueError("allowed_peers needs tls_client_auth: only a client certificate names the caller")
        return self

    def peer_names(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self.allowed_peers.split(",") if p.strip())

    @classmethod
    def from_argv(cls: type[S], argv: list[str] | None = None) -> S:
        parser = argparse.ArgumentParser(description=cls.__doc__)
        for name, info in cls.model_fields.items():
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                                help=info.description)
        args = vars(parser.parse_args(argv))
        overrides: dict[str, Any] = {k: v for k, v in args.items() if v is not None}
        return cls(**overrides)
