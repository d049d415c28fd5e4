"""The gateway's data plane in-process, over fake shards and a fake encoder (pure logic, no gRPC)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pytest
from prometheus_client import CollectorRegistry
from support.clock import ManualClock

from gateway.core import (
    ByCode,
    ById,
    ByImage,
    DeleteResult,
    Encoding,
    Gateway,
    Hit,
    IngestIncomplete,
    IngestItem,
    Limits,
    MetadataUpdate,
    SearchManyRequest,
    SearchRequest,
    ShardQuery,
    ShardStats,
    StoredItem,
    UpdateResult,
    Written,
)
from gateway.placement import shard_for
from orbithash import InvalidInput, Mismatch, NotFound, NotSent, ResourceExhausted, Unavailable
from orbithash.bits import codes_to_pm1, pack_signs, unpack_codes
from orbithash.codes import rerank_pool
from orbithash.metadata import MAX_THUMBNAIL_BYTES, Box, LonLat, SceneFilter, SceneMeta
from orbithash.model_facts import ModelFacts

BITS = 12  # two bytes, four padding bits
FACTS = ModelFacts(name="m", version="v1", bits=BITS, class_names=("a", "b", "c"), input_size=32,
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


@dataclass
class Calls:
    """What a fake was asked: (method, clock at the call, timeout given)."""

    clock: ManualClock
    log: list[tuple[str, float, float]] = field(default_factory=list)

    def record(self, method: str, timeout: float) -> None:
        self.log.append((method, self.clock.now, timeout))

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.log]


def u_of(image: bytes) -> tuple[float, ...]:
    """A deterministic real-valued hash output for an image."""
    seed = int.from_bytes(hashlib.blake2b(image, digest_size=8).digest(), "big")
    return tuple(float(x) for x in np.random.default_rng(seed).normal(size=BITS).astype(np.float32))


def thumb_of(image: bytes, size: int) -> bytes:
    """What the fake encoder returns as the thumbnail of an image: empty unless asked for."""
    return f"jpeg{size}:".encode() + image if size else b""


def code_of(u: Sequence[float]) -> bytes:
    return pack_signs(np.asarray([u]))[0].tobytes()


def distance(a: bytes, b: bytes) -> int:
    return int((unpack_codes(np.frombuffer(a, np.uint8), BITS) != unpack_codes(np.frombuffer(b, np.uint8), BITS)).sum())


def score(u: Sequence[float], code: bytes) -> float:
    return float(-(codes_to_pm1(np.frombuffer(code, np.uint8), BITS).astype(np.float64) @ np.asarray(u)))


class FakeEncoder:
    def __init__(self, calls: Calls, seconds_per_call: float = 0.0, refuse: bytes | None = None) -> None:
        self.calls = calls
        self.seconds_per_call = seconds_per_call  # moves the test clock: the call "takes" this long
        self.refuse = refuse
        self.huge_thumbnail: bytes | None = None  # the image whose thumbnail is over the shards' limit
        self.batches: list[int] = []
        self.thumbnail_sizes: list[int] = []

    def encode(self, images: Sequence[bytes], timeout: float, thumbnail_size: int = 0) -> list[Encoding]:
        self.calls.record("encode", timeout)
        self.calls.clock.now += self.seconds_per_call
        self.batches.append(len(images))
        self.thumbnail_sizes.append(thumbnail_size)
        if self.refuse is not None and self.refuse in images:
            raise InvalidInput(f"image {list(images).index(self.refuse)}: cannot decode")
        out = []
        for image in images:
            u = u_of(image)
            probs = (0.2, 0.3, 0.5)
            huge = image == self.huge_thumbnail
            thumb = b"\xff" * (MAX_THUMBNAIL_BYTES + 1) if huge else thumb_of(image, thumbnail_size)
            out.append(Encoding(code_of(u), u, probs, int(np.argmax(probs)), "c", thumb))
        return out

    def model(self, timeout: float) -> ModelFacts:
        return FACTS


def passes(meta: SceneMeta | None, wanted: SceneFilter) -> bool:
    """The fake shards' filter: sensors and attributes only (the real rules are orbithash.metadata's)."""
    meta = meta or SceneMeta()
    return ((not wanted.sensors or meta.sensor in wanted.sensors)
            and all(meta.attributes.get(k) == v for k, v in wanted.attributes.items()))


class FakeShard:
    """A shard that answers exactly, like the real one, or fails the way it is told to."""

    def __init__(self, shard: int, calls: Calls, fail: Exception | None = None, sleep_s: float = 0.0) -> None:
        self.shard = shard
        self.calls = calls
        self.fail = fail
        self.sleep_s = sleep_s  # real seconds: a shard that is late and ignores its timeout
        self.items: dict[str, StoredItem] = {}
        self.queries: list[ShardQuery] = []
        self.deleted: list[list[str]] = []
        self.gets: list[tuple[list[str], bool, bool]] = []
        self.updates: list[list[MetadataUpdate]] = []
        self.ready = True
        self.wrong_lists = False  # answer one hit list too many (a broken shard)
        self.fail_add_after = -1  # >= 0: the add calls after this many succeed fail with add_error
        self.add_error: Exception = Unavailable(f"index shard {shard}: UNAVAILABLE Socket closed")

    @property
    def address(self) -> str:
        return f"shard-{self.shard}:1"

    def _enter(self, method: str, timeout: float) -> None:
        self.calls.record(f"{method}:{self.shard}", timeout)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail is not None:
            raise self.fail

    def search(self, query: ShardQuery, timeout: float) -> list[list[Hit]]:
        self._enter("search", timeout)
        self.queries.append(query)
        us = [query.u[q * BITS:(q + 1) * BITS] for q in range(len(query.codes))] if query.u else [()] * len(query.codes)
        lists = [self._search_one(code, u, query) for code, u in zip(query.codes, us, strict=True)]
        return [*lists, []] if self.wrong_lists else lists

    def _search_one(self, code: bytes, u: Sequence[float], query: ShardQuery) -> list[Hit]:
        """The exact top-k of one code among the items that pass the label and the filter, with the
        metadata and thumbnail when asked for."""
        def hit(i: StoredItem, d: int, score: float = 0.0) -> Hit:
            return Hit(i.id, d, i.label, self.shard, score, i.metadata if query.with_metadata else None,
                       i.thumbnail if query.with_thumbnails else b"")

        passing = [i for i in self.items.values() if (query.label is None or i.label == query.label)
                   and (query.filter is None or passes(i.metadata, query.filter))]
        found = [(distance(code, i.code), i) for i in passing]
        found = [(d, i) for d, i in found if query.max_distance is None or d <= query.max_distance]
        found.sort(key=lambda di: (di[0], di[1].id))
        if not u:
            return [hit(i, d) for d, i in found[:query.k]]
        pool = [hit(i, d, score(u, i.code)) for d, i in found[:query.candidates]]
        return sorted(pool, key=lambda h: (h.score, h.id))[:query.k]

    def get(self, ids: Sequence[str], timeout: float, with_metadata: bool = False,
            with_thumbnails: bool = False) -> list[StoredItem]:
        self._enter("get", timeout)
        self.gets.append((list(ids), with_metadata, with_thumbnails))
        return [StoredItem(i.id, i.code, i.label, i.metadata if with_metadata else None,
                           i.thumbnail if with_thumbnails else b"")
                for i in (self.items[i] for i in ids if i in self.items)]

    def update_metadata(self, updates: Sequence[MetadataUpdate], timeout: float) -> UpdateResult:
        self._enter("update", timeout)
        self.updates.append(list(updates))
        missing = [u.id for u in updates if u.id not in self.items]
        for u in updates:
            if u.id in self.items:
                self.items[u.id] = replace(self.items[u.id], metadata=u.metadata)
        return UpdateResult(len(updates) - len(missing), missing)

    def add(self, items: Sequence[StoredItem], bits: int, model_version: str, timeout: float) -> Written:
        self._enter("add", timeout)
        if self.fail_add_after == 0:
            raise self.add_error
        self.fail_add_after -= 1
        assert (bits, model_version) == (FACTS.bits, FACTS.version)
        replaced = sum(i.id in self.items for i in items)
        self.items.update((i.id, i) for i in items)
        return Written(len(items), replaced)

    def delete(self, ids: Sequence[str], timeout: float) -> DeleteResult:
        self._enter("delete", timeout)
        self.deleted.append(list(ids))
        ids = list(dict.fromkeys(ids))  # each id once, as the real store answers
        gone = [i for i in ids if self.items.pop(i, None) is not None]
        return DeleteResult(len(gone), [i for i in ids if i not in gone])

    def stats(self, timeout: float) -> ShardStats:
        self._enter("stats", timeout)
        return ShardStats(len(self.items), self.ready)


@dataclass
class Cluster:
    gateway: Gateway
    encoder: FakeEncoder
    shards: list[FakeShard]
    calls: Calls
    registry: CollectorRegistry


def cluster(n: int = 3, limits: Limits | None = None, seconds_per_encode: float = 0.0) -> Cluster:
    clock = ManualClock(1000.0)
    calls = Calls(clock)
    encoder = FakeEncoder(calls, seconds_per_encode)
    shards = [FakeShard(s, calls) for s in range(n)]
    registry = CollectorRegistry()
    gateway = Gateway(encoder, shards, FACTS, limits or Limits(max_k=1000, timeout_s=10.0, ingest_batch=8),
                      registry, concurrency=2, clock=clock)
    return Cluster(gateway, encoder, shards, calls, registry)


def image(i: int) -> bytes:
    return f"image-{i}".encode()


def fill(c: Cluster, n: int = 200) -> dict[str, StoredItem]:
    """Ingest n items through the gateway; what each should be stored as."""
    items = [IngestItem(f"item-{i:04d}", image(i), i % 3 if i % 4 else None) for i in range(n)]
    summary = c.gateway.ingest(iter(items), remaining=None)
    assert summary.ingested == n and summary.replaced == 0
    return {i.id: StoredItem(i.id, code_of(u_of(i.image)), 2 if i.label is None else i.label) for i in items}


def oracle(stored: dict[str, StoredItem], query: bytes, k: int, max_distance: int | None = None,
           label: int | None = None) -> list[tuple[int, str]]:
    ranked = sorted((distance(query, s.code), s.id) for s in stored.values()
                    if label is None or s.label == label)
    return [(d, i) for d, i in ranked if max_distance is None or d <= max_distance][:k]


def random_code(rng: np.random.Generator) -> bytes:
    return code_of(rng.normal(size=BITS))


def test_search_by_code_is_the_exact_global_top_k() -> None:
    c = cluster()
    stored = fill(c)
    assert all(s.items for s in c.shards)
    rng = np.random.default_rng(0)
    for k, max_distance, label in [(1, None, None), (7, None, None), (50, None, None), (500, None, None),
                                   (30, 4, None), (30, None, 1), (200, 5, 0)]:
        query = random_code(rng)
        result = c.gateway.search(SearchRequest(ByCode(query), k, max_distance, label), remaining=None)
        assert [(h.distance, h.id) for h in result.hits] == oracle(stored, query, k, max_distance, label)
        assert not result.partial and result.query is None and result.model_version == FACTS.version
        assert all(h.shard == shard_for(h.id, 3) for h in result.hits)


def test_ties_are_ordered_by_id_across_shards() -> None:
    c = cluster()
    ids = ["b", "a", "d", "aa", "c", "ab", "e", "ba"]
    assert len({shard_for(i, 3) for i in ids}) > 1
    # every item gets the same image, hence the same code: all tie at distance 0
    c.gateway.ingest((IngestItem(i, image(0), 1) for i in ids), remaining=None)
    result = c.gateway.search(SearchRequest(ByImage(image(0)), k=len(ids)), remaining=None)
    assert [h.id for h in result.hits] == sorted(ids)
    assert {h.distance for h in result.hits} == {0}


def test_search_by_image_and_by_id_use_the_query_code() -> None:
    c = cluster()
    stored = fill(c, 60)
    by_image = c.gateway.search(SearchRequest(ByImage(image(5)), k=10), remaining=None)
    assert by_image.query is not None and by_image.query.code == stored["item-0005"].code
    assert [(h.distance, h.id) for h in by_image.hits] == oracle(stored, stored["item-0005"].code, 10)
    by_id = c.gateway.search(SearchRequest(ById("item-0005"), k=10), remaining=None)
    assert by_id.hits == by_image.hits and by_id.query is None
    assert c.calls.methods().count(f"get:{shard_for('item-0005', 3)}") == 1
    with pytest.raises(NotFound, match="never-stored"):
        c.gateway.search(SearchRequest(ById("never-stored"), k=10), remaining=None)


def test_rerank_sends_u_and_the_default_pool_and_orders_by_score() -> None:
    c = cluster()
    stored = fill(c, 90)
    k = 5
    result = c.gateway.search(SearchRequest(ByImage(image(7)), k, rerank=True), remaining=None)
    assert result.query is not None
    for shard in c.shards:
        assert shard.queries[-1].u == result.query.u
        assert shard.queries[-1].candidates == rerank_pool(k, 0, 1000)
    everything = c.gateway.search(SearchRequest(ByImage(image(7)), k, rerank=True, rerank_candidates=len(stored)),
                                  remaining=None)
    u = everything.query.u if everything.query else ()
    expected = sorted(stored, key=lambda i: (score(u, stored[i].code), i))[:k]
    assert [h.id for h in everything.hits] == expected


@pytest.mark.parametrize("query", [ByCode(b"\x00\x00"), ById("item-0001")])
def test_rerank_without_an_image_query_is_refused_before_any_call(query: ByCode | ById) -> None:
    c = cluster()
    with pytest.raises(InvalidInput, match="rerank needs an image query"):
        c.gateway.search(SearchRequest(query, k=3, rerank=True), remaining=None)
    assert c.calls.log == []


@pytest.mark.parametrize("k", [0, -1, 1001])
def test_k_out_of_range_is_refused(k: int) -> None:
    c = cluster()
    with pytest.raises(InvalidInput, match=r"k must be in 1\.\.1000"):
        c.gateway.search(SearchRequest(ByImage(b"x"), k=k), remaining=None)
    assert c.calls.log == []


@pytest.mark.parametrize(("query", "needle"), [
    (None, "the request has no query: set one of image, code or id"),
    (ByCode(b"\x00"), "1 bytes, a 12-bit code has 2"),
    (ByCode(b"\x00\x01"), "padding bits"),
    (ById(""), "non-empty"),
    (ById("x" * 300), "at most 256"),
])
def test_bad_queries_are_refused(query: ByCode | ById | None, needle: str) -> None:
    c = cluster()
    with pytest.raises(InvalidInput, match=needle):
        c.gateway.search(SearchRequest(query, k=3), remaining=None)
    assert c.calls.log == []


def test_a_shard_that_is_down_gives_a_partial_answer() -> None:
    c = cluster()
    stored = fill(c)
    c.shards[1].fail = Unavailable("index shard 1: UNAVAILABLE connection refused")
    query = random_code(np.random.default_rng(1))
    result = c.gateway.search(SearchRequest(ByCode(query), k=40), remaining=None)
    assert result.partial and result.failed_shards == [1]
    survivors = {i: s for i, s in stored.items() if shard_for(i, 3) != 1}
    assert [(h.distance, h.id) for h in result.hits] == oracle(survivors, query, 40)
    assert c.registry.get_sample_value("orbithash_gateway_partial_results_total") == 1


def test_a_shard_that_is_late_counts_as_failed() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=0.05, ingest_batch=8))
    fill(c, 30)
    c.shards[2].sleep_s = 1.0  # ignores its timeout
    started = time.monotonic()
    result = c.gateway.search(SearchRequest(ByCode(b"\x00\x00"), k=5), remaining=None)
    assert result.failed_shards == [2]
    assert time.monotonic() - started < 0.9


def test_every_shard_failing_is_unavailable() -> None:
    c = cluster()
    for shard in c.shards:
        shard.fail = Unavailable("down")
    with pytest.raises(Unavailable, match="every index shard failed"):
        c.gateway.search(SearchRequest(ByCode(b"\x00\x00"), k=5), remaining=None)


@pytest.mark.parametrize("error", [Mismatch("shard 2 holds 64-bit codes"), InvalidInput("k too large")])
def test_a_client_error_from_a_shard_passes_through(error: Exception) -> None:
    c = cluster()
    c.shards[0].fail = Unavailable("down")  # a failed shard does not hide the caller's error
    c.shards[2].fail = error
    with pytest.raises(type(error)) as raised:
        c.gateway.search(SearchRequest(ByCode(b"\x00\x00"), k=5), remaining=None)
    assert raised.value is error


def test_ingest_places_items_by_shard_for_and_batches_the_encoder() -> None:
    c = cluster()
    stored = fill(c, 50)
    for shard in c.shards:
        assert set(shard.items) == {i for i in stored if shard_for(i, 3) == shard.shard}
        assert all(shard.items[i] == stored[i] for i in shard.items)  # given label, else the predicted one
    assert c.encoder.batches == [8] * 6 + [2]
    again = c.gateway.ingest(iter([IngestItem("item-0001", image(1)), IngestItem("new", image(9))]), None)
    assert (again.ingested, again.replaced) == (2, 1)
    assert again.per_shard == [int(shard_for("item-0001", 3) == s) + int(shard_for("new", 3) == s) for s in range(3)]
    assert c.registry.get_sample_value("orbithash_gateway_ingested_items_total") == 52


def stored_count(c: Cluster) -> int:
    return sum(len(s.items) for s in c.shards)


@pytest.mark.parametrize(("bad", "error", "needle"), [
    (IngestItem("", image(99)), InvalidInput, "item 9: the id must be a non-empty string"),
    (IngestItem("x" * 257, image(99)), InvalidInput, r"item 9: the id 'x{40}'… \(257 chars\) has 257 bytes"),
    (IngestItem("ok-3", image(99)), InvalidInput, "item 9: id 'ok-3' was already given as item 3"),
    (IngestItem("new", image(99), 3), InvalidInput, r"item 9 \(id 'new'\): label 3 is not a class of model v1 \(0..2"),
    (IngestItem("new", image(99), -1), InvalidInput, "label -1 is not a class"),
])
def test_a_bad_item_anywhere_refuses_the_whole_stream_before_any_write(
        bad: IngestItem, error: type[Exception], needle: str) -> None:
    c = cluster()  # ingest_batch 8: the first 8 items are encoded before the bad one arrives
    items = [IngestItem(f"ok-{i}", image(i)) for i in range(9)] + [bad] + [IngestItem("z", image(50))]
    with pytest.raises(error, match=needle) as raised:
        c.gateway.ingest(iter(items), None)
    assert "nothing was stored" in str(raised.value)
    assert stored_count(c) == 0 and not [m for m in c.calls.methods() if m.startswith("add")]


def test_the_encoders_refusal_names_the_position_in_the_stream() -> None:
    c = cluster()
    c.encoder.refuse = image(10)
    with pytest.raises(InvalidInput, match=r"^item 10 \(id 'i-10'\): cannot decode; nothing was stored$"):
        c.gateway.ingest((IngestItem(f"i-{i}", image(i)) for i in range(12)), None)
    assert stored_count(c) == 0


def test_too_many_items_in_one_stream_are_refused_before_any_write() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, max_ingest_items=20))
    with pytest.raises(ResourceExhausted, match="more than 20 items; send it as several streams"):
        c.gateway.ingest((IngestItem(f"i-{i}", image(i)) for i in range(21)), None)
    assert stored_count(c) == 0
    assert c.gateway.ingest((IngestItem(f"i-{i}", image(i)) for i in range(20)), None).ingested == 20


def test_encoder_batches_respect_the_byte_limit() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, encode_bytes=100))
    sizes = [60, 30, 20, 100, 150, 1, 1]  # a batch closes before it would pass 100 bytes; a big image goes alone
    items = [IngestItem(f"i-{i}", bytes([i]) * n) for i, n in enumerate(sizes)]
    assert c.gateway.ingest(iter(items), None).ingested == len(sizes)
    assert c.encoder.batches == [2, 1, 1, 1, 2]  # (60 30) (20) (100) (150) (1 1)


def test_an_empty_stream_is_refused() -> None:
    with pytest.raises(InvalidInput, match="held no items"):
        cluster().gateway.ingest(iter([]), None)


def test_a_shard_failing_mid_ingest_is_told_with_exactly_what_was_stored() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, write_batch=5))
    c.shards[1].fail_add_after = 1  # its first round is stored, its second fails
    items = [IngestItem(f"item-{i:03d}", image(i)) for i in range(60)]
    with pytest.raises(IngestIncomplete) as raised:
        c.gateway.ingest(iter(items), None)
    summary = raised.value.summary
    assert isinstance(raised.value.error, Unavailable)
    assert summary.failed_shards == [1] and summary.received == 60
    assert summary.per_shard == [len(s.items) for s in c.shards]  # exactly what the shards hold
    assert summary.ingested == stored_count(c) == 5 * 3 + 5 * 2  # two rounds on 0 and 2, one on shard 1
    assert f"stored {summary.ingested} of 60 items for certain" in str(raised.value.error)
    assert "send the stream again" in str(raised.value.error)
    # the call broke off: the shard may have applied it, and the summary says it cannot know
    assert summary.uncertain_shards == [1] and "shard(s) 1 broke off mid-write" in str(raised.value.error)
    c.shards[1].fail_add_after = -1
    again = c.gateway.ingest(iter(items), None)  # re-sending finishes the job
    assert again.ingested == 60 and again.replaced == summary.ingested and stored_count(c) == 60


@pytest.mark.parametrize("error", [NotSent("index shard 1: UNAVAILABLE failed to connect to all addresses"),
                                   InvalidInput("item 0: bad"), Mismatch("shard 1 holds 64-bit codes")])
def test_a_shard_that_never_applied_its_write_is_certain(error: Exception) -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, write_batch=5))
    c.shards[1].fail_add_after, c.shards[1].add_error = 0, error
    with pytest.raises(IngestIncomplete) as raised:
        c.gateway.ingest((IngestItem(f"item-{i:03d}", image(i)) for i in range(30)), None)
    summary = raised.value.summary
    assert summary.failed_shards == [1] and summary.uncertain_shards == []
    assert "shard(s) 1 refused or could not be reached: their items were not stored" in str(raised.value.error)
    assert not c.shards[1].items


def test_delete_is_grouped_by_shard() -> None:
    c = cluster()
    stored = fill(c, 40)
    victims = [*sorted(stored)[::3], "never-there"]
    result = c.gateway.delete(victims, None)
    assert result.deleted == len(victims) - 1 and result.missing == ["never-there"]
    for shard in c.shards:
        mine = [v for v in victims if shard_for(v, 3) == shard.shard]
        assert shard.deleted == ([mine] if mine else [])
    with pytest.raises(InvalidInput, match="no ids given"):
        c.gateway.delete([], None)


def test_a_large_delete_goes_out_in_rounds_of_the_shards_batch() -> None:
    """A shard refuses more than its max_batch ids in one call (one Lua script blocks its Redis
    for every shard on it); the gateway sends a large Delete in rounds, as it does ingest's writes."""
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, write_batch=5))
    stored = fill(c, 40)
    victims = [*sorted(stored), "never-1", "never-2"]
    result = c.gateway.delete(victims, None)
    assert result.deleted == 40 and sorted(result.missing) == ["never-1", "never-2"]
    for shard in c.shards:
        mine = [v for v in victims if shard_for(v, 3) == shard.shard]
        assert [len(call) for call in shard.deleted] == [len(mine[a:a + 5]) for a in range(0, len(mine), 5)]
        assert [i for call in shard.deleted for i in call] == mine
    assert stored_count(c) == 0


