"""Index shard settings (env prefix ``ORBITHASH_INDEX_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from orbithash_serving.settings import ServiceSettings


class IndexSettings(ServiceSettings):
    """OrbitHash index shard."""

    model_config = SettingsConfigDict(env_prefix="ORBITHASH_INDEX_")

    shard: int = Field(0, description="this shard's number")
    redis_url: str = Field("redis://127.0.0.1:6379/0", description="Redis holding this shard's keys")
    bits: int = Field(64, description="code length K the shard accepts")
    model_version: str = Field(..., description="model version the shard accepts")
    namespace: str = Field("orbithash", description="Redis key prefix")
    max_k: int = Field(100_000, description="largest k one search may ask for")
    max_batch: int = Field(1024, description="most query codes or items in one call")
