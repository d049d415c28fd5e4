"""Encoder settings (env prefix ``ORBITHASH_ENCODER_``)."""

from __future__ import annotations

from pydantic import Field, model_validator
from pydantic_settings import SettingsConfigDict

from orbithash.export.repository import DEFAULT_MODEL_NAME
from orbithash_serving.settings import ServiceSettings


class EncoderSettings(ServiceSettings):
    """OrbitHash encoder service."""

    model_config = SettingsConfigDict(env_prefix="ORBITHASH_ENCODER_")

    triton_url: str | None = Field(None, description="Triton gRPC host:port; unset: in-process ONNX Runtime")
    triton_tls: bool = Field(False, description=(
        "TLS to Triton, verifying it with tls_ca and presenting tls_cert/tls_key (when set) as client "
        "identity for mutual TLS"))
    model_name: str = Field(DEFAULT_MODEL_NAME, min_length=1, description="model name in the repository / on Triton")
    model_repository: str = Field("model_repository", description="repository read by the embedded backend")
    max_batch: int = Field(32, ge=1, le=4096, description="images per inference request")
    max_images: int = Field(256, ge=1, le=65536, description="images accepted in one Encode call")
    triton_timeout_s: float = Field(30.0, gt=0, description="deadline of one Triton request")
    decode_threads: int = Field(4, ge=1, le=256, description="threads decoding and resizing images")
    threads: int = Field(0, ge=0, le=1024, description="ONNX Runtime intra-op threads (0: all cores)")
    max_image_mpx: float = Field(40.0, gt=0, le=1000, description=(
        "largest image accepted, in megapixels (width × height as sent); larger ones get INVALID_ARGUMENT"))
    max_image_decode_mb: int = Field(400, ge=16, le=65536, description=(
        "largest estimated peak memory of decoding and resizing one image, in MB (10^6 bytes), read from its "
        "header (samples as stored, all bands at their depth, plus the uint8 RGB); larger ones get INVALID_ARGUMENT"))
    max_request_mpx: float = Field(120.0, gt=0, le=100_000, description=(
        "megapixels of all images of one Encode call together; more gets RESOURCE_EXHAUSTED"))
    decode_memory_mb: int = Field(1000, ge=16, le=1_000_000, description=(
        "estimated decode memory, in MB, of all images being decoded at once in this process; an image "
        "waits for room up to decode_wait_s, then its request gets RESOURCE_EXHAUSTED"))
    decode_wait_s: float = Field(2.0, ge=0, le=60, description=(
        "how long an image may wait for decode memory held by other requests"))

    @model_validator(mode="after")
    def _triton_tls_can_verify(self) -> EncoderSettings:
        if self.triton_tls and self.tls_ca is None:
            raise ValueError("triton_tls needs tls_ca (the CA that signs Triton's certificate)")
        return self

    @model_validator(mode="after")
    def _limits_fit_their_budgets(self) -> EncoderSettings:
        if self.max_image_decode_mb > self.decode_memory_mb:
            raise ValueError(f"max_image_decode_mb ({self.max_image_decode_mb}) must not exceed "
                             f"decode_memory_mb ({self.decode_memory_mb}): such an image could never decode")
        if self.max_image_mpx > self.max_request_mpx:
            raise ValueError(f"max_image_mpx ({self.max_image_mpx}) must not exceed max_request_mpx "
                             f"({self.max_request_mpx}): such an image could never be sent")
        return self
