"""The gateway's data plane: encode, place, fan out, merge. Speaks gRPC only as a client."""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import grpc
from prometheus_client import CollectorRegistry, Counter

from gateway.merge import merge_topk
from gateway.placement import shard_for
from gateway.settings import GatewaySettings
from orbithash import InvalidInput, NotFound, Unavailable
from orbithash.bits import padding_is_zero
from orbithash.model_facts import ModelFacts
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_serving.convert import facts_from_info
from orbithash_serving.server import CHANNEL_OPTIONS

log = logging.getLogger("orbithash.gateway")

# Errors that mean "this shard is down", as opposed to "the request is wrong".
_TRANSIENT = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.INTERNAL,
              grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED}


@dataclass
class Query:
    code: bytes
    encoding: pb.Encoding | None = None


@dataclass
class SearchResult:
    hits: list[pb.Hit]
    query: pb.Encoding | None
    failed_shards: list[int] = field(default_factory=list)


@dataclass
class IngestResult:
    ingested: int = 0
    replaced: int = 0
    per_shard: list[int] = field(default_factory=list)


class Router:
    def __init__(self, settings: GatewaySettings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self._encoder_channel = grpc.insecure_channel(settings.encoder, options=CHANNEL_OPTIONS)
        self._encoder = rpc.EncoderStub(self._encoder_channel)
        self.addresses = settings.shard_addresses()
        if not self.addresses:
            raise ValueError("the gateway needs at least one shard address")
        # A restarted shard is back in the fan-out within a second, not after gRPC's default 2 min backoff.
        shard_options = [*CHANNEL_OPTIONS, ("grpc.initial_reconnect_backoff_ms", 100),
                         ("grpc.max_reconnect_backoff_ms", 1000), ("grpc.min_reconnect_backoff_ms", 100)]
        self._channels = [grpc.insecure_channel(a, options=shard_options) for a in self.addresses]
        self._shards = [rpc.IndexShardStub(c) for c in self._channels]
        self.facts = self._wait_for_model(settings.startup_timeout_s)
        self._partial = Counter("orbithash_gateway_partial_results", "Searches answered without some shard.",
                                registry=registry)
        self._ingested = Counter("orbithash_gateway_ingested_items", "Items ingested.", registry=registry)

    def _wait_for_model(self, timeout: float) -> ModelFacts:
        deadline = time.monotonic() + timeout
        while True:
            try:
                info = self._encoder.Model(pb.ModelRequest(), timeout=5)
                return facts_from_info(info)
            except grpc.RpcError as exc:
                if time.monotonic() > deadline:
                    raise Unavailable(f"encoder at {self.settings.encoder} not ready: {exc.details()}") from exc
                time.sleep(0.5)

    def close(self) -> None:
        for c in [self._encoder_channel, *self._channels]:
            c.close()

    def _timeout(self, remaining: float | None) -> float:
        t = self.settings.timeout_s
        return t if remaining is None else max(0.001, min(t, remaining))

    # -- queries -------------------------------------------------------------------------------

    def _query(self, request: pb.SearchRequest, remaining: float | None) -> Query:
        kind = request.WhichOneof("query")
        if kind == "image":
            resp = self._encoder.Encode(pb.EncodeRequest(images=[request.image]),
                                        timeout=self._timeout(remaining))
            enc = resp.encodings[0]
            return Query(enc.code, enc)
        if kind == "code":
            width = self.facts.code_bytes
            if len(request.code) != width:
                raise InvalidInput(f"code is {len(request.code)} bytes; the served model's "
                                   f"{self.facts.bits}-bit codes are {width} bytes")
            if not padding_is_zero(request.code, self.facts.bits):
                raise InvalidInput(f"padding bits beyond bit {self.facts.bits} must be zero")
            return Query(request.code)
        if kind == "id":
            shard = shard_for(request.id, len(self._shards))
            got = self._shards[shard].Get(pb.GetRequest(ids=[request.id]), timeout=self._timeout(remaining))
            if not got.items:
                raise NotFound(f"no item with id {request.id!r}")
            return Query(got.items[0].code)
        raise InvalidInput("set one of image, code or id")

    def search(self, request: pb.SearchRequest, remaining: float | None) -> SearchResult:
        if not 1 <= request.k <= self.settings.max_k:
            raise InvalidInput(f"k must be in 1..{self.settings.max_k}, got {request.k}")
        query = self._query(request, remaining)
        shard_request = pb.ShardSearchRequest(codes=[query.code], k=request.k, bits=self.facts.bits,
                                              model_version=self.facts.version)
        if request.HasField("max_distance"):
            shard_request.max_distance = request.max_distance
        if request.HasField("label"):
            shard_request.label = request.label
        if request.rerank:
            if query.encoding is None:
                raise InvalidInput("rerank needs an image query: it uses the query's real-valued u")
            shard_request.u.extend(query.encoding.u)
            shard_request.candidates = max(request.rerank_candidates or 4 * request.k, request.k)
        timeout = self._timeout(remaining)
        calls = [stub.Search.future(shard_request, timeout=timeout) for stub in self._shards]
        per_shard: list[list[pb.Hit]] = []
        failed: list[int] = []
        for shard, call in enumerate(calls):
            try:
                per_shard.append(list(call.result().results[0].hits))
            except grpc.RpcError as exc:
                if exc.code() not in _TRANSIENT:
                    raise
                log.warning("shard %d failed: %s %s", shard, exc.code().name, exc.details())
                failed.append(shard)
        if len(failed) == len(self._shards):
            raise Unavailable("every index shard failed; no results")
        if failed:
            self._partial.inc()
        return SearchResult(merge_topk(per_shard, request.k, by_score=request.rerank), query.encoding, failed)

    # -- writes --------------------------------------------------------------------------------

    def ingest(self, items: Iterable[pb.IngestItem], remaining: float | None) -> IngestResult:
        result = IngestResult(per_shard=[0] * len(self._shards))
        batch: list[pb.IngestItem] = []
        for item in items:
            if not item.id:
                raise InvalidInput(f"item {result.ingested + len(batch)}: id is empty")
            batch.append(item)
            if len(batch) >= self.settings.ingest_batch:
                self._ingest_batch(batch, result, remaining)
                batch = []
        if batch:
            self._ingest_batch(batch, result, remaining)
        return result

    def _ingest_batch(self, batch: list[pb.IngestItem], result: IngestResult, remaining: float | None) -> None:
        try:
            encoded = self._encoder.Encode(pb.EncodeRequest(images=[i.image for i in batch]),
                                           timeout=self._timeout(remaining))
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidInput(f"after {result.ingested} stored items, in the batch starting at id "
                                   f"{batch[0].id!r}: {exc.details()}") from exc
            raise
        groups: dict[int, list[pb.Item]] = defaultdict(list)
        for item, enc in zip(batch, encoded.encodings, strict=True):
            label = item.label if item.HasField("label") else enc.label
            groups[shard_for(item.id, len(self._shards))].append(pb.Item(id=item.id, code=enc.code, label=label))
        calls = {
            shard: self._shards[shard].Add.future(
                pb.AddRequest(items=group, bits=self.facts.bits, model_version=self.facts.version),
                timeout=self._timeout(remaining))
            for shard, group in groups.items()
        }
        for shard, call in calls.items():
            added = call.result()
            result.ingested += added.added
            result.replaced += added.replaced
            result.per_shard[shard] += added.added
            self._ingested.inc(added.added)

    def delete(self, ids: list[str], remaining: float | None) -> tuple[int, list[str]]:
        if not ids:
            raise InvalidInput("no ids given")
        groups: dict[int, list[str]] = defaultdict(list)
        for item_id in ids:
            groups[shard_for(item_id, len(self._shards))].append(item_id)
        deleted, missing = 0, []
        for shard, group in groups.items():
            resp = self._shards[shard].Delete(pb.DeleteRequest(ids=group), timeout=self._timeout(remaining))
            deleted += resp.deleted
            missing.extend(resp.missing)
        return deleted, missing

    def shard_stats(self, remaining: float | None) -> Iterator[tuple[int, str, pb.StatsResponse | None]]:
        calls = [stub.Stats.future(pb.StatsRequest(), timeout=self._timeout(remaining)) for stub in self._shards]
        for shard, call in enumerate(calls):
            try:
                yield shard, self.addresses[shard], call.result()
            except grpc.RpcError:
                yield shard, self.addresses[shard], None
