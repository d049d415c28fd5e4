"""Proto ↔ plain types: the public messages keep every field, unset optionals stay unset."""

from __future__ import annotations

import pytest

from gateway import convert
from gateway.core import ByCode, ById, ByImage, Encoding, Hit, Info, SearchResult, ShardInfo, ShardQuery
from orbithash.model_facts import ModelFacts
from orbithash_api.v1 import orbithash_pb2 as pb

FACTS = ModelFacts(name="m", version="v1", bits=16, class_names=("a", "b"), input_size=32,
                   mean=(1.0, 2.0, 3.0), std=(1.0, 1.0, 1.0))


@pytest.mark.parametrize(("message", "query"), [
    (pb.SearchRequest(image=b"jpg", k=3), ByImage(b"jpg")),
    (pb.SearchRequest(image=b"", k=3), ByImage(b"")),
    (pb.SearchRequest(code=b"\x01\x02", k=3), ByCode(b"\x01\x02")),
    (pb.SearchRequest(id="scene-1", k=3), ById("scene-1")),
    (pb.SearchRequest(k=3), None),
])
def test_search_request_query_kinds(message: pb.SearchRequest, query: object) -> None:
    assert convert.search_request_from_pb(message).query == query


def test_search_request_filters_zero_is_not_unset() -> None:
    request = convert.search_request_from_pb(pb.SearchRequest(code=b"\x00\x00", k=5, max_distance=0, label=0,
                                                              rerank=True, rerank_candidates=40))
    assert (request.k, request.max_distance, request.label, request.rerank, request.rerank_candidates) == \
        (5, 0, 0, True, 40)
    plain = convert.search_request_from_pb(pb.SearchRequest(code=b"\x00\x00", k=5))
    assert (plain.max_distance, plain.label, plain.rerank, plain.rerank_candidates) == (None, None, False, 0)


def test_shard_search_request_sets_optionals_only_when_given() -> None:
    message = convert.shard_search_request_to_pb(ShardQuery(b"\x00\x00", 4, 16, "v1"))
    assert not message.HasField("max_distance") and not message.HasField("label") and not message.u
    message = convert.shard_search_request_to_pb(ShardQuery(b"\x00\x00", 4, 16, "v1", 0, 0, (0.5,) * 16, 9))
    assert (message.max_distance, message.label, message.candidates, len(message.u)) == (0, 0, 9, 16)


def test_search_response_round_trips_hits_and_the_query_encoding() -> None:
    encoding = Encoding(b"\x80\x00", (0.5, -0.25), (0.75, 0.25), 0, "a")
    hits = [Hit("x", 1, 2, 0, -1.5), Hit("y", 3, -1, 1)]
    reply = convert.search_response_to_pb(SearchResult(hits, encoding, "v1", [1]))
    assert [convert.hit_from_pb(h) for h in reply.hits] == hits
    assert convert.encoding_from_pb(reply.query) == encoding
    assert reply.partial and list(reply.failed_shards) == [1] and reply.model_version == "v1"
    assert not convert.search_response_to_pb(SearchResult(hits, None, "v1")).HasField("query")


def test_ingest_item_label_absent_is_none() -> None:
    assert convert.ingest_item_from_pb(pb.IngestItem(id="a", image=b"i")).label is None
    assert convert.ingest_item_from_pb(pb.IngestItem(id="a", image=b"i", label=0)).label == 0


def test_info_response() -> None:
    reply = convert.info_response_to_pb(Info(FACTS, [ShardInfo(0, "s:0", 5, True), ShardInfo(1, "s:1", 0, False)]))
    assert reply.total == 5 and reply.model.bits == 16 and reply.model.version == "v1"
    assert [(s.shard, s.address, s.count, s.healthy) for s in reply.shards] == [(0, "s:0", 5, True),
                                                                                (1, "s:1", 0, False)]
