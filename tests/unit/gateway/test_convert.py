"""Proto ↔ plain types: the public messages keep every field, unset optionals stay unset."""

from __future__ import annotations

import pytest

from gateway import convert
from gateway.core import (
    ByCode,
    ById,
    ByImage,
    Encoding,
    FoundItem,
    GetResult,
    Hit,
    Info,
    MetadataUpdate,
    SearchResult,
    ShardInfo,
    ShardQuery,
    StoredItem,
    UpdateResult,
)
from orbithash.metadata import Box, LonLat, SceneFilter, SceneMeta
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
    message = convert.shard_search_request_to_pb(ShardQuery((b"\x00\x00",), 4, 16, "v1"))
    assert not message.HasField("max_distance") and not message.HasField("label") and not message.u
    assert not message.HasField("filter") and not message.with_metadata and not message.with_thumbnails
    message = convert.shard_search_request_to_pb(ShardQuery((b"\x00\x00", b"\x01\x00"), 4, 16, "v1", 0, 0,
                                                            (0.5,) * 32, 9))
    assert (message.max_distance, message.label, message.candidates, len(message.u)) == (0, 0, 9, 32)
    assert list(message.codes) == [b"\x00\x00", b"\x01\x00"]


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


METADATA = pb.SceneMetadata(sensor="MSI", platform="Sentinel-2A", center=pb.GeoPoint(lon=10.5, lat=-3.25),
                            attributes={"tile": "T32"})
METADATA.acquired.FromSeconds(1_700_000_000)
SCENE = SceneMeta(acquired=1_700_000_000.0, center=LonLat(10.5, -3.25), sensor="MSI", platform="Sentinel-2A",
                  attributes={"tile": "T32"})


def test_filters_and_flags_reach_the_core_and_the_shard_request_unchanged() -> None:
    wanted = pb.SearchFilter(sensors=["MSI"], attributes={"tile": "T32"},
                             intersects=pb.BoundingBox(west=170, east=-170))
    request = convert.search_request_from_pb(pb.SearchRequest(code=b"\x00\x00", k=5, filter=wanted,
                                                              with_metadata=True, with_thumbnails=True))
    assert request.filter == SceneFilter(sensors=frozenset({"MSI"}), attributes={"tile": "T32"},
                                         intersects=Box(170.0, 0.0, -170.0, 0.0))
    assert request.with_metadata and request.with_thumbnails
    assert convert.search_request_from_pb(pb.SearchRequest(code=b"\x00\x00", k=5)).filter is None
    message = convert.shard_search_request_to_pb(ShardQuery((b"\x00\x00",), 4, 16, "v1", filter=request.filter,
                                                            with_metadata=True, with_thumbnails=True))
    assert message.filter == wanted and message.with_metadata and message.with_thumbnails


def test_search_many_request_keeps_every_query_in_order() -> None:
    many = convert.search_many_request_from_pb(pb.SearchManyRequest(
        queries=[pb.Query(image=b"jpg"), pb.Query(), pb.Query(id="a"), pb.Query(code=b"\x01\x02")], k=7,
        max_distance=0, rerank_candidates=3, filter=pb.SearchFilter(sensors=["SAR"]), with_metadata=True))
    assert list(many.queries) == [ByImage(b"jpg"), None, ById("a"), ByCode(b"\x01\x02")]
    assert (many.k, many.max_distance, many.label, many.rerank_candidates, many.with_metadata,
            many.with_thumbnails) == (7, 0, None, 3, True, False)
    assert many.filter == SceneFilter(sensors=frozenset({"SAR"}))


def test_hits_carry_metadata_and_thumbnails_only_when_they_have_them() -> None:
    hits = [Hit("x", 1, 2, 0, 0.0, SCENE, b"\xff\xd8jpeg"), Hit("y", 3, -1, 1)]
    reply = convert.search_many_response_to_pb([SearchResult(hits, None, "v1", [1]), SearchResult([], None, "v1")])
    first = reply.results[0]
    assert first.hits[0].metadata == METADATA and first.hits[0].thumbnail == b"\xff\xd8jpeg"
    assert not first.hits[1].HasField("metadata") and first.hits[1].thumbnail == b""
    assert [convert.hit_from_pb(h) for h in first.hits] == hits
    assert first.partial and list(first.failed_shards) == [1] and not reply.results[1].hits


def test_metadata_passes_through_ingest_and_the_shard_items() -> None:
    item = convert.ingest_item_from_pb(pb.IngestItem(id="a", image=b"i", metadata=METADATA))
    assert item.metadata == SCENE
    assert convert.ingest_item_from_pb(pb.IngestItem(id="a", image=b"i")).metadata is None
    stored = StoredItem("a", b"\x00\x00", 1, item.metadata, b"jpeg")
    assert convert.item_from_pb(convert.item_to_pb(stored)) == stored
    bare = convert.item_to_pb(StoredItem("b", b"\x00\x00", -1))
    assert not bare.HasField("metadata") and bare.thumbnail == b""
    assert not convert.item_to_pb(StoredItem("b", b"\x00\x00", -1, SceneMeta())).HasField("metadata")


def test_get_and_update_messages() -> None:
    found = FoundItem(1, StoredItem("a", b"\x00\x01", 3, SCENE, b"jpeg"))
    reply = convert.get_items_response_to_pb(GetResult([found], ["gone"]))
    assert (reply.items[0].id, reply.items[0].shard, reply.items[0].code, reply.items[0].label) == \
        ("a", 1, b"\x00\x01", 3)
    assert reply.items[0].metadata == METADATA and reply.items[0].thumbnail == b"jpeg"
    assert list(reply.missing) == ["gone"]
    updates = convert.metadata_updates_from_pb(pb.UpdateMetadataRequest(updates=[
        pb.MetadataUpdate(id="a", metadata=METADATA), pb.MetadataUpdate(id="b")]))
    assert updates == [MetadataUpdate("a", SCENE), MetadataUpdate("b", SceneMeta())]  # unset: cleared
    shard_request = convert.shard_update_request_to_pb(updates)
    assert shard_request.updates[0].metadata == METADATA and not shard_request.updates[1].HasField("metadata")
    answer = convert.update_metadata_response_to_pb(UpdateResult(1, ["b"]))
    assert answer.updated == 1 and list(answer.missing) == ["b"]


def test_encodings_carry_their_thumbnail() -> None:
    encoding = Encoding(b"\x80\x00", (0.5,), (1.0,), 0, "a", b"jpeg")
    assert convert.encoding_from_pb(convert.encoding_to_pb(encoding)) == encoding
