"""Thin gRPC adapter over :class:`encoder_service.encoder.Encoder`."""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from encoder_service.encoder import EncodedBatch, Encoder
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.convert import model_info


class EncoderServicer(rpc.EncoderServicer):
    def __init__(self, encoder: Encoder) -> None:
        self._encoder = encoder

    def Encode(self, request: pb.EncodeRequest, context: grpc.ServicerContext) -> pb.EncodeResponse:
        return self._response(self._encoder.encode(list(request.images), context.time_remaining(),
                                                   request.thumbnail_size, context.is_active))

    def EncodeStream(self, request_iterator: Iterator[pb.EncodeRequest],
                     context: grpc.ServicerContext) -> Iterator[pb.EncodeResponse]:
        for request in request_iterator:
            yield self._response(self._encoder.encode(list(request.images), context.time_remaining(),
                                                      request.thumbnail_size, context.is_active))

    def _response(self, out: EncodedBatch) -> pb.EncodeResponse:
        names = self._encoder.facts.class_names
        thumbnails = out.thumbnails or (b"",) * len(out.codes)
        return pb.EncodeResponse(
            encodings=[
                pb.Encoding(code=out.codes[i].tobytes(), u=out.u[i].tolist(),
                            probabilities=out.probabilities[i].tolist(), label=int(out.labels[i]),
                            class_name=names[int(out.labels[i])], thumbnail=thumbnails[i])
                for i in range(len(out.codes))
            ],
            model_version=self._encoder.facts.version,
        )

    def Model(self, request: pb.ModelRequest, context: grpc.ServicerContext) -> pb.ModelInfo:
        return model_info(self._encoder.facts)
