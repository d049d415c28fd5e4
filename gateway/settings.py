"""Gateway settings (env prefix ``ORBITHASH_GATEWAY_``)."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from orbithash_serving.limits import parse_message_limits
from orbithash_serving.settings import ServiceSettings

# The index shards' default max_k: a larger k would be refused by every shard.
MAX_K_LIMIT = 100_000
# Largest thumbnail the encoder makes (encoder_service.encoder.MAX_THUMBNAIL_SIZE).
MAX_THUMBNAIL_SIZE = 1024
# One request message, per method: an image query may be a large scene (the encoder's own pixel and
# decode limits still apply); ids and metadata are small. Ingest counts one item per message.
DEFAULT_MESSAGE_LIMITS = "Search=64,SearchMany=256,Ingest=64,Get=4,Delete=4,UpdateMetadata=16,Info=0.01"


class GatewaySettings(ServiceSettings):
    """OrbitHash gateway."""

    model_config = SettingsConfigDict(env_prefix="ORBITHASH_GATEWAY_")

    encoder: str = Field("127.0.0.1:50051", min_length=1, description="encoder service host:port")
    shards: str = Field("127.0.0.1:50061", description="comma-separated index shard host:port, in shard order")
    max_k: int = Field(10_000, ge=1, le=MAX_K_LIMIT, description="largest k a search may ask for")
    timeout_s: float = Field(10.0, gt=0, description="deadline for each downstream call (capped by the caller's)")
    ingest_batch: int = Field(16, ge=1, le=4096, description="images encoded per encoder call during ingest")
    encode_bytes: int = Field(64 * 1024 * 1024, ge=1024, le=200 * 1024 * 1024, description=(
        "image bytes per encoder call during ingest: a batch closes before it would exceed this, so "
        "large images never make a message over the 256 MiB gRPC limit"))
    max_ingest_items: int = Field(100_000, ge=1, le=10_000_000, description=(
        "items in one ingest stream: the stream is encoded before the first write, so its codes "
        "(not its images) are held in memory until then"))
    write_batch: int = Field(1024, ge=1, le=1_000_000, description=(
        "items per write to one shard (at most the shards' max_batch)"))
    thumbnail_size: int = Field(0, ge=0, le=MAX_THUMBNAIL_SIZE, description=(
        "> 0: ingest stores a JPEG thumbnail of this longer side (pixels) with each item, made by the "
        "encoder in the same call; 0: no thumbnails"))
    max_stream_bytes: int = Field(256 * 1024 * 1024, ge=1024 * 1024, le=16 * 1024**3, description=(
        "bytes of codes and thumbnails one ingest stream may hold before its first write"))
    max_queries: int = Field(256, ge=1, le=1_000_000, description=(
        "queries in one SearchMany (at most the shards' max_batch and the encoder's max_images)"))
    max_hits: int = Field(100_000, ge=1, le=100_000_000, description="queries × k in one SearchMany")
    max_ids: int = Field(1024, ge=1, le=1_000_000, description=(
        "ids in one Get or UpdateMetadata (at most the shards' max_batch)"))
    coalesce_inflight: int = Field(2, ge=0, le=64, description=(
        "concurrent searches join into shared encoder and shard calls: a call goes out at once while "
        "fewer than this many are in flight to that service, later ones wait and leave together "
        "(docs/end-to-end.md); 0: every request makes its own calls"))
    startup_timeout_s: float = Field(120.0, gt=0, description="how long to wait for the encoder at start")
    # Who may call, and how much (docs/security.md).
    tokens_file: str | None = Field(None, description=(
        "JSON file of hashed bearer tokens with roles (orbithash token create); set: every call needs "
        "'authorization: Bearer <token>'. Read again when it changes (rotation without restart)"))
    rate_limit_rps: float = Field(500.0, ge=0, description=(
        "requests a second one client (token, or address without tokens) may send; 0: no limit"))
    rate_limit_burst: int = Field(1000, ge=1, description="requests one client may send at once above the rate")
    max_streams_per_client: int = Field(4, ge=0, description=(
        "ingest streams one client may have open at once; 0: no limit"))
    message_limits_mb: str = Field(DEFAULT_MESSAGE_LIMITS, description=(
        "largest request message per method, MiB (Method=MiB,...); gRPC's own limit is 256 MiB"))

    @field_validator("message_limits_mb")
    @classmethod
    def _limits_parse(cls, value: str) -> str:
        parse_message_limits(value)
        return value

    @field_validator("shards")
    @classmethod
    def _at_least_one_shard(cls, value: str) -> str:
        if not _split(value):
            raise ValueError("the gateway needs at least one index shard address")
        return value

    def shard_addresses(self) -> list[str]:
        return _split(self.shards)


def _split(addresses: str) -> list[str]:
    return [a.strip() for a in addresses.split(",") if a.strip()]
