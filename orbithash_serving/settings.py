"""Settings shared by every service; each service adds its own fields with its own env prefix.

Values come from, in rising priority: defaults, ``ORBITHASH_<SERVICE>_*`` environment variables,
command-line flags (``--field-name``), all through one pydantic-settings class per service.
"""

from __future__ import annotations

import argparse
from typing import Any, TypeVar

from pydantic import Field
from pydantic_settings import BaseSettings

S = TypeVar("S", bound="ServiceSettings")


class ServiceSettings(BaseSettings):
    host: str = Field("127.0.0.1", description="address the gRPC server binds")
    port: int = Field(0, ge=0, le=65535, description="gRPC port (0: the OS picks a free one)")
    metrics_port: int = Field(0, ge=0, le=65535, description="Prometheus /metrics HTTP port (0: the OS picks one)")
    workers: int = Field(16, ge=1, le=1024, description="gRPC handler threads")
    grace_s: float = Field(5.0, ge=0, description="seconds to drain in-flight RPCs on shutdown")
    log_level: str = Field("INFO", description="logging level")

    @classmethod
    def from_argv(cls: type[S], argv: list[str] | None = None) -> S:
        parser = argparse.ArgumentParser(description=cls.__doc__)
        for name, info in cls.model_fields.items():
            parser.add_argument(f"--{name.replace('_', '-')}", dest=name, default=None,
                                help=info.description)
        args = vars(parser.parse_args(argv))
        overrides: dict[str, Any] = {k: v for k, v in args.items() if v is not None}
        return cls(**overrides)
