"""The Python client against the real cluster (redis-server, tritonserver, encoder, two shards, gateway).

Every test leaves the cluster as it found it: the items stored here have ids of their own
("client-…") and are deleted at the end of the module, and other modules' items are never touched.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import grpc
import numpy as np
import pytest
from PIL import Image

import gateway as gateway_package
from orbithash.data import ImageRecord, Split
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_client import (
    Filter,
    InvalidArgument,
    Item,
    Metadata,
    NotFound,
    OrbitHashClient,
    Query,
    Retry,
    StoredItem,
    Unavailable,
)
from orbithash_local.cluster import Cluster, ServiceProcess, start_service
from orbithash_local.processes import free_port

SUITE = {"suite": "client"}  # on every item stored here: filters with it see only this module's items


def scene(i: int) -> Metadata:
    """Distinct, checkable metadata: a day apart, 0.1° apart along one parallel, alternating sensors."""
    lon = -122.5 + 0.1 * i
    return Metadata(acquired=datetime(2010, 3, 1, 10, 30, 15, 250_000, tzinfo=UTC) + timedelta(days=i),
                    center=(lon, 37.7), footprint=(lon - 0.02, 37.68, lon + 0.02, 37.72),
                    sensor="SAR" if i % 2 else "MSI", platform="UCM-aerial", source_uri=f"ucm://scene/{i}",
                    attributes={**SUITE, "n": str(i)})


@pytest.fixture(scope="module")
def client(cluster: Cluster) -> Iterator[OrbitHashClient]:
    assert cluster.gateway is not None
    with OrbitHashClient(cluster.gateway.address, timeout=60.0, ingest_timeout=300.0) as c:
        yield c


@pytest.fixture(scope="module")
def records(ucm_subset: Split) -> list[ImageRecord]:
    """Eight real database images from different classes."""
    return ucm_subset.database[::21][:8]


@pytest.fixture(scope="module")
def stored(client: OrbitHashClient, records: list[ImageRecord]) -> Iterator[dict[str, Item]]:
    """The records ingested through the client with metadata (two batches); deleted afterwards,
    and the cluster's total checked to be what it was before."""
    before = client.info().total
    items = [Item(f"client-{r.id}", r.data, r.label, scene(i)) for i, r in enumerate(records)]
    summary = client.ingest(items, batch_size=5)
    assert (summary.received, summary.ingested, summary.replaced, summary.batches, summary.completed) == \
        (len(items), len(items), 0, 2, len(items))
    assert sum(summary.per_shard) == len(items)
    yield {item.id: item for item in items}
    gone = client.delete(list({item.id for item in items}))
    assert gone.deleted == len(items) and gone.missing == ()
    assert client.info().total == before


def hamming(a: bytes, b: bytes) -> int:
    return int(np.unpackbits(np.frombuffer(a, np.uint8) ^ np.frombuffer(b, np.uint8)).sum())


def codes_of(client: OrbitHashClient, ids: list[str]) -> dict[str, StoredItem]:
    return client.get(ids).by_id()


def test_get_returns_what_was_stored_in_request_order(client: OrbitHashClient, stored: dict[str, Item]) -> None:
    ids = list(stored)
    asked = [ids[3], "client-never-stored", ids[0], ids[5]]
    result = client.get(asked)
    assert [i.id for i in result] == [ids[3], ids[0], ids[5]] and result.missing == ("client-never-stored",)
    bits = client.info().model.bits
    for item in result:
        assert item.metadata == stored[item.id].metadata  # times exact to the microsecond, in UTC
        assert item.metadata is not None and item.metadata.acquired is not None
        assert item.metadata.acquired.tzinfo is UTC
        assert item.label == stored[item.id].label and item.shard in (0, 1)
        assert len(item.code) == bits // 8 and item.thumbnail is None
    assert {i.shard for i in client.get(ids)} == {0, 1}


