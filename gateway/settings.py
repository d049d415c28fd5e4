"""Gateway settings (env prefix ``ORBITHASH_GATEWAY_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from orbithash_serving.settings import ServiceSettings


class GatewaySettings(ServiceSettings):
    """OrbitHash gateway."""

    model_config = SettingsConfigDict(env_prefix="ORBITHASH_GATEWAY_")

    encoder: str = Field("127.0.0.1:50051", description="encoder service host:port")
    shards: str = Field("127.0.0.1:50061", description="comma-separated index shard host:port, in shard order")
    max_k: int = Field(10_000, description="largest k a search may ask for")
    timeout_s: float = Field(10.0, description="deadline for each downstream call (capped by the caller's)")
    ingest_batch: int = Field(16, description="images encoded per encoder call during ingest")
    startup_timeout_s: float = Field(120.0, description="how long to wait for the encoder at start")

    def shard_addresses(self) -> list[str]:
        return [a.strip() for a in self.shards.split(",") if a.strip()]