def test_an_id_given_twice_is_deleted_once_even_across_rounds() -> None:
    """A repeat in a later round found the item already gone: counted deleted and listed missing."""
    c = cluster(1, limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, write_batch=2))
    fill(c, 5)
    result = c.gateway.delete(["item-0000", "item-0001", "item-0000", "never-there", "never-there"], None)
    assert result == DeleteResult(2, ["never-there"])
    assert c.shards[0].deleted == [["item-0000", "item-0001"], ["never-there"]]


def test_a_shard_failing_mid_delete_is_told_with_what_was_deleted() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, write_batch=5))
    stored = fill(c, 40)
    calls = 0
    real = c.shards[1].delete

    def second_round_fails(ids: Sequence[str], timeout: float) -> DeleteResult:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise Unavailable("index shard 1: UNAVAILABLE Socket closed")
        return real(ids, timeout)

    c.shards[1].delete = second_round_fails  # type: ignore[method-assign]
    with pytest.raises(Unavailable) as raised:
        c.gateway.delete(sorted(stored), None)
    gone = 40 - stored_count(c)
    assert f"deleted {gone} of 40 ids for certain" in str(raised.value)
    assert "Socket closed" in str(raised.value) and "send the Delete again" in str(raised.value)


def test_info_lists_every_shard_and_marks_a_failed_one() -> None:
    c = cluster()
    fill(c, 30)
    counts = [len(s.items) for s in c.shards]
    c.shards[2].fail = Unavailable("down")
    c.shards[1].ready = False  # answers, but cannot reach its Redis
    info = c.gateway.info(None)
    assert info.model == FACTS
    assert [(s.shard, s.count, s.healthy) for s in info.shards] == [(0, counts[0], True), (1, counts[1], False),
                                                                   (2, 0, False)]
    assert info.total == counts[0] + counts[1]
    assert info.shards[1].address == "shard-1:1"


