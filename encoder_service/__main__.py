"""``python -m encoder_service``: run one encoder process."""

from __future__ import annotations

import logging
import sys

from prometheus_client import CollectorRegistry

from encoder_service.backends import InferenceBackend, OnnxRuntimeBackend, TritonBackend, TritonTls
from encoder_service.encoder import DecodePolicy, Encoder, EncoderMetrics
from encoder_service.servicer import EncoderServicer
from encoder_service.settings import EncoderSettings
from orbithash.export.repository import model_path
from orbithash.images import MB, DecodeLimits
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.server import GrpcServer, run_service, service_name


def build_backend(settings: EncoderSettings) -> InferenceBackend:
    if settings.triton_url:
        return TritonBackend(settings.triton_url, settings.model_name, settings.triton_timeout_s,
                             triton_tls(settings))
    return OnnxRuntimeBackend(model_path(settings.model_repository, settings.model_name), settings.threads)


def triton_tls(settings: EncoderSettings) -> TritonTls | None:
    """The encoder's own identity (tls_cert/tls_key) is its client certificate towards Triton."""
    if not settings.triton_tls or settings.tls_ca is None:
        return None
    return TritonTls(settings.tls_ca, settings.tls_cert, settings.tls_key)


def decode_policy(settings: EncoderSettings) -> DecodePolicy:
    image = DecodeLimits(max_pixels=int(settings.max_image_mpx * 1e6),
                         max_decode_bytes=settings.max_image_decode_mb * MB)
    return DecodePolicy(image, int(settings.max_request_mpx * 1e6), settings.decode_memory_mb * MB,
                        settings.decode_wait_s)


def build_server(settings: EncoderSettings) -> GrpcServer:
    registry = CollectorRegistry()
    backend = build_backend(settings)
    encoder = Encoder(backend, settings.max_batch, settings.max_images, EncoderMetrics(registry),
                      settings.decode_threads, decode_policy(settings))
    servicer = EncoderServicer(encoder)
    facts = backend.facts
    logging.getLogger("orbithash.encoder").info(
        "model %s version %s: %d bits, %d classes, via %s", facts.name, facts.version, facts.bits,
        len(facts.class_names), settings.triton_url or "in-process ONNX Runtime")
    return GrpcServer(settings, [service_name("Encoder")],
                      lambda server: rpc.add_EncoderServicer_to_server(servicer, server), registry,
                      ready=backend.ready)


def main(argv: list[str] | None = None) -> int:
    return run_service(EncoderSettings, build_server, argv)


if __name__ == "__main__":
    sys.exit(main())
