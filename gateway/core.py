"""The gateway's data plane on plain types: validate, encode, place, fan out, merge.

It speaks to the encoder and the index shards only through the :class:`Encoder` and :class:`Shard`
Protocols, so the same logic runs behind gRPC (``gateway.clients``) and, in unit tests, against
fakes. Clients report a shard that is down or late as :class:`~orbithash.Unavailable`; any other
error is the caller's and passes through unchanged.

Every request is checked whole before its first downstream call, by the library's rules
(``orbithash.codes`` for ids, codes and k, ``orbithash.metadata`` for scene metadata, filters and
thumbnails), so a refused request changed nothing.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol, TypeVar

import numpy as np
from prometheus_client import CollectorRegistry, Counter

from gateway.merge import merge_topk
from gateway.placement import shard_for
from orbithash import InvalidInput, Mismatch, NotFound, NotSent, OrbitHashError, ResourceExhausted, Unavailable
from orbithash.codes import as_code_array, check_id, check_ids, check_k, rerank_pool, shown
from orbithash.metadata import SceneFilter, SceneMeta, check_filter, check_scene, check_thumbnail
from orbithash.model_facts import ModelFacts

log = logging.getLogger("orbithash.gateway")

T = TypeVar("T")

# gRPC needs a positive timeout; a call made after the caller's deadline gets this and fails fast.
_MIN_CALL_S = 0.001
# A shard whose answer has not arrived this long after its own deadline is counted as failed,
# even if its client did not give up by itself.
_LATE_SLACK_S = 0.5
# Kept back from the caller's deadline for answering: a tenth of it, at most this much.
_MAX_RESERVE_S = 0.25

# -- what the gateway is asked and answers ---------------------------------------------------------

@dataclass(frozen=True)
class ByImage:
    image: bytes


@dataclass(frozen=True)
class ByCode:
    code: bytes


@dataclass(frozen=True)
class ById:
    id: str


Query = ByImage | ByCode | ById


@dataclass(frozen=True)
class SearchRequest:
    query: Query | None
    k: int
    max_distance: int | None = None
    label: int | None = None
    rerank: bool = False
    rerank_candidates: int = 0  # 0: the default pool of orbithash.codes.rerank_pool
    filter: SceneFilter | None = None
    with_metadata: bool = False
    with_thumbnails: bool = False


@dataclass(frozen=True)
class SearchManyRequest:
    """Many queries sharing k and every filter: answered like that many :class:`SearchRequest`."""

    queries: Sequence[Query | None]
    k: int
    max_distance: int | None = None
    label: int | None = None
    rerank: bool = False
    rerank_candidates: int = 0
    filter: SceneFilter | None = None
    with_metadata: bool = False
    with_thumbnails: bool = False


@dataclass(frozen=True)
class Encoding:
    """What the encoder says about one image."""

    code: bytes
    u: tuple[float, ...]
    probabilities: tuple[float, ...]
    label: int
    class_name: str
    thumbnail: bytes = b""  # JPEG, when one was asked for


@dataclass(slots=True)  # not frozen: built by the thousand per search, and freezing makes that slower
class Hit:
    id: str
    distance: int
    label: int
    shard: int
    score: float = 0.0
    metadata: SceneMeta | None = None  # when asked for (with_metadata)
    thumbnail: bytes = b""  # when asked for (with_thumbnails) and stored


@dataclass(frozen=True, eq=False)
class HitColumns:
    """One shard's hits for one query code, column-wise, in the shard's order (ascending distance,
    or score when re-ranked, ties by id bytewise): what a shard answers without one object per hit.
    :func:`gateway.merge.merge_topk` merges them on the arrays and builds a :class:`Hit` only for
    the hits it keeps. No metadata or thumbnails: hits with those come as lists of :class:`Hit`."""

    shard: int
    ids: bytes              # the ids' UTF-8 bytes, concatenated
    id_bounds: list[int]    # hit j's id is ids[id_bounds[j]:id_bounds[j + 1]]; one more than the hits
    distances: np.ndarray   # uint32
    labels: np.ndarray      # int32
    scores: np.ndarray      # float32, 0 when not re-ranked

    def __len__(self) -> int:
        return int(self.distances.shape[0])

    def keys(self, by_score: bool) -> np.ndarray:
        return self.scores if by_score else self.distances

    def id_bytes(self, j: int) -> bytes:
        return self.ids[self.id_bounds[j]:self.id_bounds[j + 1]]

    @staticmethod
    def take(answers: Sequence[HitColumns], which: Sequence[int], positions: Sequence[int]) -> list[Hit]:
        """Hit objects for hit ``positions[i]`` of ``answers[which[i]]``, in that order."""
        cols = [(a.ids, a.id_bounds, a.distances.tolist(), a.labels.tolist(), a.scores.tolist(), a.shard)
                for a in answers]
        if len(cols) == 1:
            ids, bounds, dist, lab, score, shard = cols[0]
            return [Hit(ids[bounds[j]:bounds[j + 1]].decode(), dist[j], lab[j], shard, score[j]) for j in positions]
        out = []
        for s, j in zip(which, positions, strict=True):
            ids, bounds, dist, lab, score, shard = cols[s]
            out.append(Hit(ids[bounds[j]:bounds[j + 1]].decode(), dist[j], lab[j], shard, score[j]))
        return out

    def hits(self) -> list[Hit]:
        n = len(self)
        return HitColumns.take([self], [0] * n, range(n))


# A shard's answer for one query code: hits as objects (with metadata or thumbnails, and fakes) or as columns.
ShardHits = Sequence[Hit] | HitColumns


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    query: Encoding | None  # set when the query was an image
    model_version: str
    failed_shards: list[int] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.failed_shards)


@dataclass(frozen=True)
class IngestItem:
    id: str
    image: bytes
    label: int | None = None  # None: store the predicted label
    metadata: SceneMeta | None = None


@dataclass
class IngestSummary:
    """Exactly what one ingest stored: ``ingested`` items (new and replaced ids), ``per_shard``."""

    received: int = 0
    ingested: int = 0
    replaced: int = 0
    per_shard: list[int] = field(default_factory=list)
    failed_shards: list[int] = field(default_factory=list)
    uncertain_shards: list[int] = field(default_factory=list)  # failed mid-write: may have stored their items


class IngestIncomplete(OrbitHashError):
    """Some items were stored and others not (a shard failed while writing): ``error`` is what to
    answer, ``summary`` what was stored."""

    def __init__(self, error: OrbitHashError, summary: IngestSummary) -> None:
        super().__init__(str(error))
        self.error = error
        self.summary = summary


@dataclass(frozen=True)
class DeleteResult:
    deleted: int
    missing: list[str]


@dataclass(frozen=True)
class MetadataUpdate:
    id: str
    metadata: SceneMeta  # replaces the stored metadata whole; empty clears it


@dataclass(frozen=True)
class UpdateResult:
    updated: int
    missing: list[str]  # ids not stored, in request order: nothing was changed for them


@dataclass(frozen=True)
class FoundItem:
    shard: int
    item: StoredItem


@dataclass(frozen=True)
class GetResult:
    items: list[FoundItem]  # request order
    missing: list[str]


@dataclass(frozen=True)
class ShardStats:
    count: int
    ready: bool  # False while the shard cannot reach its Redis (its health says NOT_SERVING)


@dataclass(frozen=True)
class ShardInfo:
    shard: int
    address: str
    count: int
    healthy: bool


@dataclass(frozen=True)
class Info:
    model: ModelFacts
    shards: list[ShardInfo]

    @property
    def total(self) -> int:
        return sum(s.count for s in self.shards)


# -- what the gateway asks the encoder and the shards ----------------------------------------------

@dataclass(frozen=True)
class ShardQuery:
    """One shard search for a batch of query codes: each shard answers one hit list per code."""

    codes: tuple[bytes, ...]
    k: int
    bits: int
    model_version: str
    max_distance: int | None = None
    label: int | None = None
    u: tuple[float, ...] = ()  # set: K floats per code, re-rank the Hamming candidates by -u·b
    candidates: int = 0
    filter: SceneFilter | None = None
    with_metadata: bool = False
    with_thumbnails: bool = False


@dataclass(frozen=True)
class StoredItem:
    id: str
    code: bytes
    label: int
    metadata: SceneMeta | None = None
    thumbnail: bytes = b""


@dataclass(frozen=True)
class Written:
    added: int
    replaced: int


class Encoder(Protocol):
    """Images → encodings; ``model`` is asked once, at start (``gateway.clients.wait_for_model``).

    ``thumbnail_size`` > 0: each encoding also carries a JPEG thumbnail whose longer side is that many pixels.
    """

    def encode(self, images: Sequence[bytes], timeout: float, thumbnail_size: int = 0) -> list[Encoding]: ...

    def model(self, timeout: float) -> ModelFacts: ...


class Shard(Protocol):
    """One index shard. Down, late or broken: ``Unavailable``; any other error is the caller's."""

    @property
    def address(self) -> str: ...

    def search(self, query: ShardQuery, timeout: float) -> list[ShardHits]: ...

    def get(self, ids: Sequence[str], timeout: float, with_metadata: bool = False,
            with_thumbnails: bool = False) -> list[StoredItem]: ...

    def add(self, items: Sequence[StoredItem], bits: int, model_version: str, timeout: float) -> Written: ...

    def delete(self, ids: Sequence[str], timeout: float) -> DeleteResult: ...

    def update_metadata(self, updates: Sequence[MetadataUpdate], timeout: float) -> UpdateResult: ...

    def stats(self, timeout: float) -> ShardStats: ...