def test_per_call_budgets_never_exceed_the_callers_remaining_time() -> None:
    c = cluster(seconds_per_encode=3.0, limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=4))
    clock = c.calls.clock
    for run in (lambda r: c.gateway.ingest((IngestItem(f"i-{i}", image(i)) for i in range(8)), r),
                lambda r: c.gateway.search(SearchRequest(ByImage(image(1)), k=3), r)):
        c.calls.log.clear()
        deadline = clock.now + 8.0
        run(8.0)  # each encoder call takes 3 s of the caller's 8
        assert c.calls.log and all(t <= deadline - now for _, now, t in c.calls.log)
    # 0.25 s of the caller's 8 are kept back for the gateway's own answer
    assert [(m[:6], t) for m, _, t in c.calls.log] == [("encode", 7.75)] + [("search", 4.75)] * 3
    # without a caller deadline each call gets the gateway's own timeout_s
    c.calls.log.clear()
    c.gateway.search(SearchRequest(ByImage(image(1)), k=3), None)
    assert {t for _, _, t in c.calls.log} == {10.0}


def test_budgets_are_capped_by_timeout_s_and_stay_positive() -> None:
    c = cluster(seconds_per_encode=3.0, limits=Limits(max_k=1000, timeout_s=2.0, ingest_batch=8))
    c.gateway.search(SearchRequest(ByImage(image(1)), k=3), remaining=60.0)
    assert {t for _, _, t in c.calls.log} == {2.0}
    c.calls.log.clear()
    c.gateway.search(SearchRequest(ByImage(image(1)), k=3), remaining=2.5)  # the encoder uses it all up
    shard_timeouts = {t for m, _, t in c.calls.log if m.startswith("search")}
    assert shard_timeouts and all(0 < t <= 0.01 for t in shard_timeouts)