def test_a_filtered_search_is_the_exact_top_k_of_the_matching_items(
        client: OrbitHashClient, stored: dict[str, Item], records: list[ImageRecord]) -> None:
    codes = codes_of(client, list(stored))
    query = records[1]  # a SAR scene
    for wanted, keep in [
        (Filter(sensors=("SAR",), attributes=SUITE), lambda i: i % 2 == 1),
        (Filter(acquired_from=datetime(2010, 3, 3, tzinfo=UTC), acquired_until=datetime(2010, 3, 6, tzinfo=UTC),
                attributes=SUITE), lambda i: 2 <= i <= 4),
        (Filter(center_within=(-122.45, 37.0, -122.15, 38.0), attributes=SUITE), lambda i: 1 <= i <= 3),
        (Filter(intersects=(-122.11, 37.69, -121.5, 37.71), attributes=SUITE), lambda i: i >= 4),
    ]:
        result = client.search(image=query.data, k=50, filter=wanted, with_metadata=True)
        matching = [item_id for n, item_id in enumerate(stored) if keep(n)]
        expected = sorted((hamming(result.query.code, codes[i].code), i) for i in matching)  # type: ignore[union-attr]
        assert [(h.distance, h.id) for h in result.hits] == expected, wanted
        assert all(h.metadata == stored[h.id].metadata for h in result.hits)
        assert not result.partial
    top = client.search(image=query.data, k=8, filter=Filter(sensors=("SAR",), attributes=SUITE))
    assert f"client-{query.id}" in {h.id for h in top if h.distance == 0}
    assert top.query is not None and top.query.class_name


def test_search_many_answers_like_one_search_per_query(client: OrbitHashClient, stored: dict[str, Item],
                                                       records: list[ImageRecord]) -> None:
    ids = list(stored)
    some_code = codes_of(client, [ids[6]])[ids[6]].code
    queries = [Query(image=records[2].data), Query(id=ids[4]), Query(code=some_code), Query(image=records[7].data)]
    options = {"k": 5, "filter": Filter(attributes=SUITE), "with_metadata": True}
    many = client.search_many(queries, **options)  # type: ignore[arg-type]
    single = [client.search(image=q.image, code=q.code, id=q.id, **options) for q in queries]  # type: ignore[arg-type]
    assert many == single
    for result, expected in zip(many, [ids[2], ids[4], ids[6], ids[7]], strict=True):
        assert expected in {h.id for h in result if h.distance == 0}


def test_update_metadata_replaces_it_whole_and_filters_follow(client: OrbitHashClient,
                                                              stored: dict[str, Item]) -> None:
    target = list(stored)[2]
    new = Metadata(sensor="OLI", attributes={**SUITE, "n": "updated"})
    result = client.update_metadata({target: new, "client-never-stored": Metadata()})
    assert (result.updated, result.missing) == (1, ("client-never-stored",))
    assert client.get([target]).items[0].metadata == new  # the old time, place and platform are gone
    only = client.search(id=target, k=10, filter=Filter(sensors=("OLI",), attributes=SUITE))
    assert [h.id for h in only] == [target]
    restored = client.update_metadata([(target, stored[target].metadata)])
    assert restored.updated == 1 and client.get([target]).items[0].metadata == stored[target].metadata
    assert client.get(["client-never-stored"]).missing == ("client-never-stored",)  # never created


def test_refused_requests_raise_the_client_family_and_change_nothing(
        client: OrbitHashClient, stored: dict[str, Item], records: list[ImageRecord]) -> None:
    total = client.info().total
    bad = [Item("client-ok", records[0].data), Item("client-bad", records[1].data, metadata=Metadata(center=(200, 0)))]
    with pytest.raises(InvalidArgument, match=r"item 1 \(id 'client-bad'\): center longitude 200") as raised:
        client.ingest(bad)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.summary is not None and raised.value.summary.ingested == 0
    assert client.info().total == total and client.get(["client-ok"]).missing == ("client-ok",)
    target, other = list(stored)[:2]
    with pytest.raises(InvalidArgument, match="footprint south"):
        client.update_metadata({target: Metadata(sensor="x"), other: Metadata(footprint=(0, 5, 1, 4))})
    assert client.get([target]).items[0].metadata == stored[target].metadata  # the valid update was not applied
    with pytest.raises(InvalidArgument, match="filter: intersects south"):
        client.search(id=target, k=3, filter=Filter(intersects=(0, 5, 1, 4)))
    with pytest.raises(NotFound, match="client-never-stored"):
        client.search(id="client-never-stored", k=3)
    with pytest.raises(InvalidArgument, match=r"query 1: .*bytes"):
        client.search_many([Query(id=target), Query(code=b"\x00")], k=3)


