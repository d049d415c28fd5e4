"""Encoder settings (env prefix ``ORBITHASH_ENCODER_``)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from orbithash_serving.settings import ServiceSettings


class EncoderSettings(ServiceSettings):
    """OrbitHash encoder service."""

    model_config = SettingsConfigDict(env_prefix="ORBITHASH_ENCODER_")

    triton_url: str | None = Field(None, description="Triton gRPC host:port; unset: in-process ONNX Runtime")
    model_name: str = Field("orbithash", description="model name in the repository / on Triton")
    model_repository: str = Field("model_repository", description="repository read by the embedded backend")
    max_batch: int = Field(32, description="images per inference request")
    max_images: int = Field(256, description="images accepted in one Encode call")
    triton_timeout_s: float = Field(30.0, description="deadline of one Triton request")
    decode_threads: int = Field(4, description="threads decoding and resizing images")
    threads: int = Field(0, description="ONNX Runtime intra-op threads (0: all cores)")