def test_a_shard_late_past_the_callers_deadline_still_leaves_time_for_a_partial_answer() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8))
    fill(c, 30)
    c.gateway._clock = time.monotonic  # real time: the late shard really sleeps
    c.shards[1].sleep_s = 3.0  # stopped: never answers within the caller's deadline
    started = time.monotonic()
    result = c.gateway.search(SearchRequest(ByCode(b"\x00\x00"), k=5), remaining=1.0)
    took = time.monotonic() - started
    assert result.failed_shards == [1] and result.hits
    assert took < 0.97, f"answered after {took:.3f} s of the caller's 1 s: too late to reach it"


# -- SearchMany ------------------------------------------------------------------------------------


def mixed_queries(stored: dict[str, StoredItem], rng: np.random.Generator) -> list[ByImage | ByCode | ById]:
    return [ByImage(image(3)), ByCode(random_code(rng)), ById("item-0010"), ByImage(image(500)),
            ById("item-0041"), ByCode(stored["item-0007"].code), ByImage(image(3)), ById("item-0010")]


def test_search_many_makes_one_encoder_call_one_get_and_one_search_per_shard() -> None:
    c = cluster()
    stored = fill(c, 90)
    queries = mixed_queries(stored, np.random.default_rng(4))
    c.calls.log.clear()
    c.encoder.batches.clear()
    results = c.gateway.search_many(SearchManyRequest(queries, k=9), remaining=None)
    assert len(results) == len(queries)
    assert c.encoder.batches == [3]  # every image query in one call
    id_shards = {shard_for(i, 3) for i in ("item-0010", "item-0041")}
    assert sorted(m for m in c.calls.methods() if m.startswith("get")) == sorted(f"get:{s}" for s in id_shards)
    for shard in c.shards:
        assert c.calls.methods().count(f"search:{shard.shard}") == 1
        assert len(shard.queries[-1].codes) == len(queries) and shard.queries[-1].k == 9
        if shard.shard in id_shards:  # each id asked for once, even when two queries name it
            assert [ids for ids, _, _ in shard.gets][-1] == [i for i in ("item-0010", "item-0041")
                                                             if shard_for(i, 3) == shard.shard]


