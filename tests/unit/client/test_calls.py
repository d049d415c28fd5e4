"""The client's call policy over a scripted stub (pure logic: no server, no sockets).

What the gateway answers is tested against the real cluster in tests/integration/client; here only
what the client itself decides: retries and backoff, deadlines, errors, batching and summaries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from gateway.servicer import INGEST_SUMMARY_KEY
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_client import (
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    Item,
    Metadata,
    NotFound,
    OrbitHashClient,
    OrbitHashClientError,
    Query,
    ResourceExhausted,
    Retry,
    Unavailable,
)
from orbithash_client import client as client_module
from orbithash_client.errors import error_for


class FailedCall(grpc.RpcError, grpc.Call):
    """What a blocking stub raises: an RpcError that is also a finished Call."""

    def __init__(self, code: grpc.StatusCode, details: str = "", trailing: tuple[tuple[str, bytes], ...] = ()) -> None:
        self._code, self._details, self._trailing = code, details, trailing

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> None:
        return None

    def trailing_metadata(self) -> tuple[tuple[str, bytes], ...]:
        return self._trailing

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[..., Any]) -> bool:
        return False


def unavailable(summary: pb.IngestSummary | None = None) -> FailedCall:
    trailing = ((INGEST_SUMMARY_KEY, summary.SerializeToString()),) if summary is not None else ()
    return FailedCall(grpc.StatusCode.UNAVAILABLE, "index shard 1: UNAVAILABLE Redis down", trailing)


class ScriptedStub:
    """Answers each method from a script: a list of replies or exceptions, consumed in order; the
    last entry repeats. Records every call: (method, request, timeout, metadata)."""

    def __init__(self, **scripts: list[Any]) -> None:
        self.scripts = scripts
        self.calls: list[tuple[str, Any, float, tuple[tuple[str, str], ...]]] = []

    def __getattr__(self, method: str) -> Callable[..., Any]:
        def call(request: Any, timeout: float, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
            if method == "Ingest":
                request = list(request)  # a stream: what was sent
            self.calls.append((method, request, timeout, metadata))
            script = self.scripts[method]
            answer = script.pop(0) if len(script) > 1 else script[0]
            if isinstance(answer, Exception):
                raise answer
            return answer(request) if callable(answer) else answer
        return call

    def sent(self, method: str) -> list[Any]:
        return [request for m, request, _, _ in self.calls if m == method]


@pytest.fixture()
def sleeps() -> list[float]:
    return []


def client_with(stub: ScriptedStub, sleeps: list[float], retries: int = 3, **kwargs: Any) -> OrbitHashClient:
    retry = Retry(retries=retries, backoff_s=0.2, multiplier=2.0, max_backoff_s=5.0, jitter=0.5,
                  sleep=sleeps.append, random=lambda: 0.0)
    client = OrbitHashClient("127.0.0.1:1", retries=retry, **kwargs)
    client._stub = stub  # type: ignore[assignment]
    return client


INFO = pb.InfoResponse(model=pb.ModelInfo(name="m", version="v1", bits=32, class_names=["a"], input_size=224),
                       shards=[pb.ShardInfo(shard=0, address="s:0", count=5, healthy=True)], total=5)


# -- errors and retries ----------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "kind"), [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidArgument), (grpc.StatusCode.NOT_FOUND, NotFound),
    (grpc.StatusCode.FAILED_PRECONDITION, FailedPrecondition), (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
    (grpc.StatusCode.UNAVAILABLE, Unavailable), (grpc.StatusCode.DEADLINE_EXCEEDED, DeadlineExceeded),
    (grpc.StatusCode.INTERNAL, Internal), (grpc.StatusCode.UNKNOWN, Internal),
    (grpc.StatusCode.CANCELLED, OrbitHashClientError),
])
def test_each_status_becomes_its_exception_with_the_servers_message(
        code: grpc.StatusCode, kind: type[Exception], sleeps: list[float]) -> None:
    stub = ScriptedStub(Info=[FailedCall(code, "item 3 (id 'x'): cannot decode")])
    with pytest.raises(kind) as raised:
        client_with(stub, sleeps, retries=0).info()
    assert type(raised.value) is kind and raised.value.code == code
    assert str(raised.value) == raised.value.message == "item 3 (id 'x'): cannot decode"
    assert raised.value.summary is None
    assert isinstance(error_for(code, ""), OrbitHashClientError) and str(error_for(code, "")) == code.name


def test_unavailable_is_sent_again_with_exponential_backoff(sleeps: list[float]) -> None:
    stub = ScriptedStub(Info=[unavailable(), unavailable(), INFO])
    client = client_with(stub, sleeps, metadata=(("authorization", "Bearer t"),), timeout=20.0)
    info = client.info()
    assert info.total == 5 and info.model.class_names == ("a",) and info.shards[0].healthy
    assert sleeps == [0.2, 0.4]
    assert len(stub.calls) == 3
    assert all(0 < timeout <= 20.0 and metadata == (("authorization", "Bearer t"),)
               for _, _, timeout, metadata in stub.calls)


def request_ids(stub: ScriptedStub, method: str) -> list[str]:
    return [dict(metadata).get("orbithash-request-id", "") for name, _, _, metadata in stub.calls if name == method]


def test_every_try_of_one_write_carries_the_same_request_id(sleeps: list[float]) -> None:
    """So that the gateway answers a try sent after a lost reply with the first try's reply,
    instead of running the write again ("missing" for the ids the first try deleted)."""
    stub = ScriptedStub(Delete=[unavailable(), pb.DeleteResponse(deleted=1), pb.DeleteResponse(deleted=1)],
                        UpdateMetadata=[unavailable(), pb.UpdateMetadataResponse(updated=1)],
                        Ingest=[unavailable(), summary_of], Info=[INFO])
    client = client_with(stub, sleeps)
    client.delete(["a"])
    client.delete(["b"])
    first, again, other = request_ids(stub, "Delete")
    assert first == again and first != other and len(first) == 32
    client.update_metadata({"a": Metadata(sensor="MSI")})
    assert len(set(request_ids(stub, "UpdateMetadata"))) == 1
    client.ingest([Item(f"i-{i}", b"x") for i in range(3)], batch_size=2)
    tries = request_ids(stub, "Ingest")
    assert len(tries) == 3 and tries[0] == tries[1] != tries[2] and all(tries)
    client.info()
    assert request_ids(stub, "Info") == [""]  # reads need none


@pytest.mark.parametrize("code", [grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INTERNAL])
def test_nothing_but_unavailable_is_retried(code: grpc.StatusCode, sleeps: list[float]) -> None:
    stub = ScriptedStub(Delete=[FailedCall(code, "no"), pb.DeleteResponse()])
    with pytest.raises(OrbitHashClientError):
        client_with(stub, sleeps).delete(["a"])
    assert len(stub.calls) == 1 and sleeps == []


def test_retries_end_after_the_last_one(sleeps: list[float]) -> None:
    stub = ScriptedStub(Get=[unavailable()])
    with pytest.raises(Unavailable, match="Redis down"):
        client_with(stub, sleeps, retries=2).get(["a"])
    assert len(stub.calls) == 3 and sleeps == [0.2, 0.4]


def test_no_retry_when_the_wait_would_pass_the_deadline(sleeps: list[float]) -> None:
    stub = ScriptedStub(Info=[unavailable(), INFO])
    with pytest.raises(Unavailable):
        client_with(stub, sleeps).info(timeout=0.1)  # the first wait (0.2 s) does not fit
    assert len(stub.calls) == 1 and sleeps == []


def test_backoff_grows_to_its_cap_with_jitter_below_it() -> None:
    retry = Retry(retries=5, backoff_s=0.1, multiplier=2.0, max_backoff_s=0.5, jitter=0.5, random=lambda: 1.0)
    assert list(retry.delays()) == [0.05, 0.1, 0.2, 0.25, 0.25]
    assert list(Retry.none().delays()) == []
    with pytest.raises(ValueError, match="jitter"):
        Retry(jitter=2.0)
    with pytest.raises(TypeError, match="retries must be an int or a Retry"):
        OrbitHashClient("x:1", retries=1.5)  # type: ignore[arg-type]


# -- ingest ----------------------------------------------------------------------------------------


def summary_of(stream: list[pb.IngestItem], replaced: int = 0) -> pb.IngestSummary:
    return pb.IngestSummary(received=len(stream), ingested=len(stream), replaced=replaced, per_shard=[len(stream), 0])


def test_ingest_streams_one_batch_per_call_and_names_items(tmp_path: Path, sleeps: list[float]) -> None:
    (tmp_path / "scene-7.tif").write_bytes(b"tiff-7")
    meta = Metadata(sensor="MSI")
    items = [Item("a", b"img-a", 2, meta), b"raw-bytes", tmp_path / "scene-7.tif", str(tmp_path / "scene-7.tif"),
             Item("b", tmp_path / "scene-7.tif")]
    stub = ScriptedStub(Ingest=[summary_of])
    seen: list[tuple[int, int]] = []
    client = client_with(stub, sleeps, ingest_timeout=99.0)
    with pytest.raises(InvalidArgument, match="item 3: id 'scene-7' was already given as item 2") as raised:
        client.ingest(items, batch_size=2, progress=lambda s: seen.append((s.ingested, s.completed)))
    assert raised.value.summary is not None and raised.value.summary.completed == 2
    assert [[m.id for m in s] for s in stub.sent("Ingest")] == [["a", hashlib.sha256(b"raw-bytes").hexdigest()[:32]]]
    stub.calls.clear()
    summary = client.ingest([items[i] for i in (0, 1, 2, 4)], batch_size=3,
                            progress=lambda s: seen.append((s.ingested, s.completed)))
    streams = stub.sent("Ingest")
    assert [len(s) for s in streams] == [3, 1]
    first = streams[0][0]
    assert (first.label, first.metadata.sensor, first.image) == (2, "MSI", b"img-a")
    assert not streams[0][1].HasField("label") and not streams[0][1].HasField("metadata")
    assert (streams[0][2].id, streams[0][2].image) == ("scene-7", b"tiff-7")
    assert (streams[1][0].id, streams[1][0].image) == ("b", b"tiff-7")
    assert (summary.received, summary.ingested, summary.per_shard, summary.batches, summary.completed) == \
        (4, 4, (4, 0), 2, 4)
    assert seen[-2:] == [(3, 3), (4, 4)]
    assert all(timeout <= 99.0 for _, _, timeout, _ in stub.calls)


def test_an_empty_ingest_sends_nothing(sleeps: list[float]) -> None:
    stub = ScriptedStub(Ingest=[summary_of])
    assert client_with(stub, sleeps).ingest([]).received == 0 and stub.calls == []


def test_a_retried_batch_counts_as_replaced_only_what_existed_before(sleeps: list[float]) -> None:
    # The first attempt stores 2 of 4 items (one of which existed before) and fails; the second
    # stores all 4 and counts 3 as replaced: the 1 from before and the 2 the failed attempt stored,
    # one of which was new.
    partial = pb.IngestSummary(received=4, ingested=2, replaced=1, per_shard=[2, 0], failed_shards=[1])
    stub = ScriptedStub(Ingest=[unavailable(partial), pb.IngestSummary(received=4, ingested=4, replaced=3,
                                                                       per_shard=[2, 2])])
    summary = client_with(stub, sleeps).ingest([Item(f"i-{i}", b"x") for i in range(4)])
    assert (summary.ingested, summary.replaced, summary.retries, summary.per_shard) == (4, 2, 1, (2, 2))
    assert len(stub.sent("Ingest")) == 2 and stub.sent("Ingest")[0] == stub.sent("Ingest")[1]
    assert sleeps == [0.2]


def test_a_failed_batch_says_what_the_whole_call_stored_and_where_to_resume(sleeps: list[float]) -> None:
    partial = pb.IngestSummary(received=3, ingested=1, replaced=0, per_shard=[1, 0], failed_shards=[1])
    refusal = FailedCall(grpc.StatusCode.FAILED_PRECONDITION, "stored 1 of 3 items (shard 0: 1); shard(s) 1 failed",
                         ((INGEST_SUMMARY_KEY, partial.SerializeToString()),))
    stub = ScriptedStub(Ingest=[summary_of, refusal])
    with pytest.raises(FailedPrecondition) as raised:
        client_with(stub, sleeps).ingest([Item(f"i-{i}", b"x") for i in range(8)], batch_size=3)
    error = raised.value
    assert str(error) == "batch of items 3..5: stored 1 of 3 items (shard 0: 1); shard(s) 1 failed"
    assert error.summary is not None
    assert (error.summary.received, error.summary.ingested, error.summary.per_shard, error.summary.failed_shards,
            error.summary.completed, error.summary.batches) == (6, 4, (4, 0), (1,), 3, 1)
    assert len(stub.sent("Ingest")) == 2  # nothing after the failed batch


def test_an_unreadable_file_stops_the_ingest_before_its_batch(tmp_path: Path, sleeps: list[float]) -> None:
    stub = ScriptedStub(Ingest=[summary_of])
    with pytest.raises(InvalidArgument, match=r"item 2 \(id 'c'\): cannot read .*missing\.jpg") as raised:
        client_with(stub, sleeps).ingest([Item("a", b"x"), Item("b", b"y"), Item("c", tmp_path / "missing.jpg")],
                                         batch_size=2)
    assert raised.value.summary is not None and raised.value.summary.completed == 2
    assert len(stub.sent("Ingest")) == 1


# -- search and items by id ------------------------------------------------------------------------


def test_search_sends_one_query_and_needs_exactly_one(sleeps: list[float]) -> None:
    stub = ScriptedStub(Search=[pb.SearchResponse(hits=[pb.Hit(id="a", distance=0, score=-1.0)])])
    client = client_with(stub, sleeps)
    result = client.search(id="scene-1", k=3, rerank=False)
    assert result.hits[0].score is None and stub.sent("Search")[0].id == "scene-1"
    with pytest.raises(ValueError, match="exactly one of image, code or id"):
        client.search(k=3)
    with pytest.raises(ValueError, match="exactly one"):
        client.search(code=b"\x00", id="a")


def test_search_many_sends_chunks_and_answers_in_order(sleeps: list[float]) -> None:
    def answer(request: pb.SearchManyRequest) -> pb.SearchManyResponse:
        return pb.SearchManyResponse(results=[pb.SearchResponse(hits=[pb.Hit(id=q.id)]) for q in request.queries])

    stub = ScriptedStub(SearchMany=[answer])
    queries = [Query(id=f"q-{i}") for i in range(5)]
    results = client_with(stub, sleeps).search_many(queries, k=4, chunk_size=2)
    assert [r.hits[0].id for r in results] == [f"q-{i}" for i in range(5)]
    assert [len(r.queries) for r in stub.sent("SearchMany")] == [2, 2, 1]
    assert all(r.k == 4 for r in stub.sent("SearchMany"))
    with pytest.raises(TypeError, match="query 1 is a str"):
        client_with(stub, sleeps).search_many([Query(id="a"), "b"])  # type: ignore[list-item]


def test_a_refused_chunk_names_its_queries(sleeps: list[float]) -> None:
    stub = ScriptedStub(SearchMany=[pb.SearchManyResponse(results=[pb.SearchResponse()] * 2),
                                    FailedCall(grpc.StatusCode.NOT_FOUND, "query 1: no item with id 'q-3'")])
    with pytest.raises(NotFound, match=r"^queries 2\.\.3: query 1: no item with id 'q-3'$"):
        client_with(stub, sleeps).search_many([Query(id=f"q-{i}") for i in range(5)], chunk_size=2)


def test_get_keeps_request_order_across_chunks_and_takes_one_id(sleeps: list[float]) -> None:
    def answer(request: pb.GetItemsRequest) -> pb.GetItemsResponse:
        return pb.GetItemsResponse(items=[pb.StoredItem(id=i, shard=1) for i in request.ids if i != "gone"],
                                   missing=[i for i in request.ids if i == "gone"])

    stub = ScriptedStub(Get=[answer])
    client = client_with(stub, sleeps)
    result = client.get(["c", "gone", "a", "b"], with_thumbnails=True, chunk_size=3)
    assert [i.id for i in result] == ["c", "a", "b"] and result.missing == ("gone",)
    assert [list(r.ids) for r in stub.sent("Get")] == [["c", "gone", "a"], ["b"]]
    assert all(r.with_thumbnails for r in stub.sent("Get"))
    assert [i.id for i in client.get("scene-1")] == ["scene-1"]  # one id, not its characters
    assert client.get([]).items == ()


def test_update_metadata_sends_every_update_in_one_call(sleeps: list[float]) -> None:
    stub = ScriptedStub(UpdateMetadata=[pb.UpdateMetadataResponse(updated=1, missing=["b"])])
    result = client_with(stub, sleeps).update_metadata({"a": Metadata(sensor="SAR"), "b": None})
    assert (result.updated, result.missing) == (1, ("b",))
    (request,) = stub.sent("UpdateMetadata")
    assert request.updates[0].metadata.sensor == "SAR" and not request.updates[1].HasField("metadata")
    client_with(stub, sleeps).update_metadata([("c", Metadata())])
    assert [u.id for u in stub.sent("UpdateMetadata")[1].updates] == ["c"]


def test_the_ingest_summary_key_is_the_gateways() -> None:
    assert client_module.INGEST_SUMMARY_KEY == INGEST_SUMMARY_KEY


def test_the_client_closes_its_channel() -> None:
    with OrbitHashClient("127.0.0.1:1", timeout=1.0) as client:
        assert "127.0.0.1:1" in repr(client)
    with pytest.raises(ValueError, match="Cannot invoke RPC on closed channel"):
        client._stub.Info(pb.InfoRequest(), timeout=1.0)
