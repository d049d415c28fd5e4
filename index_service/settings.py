"""Index shard settings (env prefix ``ORBITHASH_INDEX_``)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from orbithash.codes import MAX_BITS, MIN_BITS
from orbithash_serving.settings import ServiceSettings


class IndexSettings(ServiceSettings):
    """OrbitHash index shard."""

    model_config = SettingsConfigDict(env_prefix="ORBITHASH_INDEX_")

    shard: int = Field(0, ge=0, description="this shard's number")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding this shard's keys")
    redis_username: str | None = Field(None, description=(
        "Redis ACL user of this shard (the local launcher's Redis has shard-N); set with redis_password_file"))
    redis_password_file: str | None = Field(None, description=(
        "file holding the Redis user's password, read once at start (never the password itself: it would "
        "show in the command line); unset: no AUTH. TLS to Redis: a rediss:// redis_url, with tls_cert, "
        "tls_key as this shard's client certificate and tls_ca to verify Redis"))
    redis_timeout_s: float = Field(5.0, gt=0, le=600, description=(
        "socket timeout of one Redis command; a write waits at most this long per try (3 tries) "
        "for a slow or stopped Redis, holding only the shard's write mutex"))
    bits: int = Field(64, ge=MIN_BITS, le=MAX_BITS, description="code length K the shard accepts")
    model_version: str = Field(..., min_length=1, description="model version the shard accepts")
    namespace: str = Field("orbithash", min_length=1, description="Redis key prefix")
    max_k: int = Field(100_000, ge=1, le=10_000_000, description="largest k one search may ask for")
    max_batch: int = Field(1024, ge=1, le=1_000_000, description="most query codes or items in one call")
    redis_max_string_mb: int = Field(512, ge=1, le=1_000_000, description=(
        "Redis's proto-max-bulk-len in MiB (its default: 512): the shard's codes sit in one string, so "
        "this bounds its items (16.7M codes of 256 bits, 67M of 64 bits); a full shard refuses adds "
        "with RESOURCE_EXHAUSTED before writing anything"))

    @model_validator(mode="after")
    def _redis_user_has_password(self) -> IndexSettings:
        if self.redis_username is not None and self.redis_password_file is None:
            raise ValueError("redis_username needs redis_password_file (the file holding that user's password)")
        return self