@pytest.mark.parametrize("options", [
    {}, {"max_distance": 4}, {"label": 1}, {"rerank": True}, {"rerank": True, "rerank_candidates": 90},
])
def test_search_many_answers_each_query_exactly_like_search(options: dict[str, object]) -> None:
    c = cluster()
    stored = fill(c, 90)
    rng = np.random.default_rng(5)
    queries = ([ByImage(image(i)) for i in (1, 2, 300, 2)] if options.get("rerank")
               else mixed_queries(stored, rng))
    many = c.gateway.search_many(SearchManyRequest(queries, k=12, **options), remaining=None)  # type: ignore[arg-type]
    one_by_one = [c.gateway.search(SearchRequest(q, k=12, **options), remaining=None)  # type: ignore[arg-type]
                  for q in queries]
    assert many == one_by_one
    assert all(r.hits for r in many)


def test_search_many_with_a_shard_down_is_partial_for_every_query() -> None:
    c = cluster()
    stored = fill(c)
    c.shards[2].fail = Unavailable("index shard 2: UNAVAILABLE connection refused")
    codes = [random_code(np.random.default_rng(s)) for s in range(4)]
    results = c.gateway.search_many(SearchManyRequest([ByCode(q) for q in codes], k=20), remaining=None)
    survivors = {i: s for i, s in stored.items() if shard_for(i, 3) != 2}
    for code, result in zip(codes, results, strict=True):
        assert result.partial and result.failed_shards == [2]
        assert [(h.distance, h.id) for h in result.hits] == oracle(survivors, code, 20)
    assert c.registry.get_sample_value("orbithash_gateway_partial_results_total") == 4