# -- policy ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Limits:
    """The gateway's own bounds (from ``GatewaySettings``, which documents and checks them)."""

    max_k: int
    timeout_s: float  # longest one downstream call may take, whatever the caller allows
    ingest_batch: int  # images per encoder call
    encode_bytes: int = 64 * 1024 * 1024  # image bytes per encoder call (under the message limit)
    max_ingest_items: int = 100_000  # items in one ingest stream
    write_batch: int = 1024  # items per shard write (the shards' max_batch)
    thumbnail_size: int = 0  # > 0: ingest stores a JPEG thumbnail of this longer side with each item
    max_stream_bytes: int = 256 * 1024 * 1024  # codes and thumbnails one ingest stream holds before its writes
    max_queries: int = 256  # queries in one SearchMany (at most the shards' max_batch)
    max_hits: int = 100_000  # queries × k in one SearchMany
    max_ids: int = 1024  # ids in one Get or UpdateMetadata (at most the shards' max_batch)


class Budget:
    """The time one request may still spend downstream.

    Each downstream call gets at most ``per_call_s``, and never more than what is left of the
    caller's deadline minus a reserve: the time the gateway needs to merge and answer after a
    late shard's call has timed out. So a stopped shard costs its own hits (a partial answer
    that arrives in time), not the caller's whole request.
    """

    def __init__(self, per_call_s: float, remaining_s: float | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._per_call = per_call_s
        self._clock = clock
        self._deadline = None if remaining_s is None else clock() + remaining_s
        self.reserve_s = 0.0 if remaining_s is None else min(_MAX_RESERVE_S, max(_MIN_CALL_S, remaining_s * 0.1))

    def call_timeout(self) -> float:
        if self._deadline is None:
            return self._per_call
        return max(_MIN_CALL_S, min(self._per_call, self._deadline - self._clock() - self.reserve_s))

    def late_slack(self) -> float:
        """How long past a call's timeout to wait for a client that does not honour it."""
        return _LATE_SLACK_S if self._deadline is None else min(_LATE_SLACK_S, self.reserve_s / 2)


class Gateway:
    """Search, ingest, get, update, delete and info over N shards and one encoder.

    ``concurrency`` is how many requests may be served at once (the server's worker threads): the
    fan-out pool holds a thread for every shard call of each, so no call waits behind another's.
    """

    def __init__(self, encoder: Encoder, shards: Sequence[Shard], facts: ModelFacts, limits: Limits,
                 registry: CollectorRegistry | None = None, concurrency: int = 16,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if not shards:
            raise ValueError("the gateway needs at least one shard")
        self.encoder = encoder
        self.shards = list(shards)
        self.facts = facts
        self.limits = limits
        self._clock = clock
        self._pool = futures.ThreadPoolExecutor(max_workers=concurrency * len(self.shards),
                                                thread_name_prefix="fan-out")
        registry = registry if registry is not None else CollectorRegistry()
        # Both count queries (a SearchMany of n counts n): the partial-results alert divides one by the other.
        self._searches = Counter("orbithash_gateway_searches", "Search queries answered, partial or not.",
                                 registry=registry)
        self._partial = Counter("orbithash_gateway_partial_results", "Search queries answered without some shard.",
                                registry=registry)
        self._ingested = Counter("orbithash_gateway_ingested_items", "Items ingested.", registry=registry)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _budget(self, remaining: float | None) -> Budget:
        return Budget(self.limits.timeout_s, remaining, self._clock)

    def _shard_of(self, item_id: str) -> int:
        return shard_for(item_id, len(self.shards))

    def _group(self, ids: Iterable[str]) -> dict[int, list[str]]:
        """Ids by the shard that holds them, each once, in the order given."""
        groups: dict[int, list[str]] = {}
        for item_id in dict.fromkeys(ids):
            groups.setdefault(self._shard_of(item_id), []).append(item_id)
        return groups

    def _fan_out(self, calls: dict[int, Callable[[float], T]], budget: Budget
                 ) -> tuple[dict[int, T], dict[int, Exception]]:
        """Run one call per shard concurrently, each given what is left of the budget now; answers and
        errors by shard. A call still running after its timeout counts as an Unavailable shard."""
        timeout = budget.call_timeout()
        running = {shard: self._pool.submit(call, timeout) for shard, call in calls.items()}
        futures.wait(running.values(), timeout=timeout + budget.late_slack())
        answers: dict[int, T] = {}
        errors: dict[int, Exception] = {}
        for shard, future in running.items():
            if not future.done():
                future.cancel()
                errors[shard] = Unavailable(f"index shard {shard} at {self.shards[shard].address}: "
                                            f"no answer within {timeout:.3g} s")
            elif (exc := future.exception()) is not None:
                if not isinstance(exc, Exception):
                    raise exc
                errors[shard] = exc
            else:
                answers[shard] = future.result()
        return answers, errors

    # -- search ------------------------------------------------------------------------------------

    def search(self, request: SearchRequest, remaining: float | None) -> SearchResult:
        many = SearchManyRequest([request.query], request.k, request.max_distance, request.label, request.rerank,
                                 request.rerank_candidates, request.filter, request.with_metadata,
                                 request.with_thumbnails)
        return self._search(many, remaining, single=True)[0]

    def search_many(self, request: SearchManyRequest, remaining: float | None) -> list[SearchResult]:
        """Every query answered exactly as :meth:`search` would, with one encoder call for the images
        and one search per shard for all the codes. A refused query refuses the call (the message
        names its position)."""
        n = len(request.queries)
        if not n:
            raise InvalidInput("no queries given")
        if n > self.limits.max_queries:
            raise ResourceExhausted(f"{n} queries in one call, limit {self.limits.max_queries}; "
                                    "send them in several calls")
        k = check_k(request.k, self.limits.max_k)
        if n * k > self.limits.max_hits:
            raise ResourceExhausted(f"{n} queries × k {k} = {n * k} hits in one call, limit {self.limits.max_hits}; "
                                    "send fewer queries per call or ask for a smaller k")
        return self._search(request, remaining, single=False)

    def _search(self, request: SearchManyRequest, remaining: float | None, single: bool) -> list[SearchResult]:
        """The queries, checked whole before any call, then resolved to codes and searched together."""
        def where(i: int) -> str:
            return "" if single else f"query {i}: "

        queries: list[Query] = []
        for i, query in enumerate(request.queries):
            if query is None:
                raise InvalidInput(f"{where(i)}the request has no query: set one of image, code or id")
            queries.append(query)
        k = check_k(request.k, self.limits.max_k)
        if request.rerank:
            for i, query in enumerate(queries):
                if not isinstance(query, ByImage):
                    raise InvalidInput(f"{where(i)}rerank needs an image query: it uses the query's real-valued u")
        for i, query in enumerate(queries):
            if isinstance(query, ByCode):
                try:
                    as_code_array([query.code], self.facts.bits, "code")
                except InvalidInput as exc:
                    raise InvalidInput(f"{where(i)}{exc}") from exc
            elif isinstance(query, ById):
                check_id(query.id, "searched for" if single else f"searched for by query {i}")
        if request.filter is not None:
            check_filter(request.filter)
        budget = self._budget(remaining)
        codes, encodings = self._resolve(queries, budget, single)
        shard_query = ShardQuery(
            codes=tuple(codes), k=k, bits=self.facts.bits, model_version=self.facts.version,
            max_distance=request.max_distance, label=request.label, filter=request.filter,
            with_metadata=request.with_metadata, with_thumbnails=request.with_thumbnails)
        if request.rerank:  # every query is an image (checked above), so every encoding is set
            shard_query = replace(shard_query, u=tuple(x for e in encodings if e is not None for x in e.u),
                                  candidates=rerank_pool(k, request.rerank_candidates, self.limits.max_k))
        answers, errors = self._fan_out(
            {shard: partial(s.search, shard_query) for shard, s in enumerate(self.shards)}, budget)
        for shard, lists in list(answers.items()):
            if len(lists) != len(queries):  # a broken shard: its answer cannot be merged
                errors[shard] = Unavailable(f"index shard {shard} answered {len(lists)} hit lists for "
                                            f"{len(queries)} query codes")
                del answers[shard]
        failed: list[int] = []
        for shard in sorted(errors):
            exc = errors[shard]
            if not isinstance(exc, Unavailable):
                raise exc  # the request is wrong: every shard would say so
            log.warning("shard %d failed: %s", shard, exc)
            failed.append(shard)
        if len(failed) == len(self.shards):
            raise Unavailable("every index shard failed; no results")
        self._searches.inc(len(queries))
        if failed:
            self._partial.inc(len(queries))
        order = sorted(answers)
        return [SearchResult(merge_topk([answers[shard][q] for shard in order], k, by_score=request.rerank),
                             encodings[q], self.facts.version, list(failed))
                for q in range(len(queries))]

    def _resolve(self, queries: Sequence[Query], budget: Budget, single: bool
                 ) -> tuple[list[bytes], list[Encoding | None]]:
        """Each query's code, and its encoding when it was an image: the stored codes of the ids with
        one Get per shard that holds any, the images with as few encoder calls as the byte limit allows."""
        codes: list[bytes] = [q.code if isinstance(q, ByCode) else b"" for q in queries]
        encodings: list[Encoding | None] = [None] * len(queries)
        groups = self._group(q.id for q in queries if isinstance(q, ById))
        if groups:
            answers, errors = self._fan_out(
                {shard: partial(self.shards[shard].get, ids) for shard, ids in groups.items()}, budget)
            if errors:
                raise errors[min(errors)]
            stored = {item.id: item.code for items in answers.values() for item in items}
            for i, query in enumerate(queries):
                if isinstance(query, ById):
                    if query.id not in stored:
                        raise NotFound(f"{'' if single else f'query {i}: '}no item with id {shown(query.id)}")
                    codes[i] = stored[query.id]
        images = {i: q.image for i, q in enumerate(queries) if isinstance(q, ByImage)}
        for batch in self._byte_batches(images):
            try:
                encoded = self.encoder.encode([images[i] for i in batch], budget.call_timeout())
            except OrbitHashError as exc:
                if single:
                    raise
                raise _about_queries(exc, batch) from exc
            for i, encoding in zip(batch, encoded, strict=True):
                codes[i], encodings[i] = encoding.code, encoding
        return codes, encodings

    def _byte_batches(self, images: dict[int, bytes]) -> list[list[int]]:
        """Query positions split so that no encoder call carries more than ``encode_bytes`` of images
        (one call for everything that fits; a single larger image goes alone)."""
        batches: list[list[int]] = []
        size = 0
        for i, image in images.items():
            if not batches or size + len(image) > self.limits.encode_bytes:
                batches.append([])
                size = 0
            batches[-1].append(i)
            size += len(image)
        return batches

    # -- reads by id -------------------------------------------------------------------------------

    def get(self, ids: Sequence[str], with_thumbnails: bool, remaining: float | None) -> GetResult:
        """Stored items (code, label, metadata, thumbnail if asked) in request order, with one call
        per shard that holds any of them; ids not stored are listed as missing."""
        self._check_id_count(len(ids), "ids")
        check_ids(ids)
        groups = self._group(ids)
        answers, errors = self._fan_out(
            {shard: partial(self.shards[shard].get, group, with_metadata=True, with_thumbnails=with_thumbnails)
             for shard, group in groups.items()}, self._budget(remaining))
        if errors:
            raise errors[min(errors)]
        found = {item.id: FoundItem(shard, item) for shard, items in answers.items() for item in items}
        return GetResult([found[i] for i in ids if i in found], [i for i in ids if i not in found])

    def _check_id_count(self, n: int, what: str) -> None:
        if not n:
            raise InvalidInput(f"no {what} given")
        if n > self.limits.max_ids:
            raise ResourceExhausted(f"{n} {what} in one call, limit {self.limits.max_ids}; send them in several calls")

    # -- writes ------------------------------------------------------------------------------------

    def ingest(self, items: Iterable[IngestItem], remaining: float | None) -> IngestSummary:
        """Store a stream of images: all of it is checked and encoded before the first write.

        Any refused item (id, label, duplicate id, undecodable image) refuses the whole stream
        and nothing is stored; the error names the item's position in the stream. Writes then go
        out in rounds of at most ``write_batch`` items per shard, each shard's round atomic. If a
        shard fails, no further round is sent and :class:`IngestIncomplete` says exactly what
        was stored. Storing replaces by id, so sending the same stream again is always safe.
        """
        budget = self._budget(remaining)
        staged: list[StoredItem] = []
        staged_bytes = 0
        position_of: dict[str, int] = {}
        batch: list[tuple[int, IngestItem]] = []
        batch_bytes = 0
        for position, item in enumerate(items):
            self._check_item(position, item, position_of)
            if batch and (len(batch) >= self.limits.ingest_batch
                          or batch_bytes + len(item.image) > self.limits.encode_bytes):
                staged_bytes = self._stage(staged, self._encode(batch, budget), staged_bytes)
                batch, batch_bytes = [], 0
            batch.append((position, item))
            batch_bytes += len(item.image)
        if batch:
            self._stage(staged, self._encode(batch, budget), staged_bytes)
        if not staged:
            raise InvalidInput("the ingest stream held no items")
        return self._write(staged, budget)

    def _stage(self, staged: list[StoredItem], encoded: list[StoredItem], held: int) -> int:
        """Keep encoded items until the writes; what the stream now holds, in bytes (codes and thumbnails)."""
        for item in encoded:
            held += len(item.code) + len(item.thumbnail)
            if held > self.limits.max_stream_bytes:
                raise ResourceExhausted(f"the stream's codes and thumbnails pass {self.limits.max_stream_bytes} "
                                        f"bytes at item {len(staged)}; send it as several streams "
                                        "(nothing was stored)")
            staged.append(item)
        return held

    def _check_item(self, position: int, item: IngestItem, position_of: dict[str, int]) -> None:
        if position >= self.limits.max_ingest_items:
            raise ResourceExhausted(f"the stream has more than {self.limits.max_ingest_items} items; "
                                    "send it as several streams (nothing was stored)")
        try:
            check_id(item.id, position)
        except InvalidInput as exc:
            raise InvalidInput(f"{exc}; nothing was stored") from exc
        earlier = position_of.setdefault(item.id, position)
        if earlier != position:
            raise InvalidInput(f"item {position}: id {shown(item.id)} was already given as item {earlier}; "
                               "each id may appear once per stream (nothing was stored)")
        classes = len(self.facts.class_names)
        if item.label is not None and not 0 <= item.label < classes:
            raise InvalidInput(f"item {position} (id {shown(item.id)}): label {item.label} is not a class of "
                               f"model {self.facts.version} (0..{classes - 1}; omit it to store the "
                               "predicted class); nothing was stored")
        if item.metadata is not None:
            try:
                check_scene(item.metadata, f"item {position} (id {shown(item.id)})")
            except InvalidInput as exc:
                raise InvalidInput(f"{exc}; nothing was stored") from exc

    def _encode(self, batch: list[tuple[int, IngestItem]], budget: Budget) -> list[StoredItem]:
        """Encode one batch; an error names the stream position of the image it is about."""
        try:
            encodings = self.encoder.encode([item.image for _, item in batch], budget.call_timeout(),
                                            thumbnail_size=self.limits.thumbnail_size)
        except OrbitHashError as exc:
            raise _about_stream(exc, batch) from exc
        for (position, item), enc in zip(batch, encodings, strict=True):  # what a shard would refuse, refused now
            try:
                check_thumbnail(enc.thumbnail, f"item {position} (id {shown(item.id)})")
            except InvalidInput as exc:
                raise InvalidInput(f"{exc} (lower the gateway's thumbnail_size); nothing was stored") from exc
        return [StoredItem(item.id, enc.code, enc.label if item.label is None else item.label, item.metadata,
                           enc.thumbnail)
                for (_, item), enc in zip(batch, encodings, strict=True)]

    def _write(self, staged: list[StoredItem], budget: Budget) -> IngestSummary:
        groups: dict[int, list[StoredItem]] = {}
        for item in staged:
            groups.setdefault(self._shard_of(item.id), []).append(item)
        summary = IngestSummary(received=len(staged), per_shard=[0] * len(self.shards))
        bits, version = self.facts.bits, self.facts.version
        for part in _rounds(groups, self.limits.write_batch):
            calls = {shard: partial(self.shards[shard].add, items, bits, version) for shard, items in part.items()}
            answers, errors = self._fan_out(calls, budget)
            for shard, written in answers.items():
                summary.ingested += written.added
                summary.replaced += written.replaced
                summary.per_shard[shard] += written.added
                self._ingested.inc(written.added)
            if errors:
                summary.failed_shards = sorted(errors)
                summary.uncertain_shards = sorted(s for s, exc in errors.items() if not _certainly_unwritten(exc))
                raise IngestIncomplete(self._incomplete(errors, summary), summary)
        return summary

    def _incomplete(self, errors: dict[int, Exception], summary: IngestSummary) -> OrbitHashError:
        first = min(errors)
        cause = errors[first]
        if not isinstance(cause, OrbitHashError):
            raise cause
        stored = ", ".join(f"shard {s}: {n}" for s, n in enumerate(summary.per_shard) if n) or "none"
        message = (f"stored {summary.ingested} of {summary.received} items for certain ({stored}); "
                   f"{_failed_writes(errors, 'stored')}; later rounds were not sent (shard {first}: {cause}). "
                   "Ingest replaces by id: send the stream again to finish")
        return type(cause)(message)

    def update_metadata(self, updates: Sequence[MetadataUpdate], remaining: float | None) -> UpdateResult:
        """Replace the metadata of stored items, one call per shard that holds any of them.

        The whole request is checked before the first write (ids, an id given twice); a refused
        request changed nothing. If a shard fails, the error says which shards applied their part.
        Replacing is idempotent: sending the same request again finishes the job.
        """
        self._check_id_count(len(updates), "updates")
        position_of: dict[str, int] = {}
        for position, update in enumerate(updates):
            check_id(update.id, position)
            earlier = position_of.setdefault(update.id, position)
            if earlier != position:
                raise InvalidInput(f"item {position}: id {shown(update.id)} was already given as item {earlier}; "
                                   "each id may appear once per request (nothing was changed)")
            try:
                check_scene(update.metadata, f"item {position} (id {shown(update.id)})")
            except InvalidInput as exc:
                raise InvalidInput(f"{exc}; nothing was changed") from exc
        groups: dict[int, list[MetadataUpdate]] = {}
        for update in updates:
            groups.setdefault(self._shard_of(update.id), []).append(update)
        answers, errors = self._fan_out(
            {shard: partial(self.shards[shard].update_metadata, group) for shard, group in groups.items()},
            self._budget(remaining))
        if errors:
            first = min(errors)
            cause = errors[first]
            if not isinstance(cause, OrbitHashError):
                raise cause
            done = ", ".join(f"shard {s}: {answers[s].updated}" for s in sorted(answers)) or "none"
            raise type(cause)(
                f"updated {sum(a.updated for a in answers.values())} of {len(updates)} items ({done}); "
                f"{_failed_writes(errors, 'changed')} (shard {first}: {cause}). Metadata is replaced whole: send "
                "the request again to finish")
        missing = {i for a in answers.values() for i in a.missing}
        return UpdateResult(sum(a.updated for a in answers.values()), [u.id for u in updates if u.id in missing])

    def delete(self, ids: Sequence[str], remaining: float | None) -> DeleteResult:
        if not ids:
            raise InvalidInput("no ids given")
        check_ids(ids)
        groups = self._group(ids)  # each id once: a repeat in a later round would find it gone, "missing"
        budget = self._budget(remaining)
        deleted = 0
        missing: dict[int, list[str]] = {shard: [] for shard in sorted(groups)}
        for part in _rounds(groups, self.limits.write_batch):  # a shard takes at most its max_batch ids per call
            answers, errors = self._fan_out({shard: partial(self.shards[shard].delete, group)
                                             for shard, group in part.items()}, budget)
            for shard, done in answers.items():
                deleted += done.deleted
                missing[shard] += done.missing
            if errors:
                first = min(errors)
                cause = errors[first]
                if not deleted or not isinstance(cause, OrbitHashError):
                    raise cause
                asked = sum(len(g) for g in groups.values())
                raise type(cause)(f"deleted {deleted} of {asked} ids for certain; later rounds were not sent "
                                  f"(shard {first}: {cause}). Deleting is safe to repeat: send the Delete again "
                                  "to finish") from cause
        return DeleteResult(deleted, [i for part in missing.values() for i in part])

    # -- info --------------------------------------------------------------------------------------

    def info(self, remaining: float | None) -> Info:
        """The model and every shard's item count; a shard that cannot answer is listed as unhealthy."""
        answers, errors = self._fan_out({shard: s.stats for shard, s in enumerate(self.shards)},
                                        self._budget(remaining))
        for exc in errors.values():
            if not isinstance(exc, OrbitHashError):
                raise exc
        unknown = ShardStats(0, False)
        return Info(self.facts, [ShardInfo(shard, s.address, answers.get(shard, unknown).count,
                                           answers.get(shard, unknown).ready)
                                 for shard, s in enumerate(self.shards)])


def _certainly_unwritten(exc: Exception) -> bool:
    """A shard write that failed without applying anything: refused before its Lua script (the
    request itself), or never sent. A call that broke off or timed out may have been applied."""
    return isinstance(exc, NotSent | InvalidInput | Mismatch | ResourceExhausted)


def _rounds(groups: dict[int, list[T]], step: int) -> Iterator[dict[int, list[T]]]:
    """Each shard's share in rounds of at most ``step``: round r holds items r·step.. of every shard
    that has them, so one failing round stops the writes with every earlier round known."""
    for start in range(0, max((len(g) for g in groups.values()), default=0), step):
        yield {shard: group[start:start + step] for shard, group in groups.items() if start < len(group)}


def _failed_writes(errors: dict[int, Exception], done: str) -> str:
    """Which failed shards certainly did not write their items and which may have (a call that
    broke off may have run its script): a person must not be told "not changed" when it was."""
    certain = [s for s in sorted(errors) if _certainly_unwritten(errors[s])]
    uncertain = [s for s in sorted(errors) if s not in certain]
    parts = []
    if certain:
        parts.append(f"shard(s) {', '.join(map(str, certain))} refused or could not be reached: their items "
                     f"were not {done}")
    if uncertain:
        parts.append(f"shard(s) {', '.join(map(str, uncertain))} broke off mid-write: their items may or may "
                     f"not be {done}")
    return "; ".join(parts)


_IMAGE_AT = re.compile(r"^image (\d+): ")


def _about_stream(exc: OrbitHashError, batch: list[tuple[int, IngestItem]]) -> OrbitHashError:
    """The encoder's error about "image i" of one call, told in stream positions."""
    first, last = batch[0][0], batch[-1][0]
    text = str(exc)
    match = _IMAGE_AT.match(text)
    if match and int(match.group(1)) < len(batch):
        position, item = batch[int(match.group(1))]
        where = f"item {position} (id {shown(item.id)}): {text[match.end():]}"
    else:
        where = f"items {first}..{last}: {text}"
    return type(exc)(f"{where}; nothing was stored")


def _about_queries(exc: OrbitHashError, batch: list[int]) -> OrbitHashError:
    """The encoder's error about "image i" of one call, told as the position of the query it came from."""
    text = str(exc)
    match = _IMAGE_AT.match(text)
    if match and int(match.group(1)) < len(batch):
        return type(exc)(f"query {batch[int(match.group(1))]}: {text[match.end():]}")
    return type(exc)(f"queries {', '.join(map(str, batch))}: {text}" if len(batch) <= 8 else
                     f"{len(batch)} image queries: {text}")
