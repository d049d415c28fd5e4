"""The gateway's data plane in-process, over fake shards and a fake encoder (pure logic, no gRPC)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

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
    SearchRequest,
    ShardQuery,
    ShardStats,
    StoredItem,
    Written,
)
from gateway.placement import shard_for
from orbithash import InvalidInput, Mismatch, NotFound, ResourceExhausted, Unavailable
from orbithash.bits import codes_to_pm1, pack_signs, unpack_codes
from orbithash.codes import rerank_pool
from orbithash.model_facts import ModelFacts

BITS = 12  # two bytes, four padding bits
FACTS = ModelFacts(name="m", version="v1", bits=BITS, class_names=("a", "b", "c"), input_size=32,
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Calls:
    """What a fake was asked: (method, clock at the call, timeout given)."""

    clock: Clock
    log: list[tuple[str, float, float]] = field(default_factory=list)

    def record(self, method: str, timeout: float) -> None:
        self.log.append((method, self.clock.now, timeout))

    def methods(self) -> list[str]:
        return [m for m, _, _ in self.log]


def u_of(image: bytes) -> tuple[float, ...]:
    """A deterministic real-valued hash output for an image."""
    seed = int.from_bytes(hashlib.blake2b(image, digest_size=8).digest(), "big")
    return tuple(float(x) for x in np.random.default_rng(seed).normal(size=BITS).astype(np.float32))


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
        self.batches: list[int] = []

    def encode(self, images: Sequence[bytes], timeout: float) -> list[Encoding]:
        self.calls.record("encode", timeout)
        self.calls.clock.now += self.seconds_per_call
        self.batches.append(len(images))
        if self.refuse is not None and self.refuse in images:
            raise InvalidInput(f"image {list(images).index(self.refuse)}: cannot decode")
        out = []
        for image in images:
            u = u_of(image)
            probs = (0.2, 0.3, 0.5)
            out.append(Encoding(code_of(u), u, probs, int(np.argmax(probs)), "c"))
        return out

    def model(self, timeout: float) -> ModelFacts:
        return FACTS


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
        self.ready = True
        self.fail_add_after = -1  # >= 0: the add calls after this many succeed fail with Unavailable

    @property
    def address(self) -> str:
        return f"shard-{self.shard}:1"

    def _enter(self, method: str, timeout: float) -> None:
        self.calls.record(f"{method}:{self.shard}", timeout)
        if self.sleep_s:
            time.sleep(self.sleep_s)
        if self.fail is not None:
            raise self.fail

    def search(self, query: ShardQuery, timeout: float) -> list[Hit]:
        self._enter("search", timeout)
        self.queries.append(query)
        found = [(distance(query.code, i.code), i) for i in self.items.values()
                 if query.label is None or i.label == query.label]
        found = [(d, i) for d, i in found if query.max_distance is None or d <= query.max_distance]
        found.sort(key=lambda di: (di[0], di[1].id))
        if not query.u:
            return [Hit(i.id, d, i.label, self.shard) for d, i in found[:query.k]]
        pool = [Hit(i.id, d, i.label, self.shard, score(query.u, i.code)) for d, i in found[:query.candidates]]
        return sorted(pool, key=lambda h: (h.score, h.id))[:query.k]

    def get(self, ids: Sequence[str], timeout: float) -> list[StoredItem]:
        self._enter("get", timeout)
        return [self.items[i] for i in ids if i in self.items]

    def add(self, items: Sequence[StoredItem], bits: int, model_version: str, timeout: float) -> Written:
        self._enter("add", timeout)
        if self.fail_add_after == 0:
            raise Unavailable(f"index shard {self.shard}: UNAVAILABLE Redis down")
        self.fail_add_after -= 1
        assert (bits, model_version) == (FACTS.bits, FACTS.version)
        replaced = sum(i.id in self.items for i in items)
        self.items.update((i.id, i) for i in items)
        return Written(len(items), replaced)

    def delete(self, ids: Sequence[str], timeout: float) -> DeleteResult:
        self._enter("delete", timeout)
        self.deleted.append(list(ids))
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
    clock = Clock()
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
    assert f"stored {summary.ingested} of 60 items" in str(raised.value.error)
    assert "send the stream again" in str(raised.value.error)
    c.shards[1].fail_add_after = -1
    again = c.gateway.ingest(iter(items), None)  # re-sending finishes the job
    assert again.ingested == 60 and again.replaced == summary.ingested and stored_count(c) == 60


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