def test_a_shard_answering_the_wrong_number_of_hit_lists_counts_as_failed() -> None:
    c = cluster()
    fill(c, 30)
    c.shards[0].wrong_lists = True
    results = c.gateway.search_many(SearchManyRequest([ByCode(b"\x00\x00"), ByCode(b"\x10\x00")], k=5), None)
    assert [r.failed_shards for r in results] == [[0], [0]]


@pytest.mark.parametrize(("queries", "options", "error", "needle"), [
    ([], {}, InvalidInput, "no queries given"),
    ([ByCode(b"\x00\x00")] * 11, {}, ResourceExhausted, "11 queries in one call, limit 10"),
    ([ByCode(b"\x00\x00")] * 6, {"k": 9}, ResourceExhausted, "6 queries × k 9 = 54 hits in one call, limit 50"),
    ([ByCode(b"\x00\x00")], {"k": 0}, InvalidInput, r"k must be in 1\.\.1000"),
    ([ByCode(b"\x00\x00"), None], {}, InvalidInput, "^query 1: the request has no query"),
    ([ByImage(b"x"), ByCode(b"\x00\x00")], {"rerank": True}, InvalidInput, "^query 1: rerank needs an image query"),
    ([ById("a"), ByCode(b"\x00")], {}, InvalidInput, "^query 1: code 0: 1 bytes, a 12-bit code has 2"),
    ([ByImage(b"x"), ById("")], {}, InvalidInput, "^item searched for by query 1: the id must be a non-empty"),
])
def test_a_refused_query_refuses_search_many_before_any_call(
        queries: list[ByImage | ByCode | ById | None], options: dict[str, object], error: type[Exception],
        needle: str) -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, max_queries=10, max_hits=50))
    with pytest.raises(error, match=needle):
        c.gateway.search_many(SearchManyRequest(queries, **{"k": 3, **options}), remaining=None)  # type: ignore[arg-type]
    assert c.calls.log == []


def test_search_many_names_the_query_of_a_missing_id_or_a_bad_image() -> None:
    c = cluster()
    fill(c, 20)
    with pytest.raises(NotFound, match=r"^query 2: no item with id 'gone'$"):
        c.gateway.search_many(SearchManyRequest([ById("item-0001"), ByImage(image(1)), ById("gone")], k=3), None)
    c.encoder.refuse = image(7)
    with pytest.raises(InvalidInput, match=r"^query 3: cannot decode$"):
        c.gateway.search_many(SearchManyRequest([ByImage(image(1)), ByCode(b"\x00\x00"), ByImage(image(2)),
                                                 ByImage(image(7))], k=3), None)


def test_search_many_images_split_only_at_the_encoders_byte_limit() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=2, encode_bytes=100))
    fill(c, 10)
    c.encoder.batches.clear()
    images = [bytes([i]) * n for i, n in enumerate([60, 30, 20, 100, 1, 2])]
    results = c.gateway.search_many(SearchManyRequest([ByImage(i) for i in images], k=3), None)
    assert c.encoder.batches == [2, 1, 1, 2]  # (60 30) (20) (100) (1 2): ingest_batch does not apply
    assert [r.query.code if r.query else None for r in results] == [code_of(u_of(i)) for i in images]


# -- filters, metadata and thumbnails --------------------------------------------------------------


def fill_with_metadata(c: Cluster, n: int = 60) -> dict[str, StoredItem]:
    items = [IngestItem(f"item-{i:04d}", image(i), None,
                        SceneMeta(sensor="MSI" if i % 3 else "SAR", attributes={"n": str(i)})) for i in range(n)]
    c.gateway.ingest(iter(items), remaining=None)
    return {i.id: StoredItem(i.id, code_of(u_of(i.image)), 2, i.metadata) for i in items}


def test_ingest_passes_metadata_to_the_shards_and_asks_for_no_thumbnails_by_default() -> None:
    c = cluster()
    stored = fill_with_metadata(c, 30)
    for shard in c.shards:
        for item_id, item in shard.items.items():
            assert item == stored[item_id] and item.thumbnail == b""
    assert set(c.encoder.thumbnail_sizes) == {0}


