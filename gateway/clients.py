"""The gRPC side of the gateway's calls: the encoder and the index shards behind the Protocols of
:mod:`gateway.core`, with deadlines, channel options, and the one mapping from a downstream status
to a domain error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import grpc

from gateway.convert import (
    encoding_from_pb,
    item_from_pb,
    item_to_pb,
    shard_search_request_to_pb,
    shard_search_response_from_pb,
    shard_update_request_to_pb,
)
from gateway.core import (
    DeleteResult,
    Encoder,
    Encoding,
    Hit,
    HitColumns,
    MetadataUpdate,
    ShardQuery,
    ShardStats,
    StoredItem,
    UpdateResult,
    Written,
)
from orbithash import InvalidInput, Mismatch, NotFound, NotSent, OrbitHashError, ResourceExhausted, Unavailable
from orbithash.model_facts import ModelFacts
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.convert import facts_from_info
from orbithash_serving.deadlines import not_after_metadata
from orbithash_serving.server import CHANNEL_OPTIONS

log = logging.getLogger("orbithash.gateway")

# A restarted shard is back in the fan-out within a second, not after gRPC's default 2 min backoff.
SHARD_CHANNEL_OPTIONS = [*CHANNEL_OPTIONS, ("grpc.initial_reconnect_backoff_ms", 100),
                         ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.min_reconnect_backoff_ms", 100)]

# Statuses that say the request itself is wrong: the caller gets the same answer from the gateway.
# Every other status (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, ...) means the service is down, late
# or broken, which the core treats as a failed shard.
_CLIENT_ERRORS: dict[grpc.StatusCode, type[OrbitHashError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInput,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.FAILED_PRECONDITION: Mismatch,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
}

# gRPC's own status for a call that found no connection, so the request never left the gateway. Only
# its prefix counts: a service's own text (a shard quoting redis-py's "Connection refused" about a
# write that may have been applied) proves nothing about what was sent.
_NEVER_CONNECTED = "failed to connect to all addresses"


def domain_error(exc: grpc.RpcError, service: str) -> OrbitHashError:
    """The domain error for a failed call to ``service`` (named in the message when it is down)."""
    code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
    details = (exc.details() if isinstance(exc, grpc.Call) else None) or ""
    kind = _CLIENT_ERRORS.get(code)
    if kind is not None:
        return kind(details)
    if code == grpc.StatusCode.UNAVAILABLE and details.startswith(_NEVER_CONNECTED):
        return NotSent(f"{service}: {code.name} {details}".rstrip())
    return Unavailable(f"{service}: {code.name} {details}".rstrip())


@contextmanager
def _domain_errors(service: str) -> Iterator[None]:
    try:
        yield
    except grpc.RpcError as exc:
        raise domain_error(exc, service) from exc


def _channel(address: str, credentials: grpc.ChannelCredentials | None, options: list) -> grpc.Channel:
    if credentials is None:
        return grpc.insecure_channel(address, options=options)
    return grpc.secure_channel(address, credentials, options=options)


class EncoderClient:
    """The encoder service over one channel (TLS with ``credentials``)."""

    def __init__(self, address: str, credentials: grpc.ChannelCredentials | None = None) -> None:
        self.address = address
        self._name = f"encoder at {address}"
        self._channel = _channel(address, credentials, CHANNEL_OPTIONS)
        self._stub = rpc.EncoderStub(self._channel)

    def encode(self, images: Sequence[bytes], timeout: float, thumbnail_size: int = 0) -> list[Encoding]:
        with _domain_errors(self._name):
            reply = self._stub.Encode(pb.EncodeRequest(images=images, thumbnail_size=thumbnail_size), timeout=timeout)
        if len(reply.encodings) != len(images):
            raise Unavailable(f"{self._name}: {len(reply.encodings)} encodings for {len(images)} images")
        return [encoding_from_pb(e) for e in reply.encodings]

    def model(self, timeout: float) -> ModelFacts:
        with _domain_errors(self._name):
            return facts_from_info(self._stub.Model(pb.ModelRequest(), timeout=timeout))

    def close(self) -> None:
        self._channel.close()


class ShardClient:
    """One index shard over its own channel, which reconnects quickly after the shard restarts."""

    def __init__(self, shard: int, address: str, packed: bool = True,
                 credentials: grpc.ChannelCredentials | None = None) -> None:
        self.address = address
        self.packed = packed  # ask for hits column-wise (False: one message per hit, as before)
        self._name = f"index shard {shard} at {address}"
        self._channel = _channel(address, credentials, SHARD_CHANNEL_OPTIONS)
        self._stub = rpc.IndexShardStub(self._channel)

    def search(self, query: ShardQuery, timeout: float) -> list[list[Hit]] | list[HitColumns]:
        """Hits column-wise (``HitColumns``) when the shard packs them, as objects with metadata or
        thumbnails or from a shard that predates packing."""
        with _domain_errors(self._name):
            reply = self._stub.Search(shard_search_request_to_pb(query, self.packed), timeout=timeout)
        try:
            return shard_search_response_from_pb(reply)
        except ValueError as exc:
            raise Unavailable(f"{self._name}: {exc}") from exc

    def get(self, ids: Sequence[str], timeout: float, with_metadata: bool = False,
            with_thumbnails: bool = False) -> list[StoredItem]:
        request = pb.GetRequest(ids=ids, with_metadata=with_metadata, with_thumbnails=with_thumbnails)
        with _domain_errors(self._name):
            reply = self._stub.Get(request, timeout=timeout)
        return [item_from_pb(i) for i in reply.items]

    def add(self, items: Sequence[StoredItem], bits: int, model_version: str, timeout: float) -> Written:
        request = pb.AddRequest(items=[item_to_pb(i) for i in items], bits=bits, model_version=model_version)
        with _domain_errors(self._name):
            reply = self._stub.Add(request, timeout=timeout, metadata=not_after_metadata(timeout))
        return Written(reply.added, reply.replaced)

    def delete(self, ids: Sequence[str], timeout: float) -> DeleteResult:
        with _domain_errors(self._name):
            reply = self._stub.Delete(pb.DeleteRequest(ids=ids), timeout=timeout, metadata=not_after_metadata(timeout))
        return DeleteResult(reply.deleted, list(reply.missing))

    def update_metadata(self, updates: Sequence[MetadataUpdate], timeout: float) -> UpdateResult:
        with _domain_errors(self._name):
            reply = self._stub.UpdateMetadata(shard_update_request_to_pb(updates), timeout=timeout,
                                              metadata=not_after_metadata(timeout))
        return UpdateResult(reply.updated, list(reply.missing))

    def stats(self, timeout: float) -> ShardStats:
        with _domain_errors(self._name):
            reply = self._stub.Stats(pb.StatsRequest(), timeout=timeout)
        return ShardStats(reply.count, reply.ready)

    def close(self) -> None:
        self._channel.close()


def wait_for_model(encoder: Encoder, timeout_s: float, poll_s: float = 0.5, call_timeout_s: float = 5.0) -> ModelFacts:
    """The served model's facts, asked of the encoder until it answers or ``timeout_s`` has passed:
    the gateway starts only once it knows which codes it serves."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return encoder.model(min(call_timeout_s, max(deadline - time.monotonic(), 0.001)))
        except Unavailable as exc:
            if time.monotonic() >= deadline:
                raise Unavailable(f"encoder not ready after {timeout_s:g} s: {exc}") from exc
            log.info("waiting for the encoder: %s", exc)
            time.sleep(poll_s)