def test_delete_removes_items_and_reports_the_missing(client: OrbitHashClient, records: list[ImageRecord],
                                                      stored: dict[str, Item]) -> None:
    total = client.info().total
    summary = client.ingest([Item("client-doomed", records[3].data, metadata=Metadata(sensor="MSI"))])
    assert summary.ingested == 1 and client.info().total == total + 1
    result = client.delete(["client-doomed", "client-never-stored"])
    assert (result.deleted, result.missing) == (1, ("client-never-stored",))
    with pytest.raises(NotFound):
        client.search(id="client-doomed", k=1)
    assert client.info().total == total


# -- thumbnails: a second gateway with them turned on, over the same encoder and shards ------------


@pytest.fixture(scope="module")
def thumbnail_gateway(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    assert cluster.encoder is not None
    service = start_service("gateway-thumbnails", gateway_package, [
        "--encoder", cluster.encoder.address, "--shards", ",".join(s.address for s in cluster.shards),
        "--thumbnail-size", "64"], tmp_path_factory.mktemp("logs"), timeout=120)
    yield service
    service.process.stop()


def jpeg_size(data: bytes | None) -> tuple[int, int]:
    assert data is not None and data[:2] == b"\xff\xd8"
    image = Image.open(io.BytesIO(data))
    assert image.format == "JPEG"
    return image.size


def test_thumbnails_are_made_at_ingest_and_returned_when_asked(
        thumbnail_gateway: ServiceProcess, client: OrbitHashClient, records: list[ImageRecord],
        stored: dict[str, Item]) -> None:
    total = client.info().total
    ids = ["client-thumb-0", "client-thumb-1"]
    with OrbitHashClient(thumbnail_gateway.address, timeout=60.0) as thumbs:
        summary = thumbs.ingest([Item(i, r.data, metadata=Metadata(attributes={"suite": "thumbs"}))
                                 for i, r in zip(ids, records[4:6], strict=True)])
        assert summary.ingested == 2
        got = thumbs.get(ids, with_thumbnails=True)
        assert [jpeg_size(i.thumbnail) for i in got] == [(64, 64), (64, 64)]  # UC Merced scenes are square
        assert all(i.thumbnail is None for i in thumbs.get(ids))  # only when asked for
    hits = client.search(id=ids[0], k=2, filter=Filter(attributes={"suite": "thumbs"}), with_thumbnails=True)
    assert {h.id for h in hits} == set(ids) and all(jpeg_size(h.thumbnail) == (64, 64) for h in hits)
    assert client.delete(ids).deleted == 2 and client.info().total == total


def test_the_encoder_makes_thumbnails_in_the_encode_call(cluster: Cluster, records: list[ImageRecord]) -> None:
    assert cluster.encoder is not None
    with grpc.insecure_channel(cluster.encoder.address) as channel:
        encoder = rpc.EncoderStub(channel)
        plain = encoder.Encode(pb.EncodeRequest(images=[r.data for r in records[:3]]), timeout=60)
        with_thumbs = encoder.Encode(pb.EncodeRequest(images=[r.data for r in records[:3]], thumbnail_size=40),
                                     timeout=60)
    assert [e.thumbnail for e in plain.encodings] == [b""] * 3
    assert [e.code for e in with_thumbs.encodings] == [e.code for e in plain.encodings]
    assert [jpeg_size(e.thumbnail) for e in with_thumbs.encodings] == [(40, 40)] * 3


def test_an_unreachable_gateway_is_unavailable_after_the_retries() -> None:
    sleeps: list[float] = []
    retry = Retry(retries=2, backoff_s=0.05, sleep=lambda s: (sleeps.append(s), time.sleep(s))[1])
    with OrbitHashClient(f"127.0.0.1:{free_port()}", timeout=10.0, retries=retry) as nowhere:
        with pytest.raises(Unavailable) as raised:
            nowhere.info()
        with pytest.raises(Unavailable) as failed_ingest:
            nowhere.ingest([Item("x", b"image")])
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE and len(sleeps) == 4
    assert failed_ingest.value.summary is not None and failed_ingest.value.summary.ingested == 0
    assert failed_ingest.value.summary.retries == 2