def test_ingest_stores_the_thumbnails_the_encoder_made_in_the_same_call() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, thumbnail_size=96))
    fill(c, 20)
    assert c.encoder.batches == [8, 8, 4] and c.encoder.thumbnail_sizes == [96, 96, 96]
    for shard in c.shards:
        for item_id, item in shard.items.items():
            assert item.thumbnail == thumb_of(image(int(item_id[-4:])), 96)
    c.encoder.thumbnail_sizes.clear()
    c.gateway.search(SearchRequest(ByImage(image(1)), k=3), None)
    assert c.encoder.thumbnail_sizes == [0]  # a query's image needs no thumbnail


def test_a_stream_holding_too_many_thumbnail_bytes_is_refused_before_any_write() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=4, thumbnail_size=8, max_stream_bytes=150))
    items = [IngestItem(f"i-{i}", image(i)) for i in range(12)]  # 2 + 13 bytes each (items 10, 11: 2 + 14)
    with pytest.raises(ResourceExhausted, match="pass 150 bytes at item 10; send it as several streams"):
        c.gateway.ingest(iter(items), None)
    assert stored_count(c) == 0 and not [m for m in c.calls.methods() if m.startswith("add")]


def test_search_sends_the_filter_and_flags_to_every_shard_and_returns_what_they_hold() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, thumbnail_size=16))
    stored = fill_with_metadata(c, 60)
    wanted = SceneFilter(sensors=frozenset({"SAR"}))
    query = random_code(np.random.default_rng(9))
    result = c.gateway.search(SearchRequest(ByCode(query), k=8, filter=wanted, with_metadata=True,
                                            with_thumbnails=True), None)
    for shard in c.shards:
        last = shard.queries[-1]
        assert last.filter is wanted and last.with_metadata and last.with_thumbnails
    sar = {i: s for i, s in stored.items() if s.metadata and s.metadata.sensor == "SAR"}
    assert [(h.distance, h.id) for h in result.hits] == oracle(sar, query, 8)
    assert all(h.metadata == stored[h.id].metadata and h.thumbnail.startswith(b"jpeg16:") for h in result.hits)
    bare = c.gateway.search(SearchRequest(ByCode(query), k=8), None)
    assert all(h.metadata is None and h.thumbnail == b"" for h in bare.hits)
    many = c.gateway.search_many(SearchManyRequest([ByCode(query)], k=8, filter=wanted, with_metadata=True,
                                                   with_thumbnails=True), None)
    assert many == [result]


# -- Get and UpdateMetadata ------------------------------------------------------------------------


def test_get_asks_each_shard_once_and_answers_in_request_order() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, thumbnail_size=16))
    stored = fill_with_metadata(c, 40)
    ids = ["item-0031", "nope", "item-0002", "item-0017", "item-0002", "item-0005"]
    c.calls.log.clear()
    result = c.gateway.get(ids, with_thumbnails=False, remaining=None)
    assert [f.item.id for f in result.items] == ["item-0031", "item-0002", "item-0017", "item-0002", "item-0005"]
    assert result.missing == ["nope"]
    assert all(f.shard == shard_for(f.item.id, 3) for f in result.items)
    assert all(f.item.metadata == stored[f.item.id].metadata and f.item.thumbnail == b"" for f in result.items)
    assert all(f.item.code == stored[f.item.id].code for f in result.items)
    asked = sorted(m for m in c.calls.methods())
    assert asked == sorted(f"get:{s}" for s in {shard_for(i, 3) for i in ids})
    for shard in c.shards:
        for got, with_metadata, with_thumbnails in shard.gets:
            assert len(got) == len(set(got)) and with_metadata and not with_thumbnails
    thumbs = c.gateway.get(["item-0003"], with_thumbnails=True, remaining=None)
    assert thumbs.items[0].item.thumbnail == thumb_of(image(3), 16)


@pytest.mark.parametrize(("ids", "error", "needle"), [
    ([], InvalidInput, "no ids given"),
    (["a", ""], InvalidInput, "item 1: the id must be a non-empty string"),
    ([f"i-{i}" for i in range(6)], ResourceExhausted, "6 ids in one call, limit 5"),
])
def test_a_refused_get_asks_no_shard(ids: list[str], error: type[Exception], needle: str) -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, max_ids=5))
    with pytest.raises(error, match=needle):
        c.gateway.get(ids, with_thumbnails=False, remaining=None)
    assert c.calls.log == []


def test_get_with_a_shard_down_fails_with_its_error() -> None:
    c = cluster()
    fill(c, 30)
    ids = sorted(c.shards[1].items)[:2] + sorted(c.shards[0].items)[:2]
    c.shards[1].fail = Unavailable("index shard 1: UNAVAILABLE connection refused")
    with pytest.raises(Unavailable, match="index shard 1"):
        c.gateway.get(ids, with_thumbnails=False, remaining=None)


def test_update_metadata_is_grouped_by_shard_and_reports_the_missing_in_request_order() -> None:
    c = cluster()
    stored = fill_with_metadata(c, 40)
    updates = [MetadataUpdate("item-0033", SceneMeta(sensor="OLI")), MetadataUpdate("gone-1", SceneMeta(sensor="x")),
               MetadataUpdate("item-0004", SceneMeta()), MetadataUpdate("item-0012", SceneMeta(sensor="OLI")),
               MetadataUpdate("gone-0", SceneMeta())]
    c.calls.log.clear()
    result = c.gateway.update_metadata(updates, None)
    assert result.updated == 3 and result.missing == ["gone-1", "gone-0"]
    assert sorted(c.calls.methods()) == sorted(f"update:{s}" for s in {shard_for(u.id, 3) for u in updates})
    for shard in c.shards:
        assert shard.updates == ([[u for u in updates if shard_for(u.id, 3) == shard.shard]]
                                 if any(shard_for(u.id, 3) == shard.shard for u in updates) else [])
    got = {f.item.id: f.item.metadata for f in c.gateway.get(list(stored), False, None).items}
    assert got["item-0033"] == SceneMeta(sensor="OLI") and got["item-0004"] == SceneMeta()
    assert got["item-0005"] == stored["item-0005"].metadata


