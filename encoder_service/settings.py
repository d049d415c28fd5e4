"""Encoder settings (env prefix ``ORBITHASH_ENCODER_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from orbithash.export.repository import DEFAULT_MODEL_NAME
from orbithash_serving.settings import ServiceSettings


class EncoderSettings(ServiceSettings):
    """OrbitHash encoder service."""

    model_config = SettingsConfigDict(env_prefix="ORBITHASH_ENCODER_")

    triton_url: str | None = Field(None, description="Triton gRPC host:port; unset: in-process ONNX Runtime")
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1, description="model name in the repository / on Triton")
    model_repository: str = Field("model_repository", description="repository read by the embedded backend")
    max_batch: int = Field(32, ge=1, le=4096, description="images per inference request")
    max_images: int = Field(256, ge=1, le=65536, description="images accepted in one Encode call")
    triton_timeout_s: float = Field(30.0, gt=0, description="deadline of one Triton request")
    decode_threads: int = Field(4, ge=1, le=256, description="threads decoding and resizing images")
    threads: int = Field(0, ge=0, le=1024, description="ONNX Runtime intra-op threads (0: all cores)")