NEW = MetadataUpdate("item-0001", SceneMeta(sensor="new"))


@pytest.mark.parametrize(("updates", "error", "needle"), [
    ([], InvalidInput, "no updates given"),
    ([NEW, MetadataUpdate("", NEW.metadata)], InvalidInput, "item 1: the id must be a non-empty"),
    ([NEW, MetadataUpdate("x" * 300, NEW.metadata)], InvalidInput, "item 1: the id 'x{40}'…"),
    ([NEW, MetadataUpdate("item-0002", NEW.metadata), MetadataUpdate("item-0001", SceneMeta())],
     InvalidInput, r"item 2: id 'item-0001' was already given as item 0; .*\(nothing was changed\)"),
    ([NEW, MetadataUpdate("item-0002", SceneMeta(center=LonLat(200.0, 0.0)))], InvalidInput,
     r"^item 1 \(id 'item-0002'\): center longitude 200\.0 is outside -180\.\.180; nothing was changed$"),
    ([NEW, MetadataUpdate("item-0003", SceneMeta(attributes={"k": "v" * 300}))], InvalidInput,
     r"^item 1 \(id 'item-0003'\): attribute 'k' 'v{40}'… \(300 chars\) has 300 bytes"),
    ([MetadataUpdate(f"i-{i}", SceneMeta()) for i in range(6)], ResourceExhausted, "6 updates in one call, limit 5"),
])
def test_a_refused_update_changes_nothing(updates: list[MetadataUpdate], error: type[Exception],
                                          needle: str) -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=8, max_ids=5))
    stored = fill_with_metadata(c, 10)
    c.calls.log.clear()
    with pytest.raises(error, match=needle):
        c.gateway.update_metadata(updates, None)
    assert c.calls.log == []
    assert all(s.items[i].metadata == stored[i].metadata for s in c.shards for i in s.items)


def test_a_shard_failing_an_update_is_told_with_what_was_changed() -> None:
    c = cluster()
    fill_with_metadata(c, 30)
    ids = [sorted(s.items)[0] for s in c.shards]
    c.shards[1].fail = Unavailable("index shard 1: UNAVAILABLE Redis down")
    with pytest.raises(Unavailable) as raised:
        c.gateway.update_metadata([MetadataUpdate(i, SceneMeta(sensor="new")) for i in ids], None)
    message = str(raised.value)
    assert message.startswith("updated 2 of 3 items (shard 0: 1, shard 2: 1); shard(s) 1 broke off")
    assert "send the request again" in message
    assert [s.items[i].metadata for s, i in zip(c.shards, ids, strict=True)][::2] == [SceneMeta(sensor="new")] * 2


def test_an_update_that_may_have_been_applied_is_not_called_unchanged() -> None:
    """A call that broke off may have run its script (as ingest's writes are told apart)."""
    c = cluster()
    fill_with_metadata(c, 30)
    ids = [sorted(s.items)[0] for s in c.shards]
    c.shards[1].fail = NotSent("index shard 1: UNAVAILABLE failed to connect to all addresses")
    c.shards[2].fail = Unavailable("index shard 2: UNAVAILABLE Socket closed")
    with pytest.raises(Unavailable) as raised:
        c.gateway.update_metadata([MetadataUpdate(i, SceneMeta(sensor="new")) for i in ids], None)
    message = str(raised.value)
    assert message.startswith("updated 1 of 3 items (shard 0: 1); shard(s) 1 refused or could not be reached: "
                              "their items were not changed; shard(s) 2 broke off mid-write: their items may or "
                              "may not be changed (shard 1: ")


def test_bad_metadata_anywhere_refuses_the_whole_stream_before_any_write() -> None:
    c = cluster()  # ingest_batch 8: the first 8 items are encoded before the bad one arrives
    items = [IngestItem(f"ok-{i}", image(i), None, SceneMeta(sensor="MSI")) for i in range(9)]
    items += [IngestItem("bad", image(9), None, SceneMeta(footprint=Box(10.0, 5.0, 11.0, 4.0))),
              IngestItem("z", image(50))]
    with pytest.raises(InvalidInput, match=r"^item 9 \(id 'bad'\): footprint south 5\.0 is greater than its north "
                                           r"4\.0; nothing was stored$"):
        c.gateway.ingest(iter(items), None)
    assert stored_count(c) == 0 and not [m for m in c.calls.methods() if m.startswith("add")]


def test_a_thumbnail_a_shard_would_refuse_refuses_the_stream_before_any_write() -> None:
    c = cluster(limits=Limits(max_k=1000, timeout_s=10.0, ingest_batch=4, thumbnail_size=1024))
    c.encoder.huge_thumbnail = image(6)
    with pytest.raises(InvalidInput, match=r"^item 6 \(id 'i-6'\): the thumbnail has 262145 bytes, at most 262144 "
                                           r"are allowed \(lower the gateway's thumbnail_size\); nothing was stored$"):
        c.gateway.ingest((IngestItem(f"i-{i}", image(i)) for i in range(10)), None)
    assert stored_count(c) == 0


@pytest.mark.parametrize("query", [ByImage(b"x"), ByCode(b"\x00\x00"), ById("item-0001")])
def test_a_bad_filter_is_refused_before_any_call(query: ByImage | ByCode | ById) -> None:
    c = cluster()
    bad = SceneFilter(center_within=Box(0.0, 10.0, 1.0, -10.0))
    with pytest.raises(InvalidInput, match=r"^filter: center_within south 10\.0 is greater than its north -10\.0$"):
        c.gateway.search(SearchRequest(query, k=3, filter=bad), None)
    with pytest.raises(InvalidInput, match=r"^filter: center_within south"):
        c.gateway.search_many(SearchManyRequest([query], k=3, filter=bad), None)
    assert c.calls.log == []
