"""Scene metadata and thumbnails on a real redis-server: stored atomically with the code, filtered
before ranking, returned when asked for, updated, deleted, and rebuilt by a restarted shard; bad
values are refused before anything is written, over gRPC as INVALID_ARGUMENT."""

from __future__ import annotations

import threading

import grpc
import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from index_service.__main__ import build_server
from index_service.settings import IndexSettings
from index_service.shard import Shard
from index_service.store import ShardStore
from orbithash import DeadlineExceeded, InvalidInput, Mismatch
from orbithash.metadata import Box, LonLat, SceneFilter, SceneMeta, decode, encode
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.redis_server import RedisServer
from orbithash_serving.convert import filter_to_pb, scene_from_pb, scene_to_pb

BITS = 64
VERSION = "v1"
T0 = 1_684_000_000.0


def make_shard(server: RedisServer) -> Shard:
    """Shard 0 connected as its own Redis user, as the launcher runs it."""
    client = server.client("shard-0", socket_timeout=30)
    shard = Shard(0, ShardStore(client, 0, BITS, VERSION), BITS, VERSION, max_k=1000, max_batch=256,
                  registry=CollectorRegistry())
    shard.open()
    return shard


def snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    return {key: client.dump(key) for key in client.keys("*")}


def scene(i: int) -> SceneMeta:
    """Item i: a day apart, centres 2 degrees apart marching east across the antimeridian (item 5
    sits on it, its footprint crossing it), every 7th without a footprint, alternating sensors."""
    lon = (170.0 + 2 * i + 180.0) % 360.0 - 180.0
    west, east = (lon - 0.5 + 540.0) % 360.0 - 180.0, (lon + 0.5 + 180.0) % 360.0 - 180.0
    return SceneMeta(acquired=T0 + 86_400 * i, center=LonLat(lon, 10.0),
                     footprint=None if i % 7 == 6 else Box(west, 9.5, east, 10.5), sensor="MSI" if i % 2 else "SAR",
                     platform="Sentinel-2A", source_uri=f"s3://bucket/{i}",
                     attributes={"tile": f"T{i % 3}", "n": str(i)})


def fill(shard: Shard, n: int, seed: int = 0) -> tuple[list[str], list[bytes]]:
    rng = np.random.default_rng(seed)
    ids = [f"scene-{i:03d}" for i in range(n)]
    codes = [bytes(row) for row in rng.integers(0, 256, (n, BITS // 8), dtype=np.uint8)]
    shard.add(ids, codes, [i % 4 for i in range(n)], BITS, VERSION, metadata=[scene(i) for i in range(n)],
              thumbnails=[f"jpeg-{i}".encode() if i % 2 == 0 else b"" for i in range(n)])
    return ids, codes


def hit_ids(shard: Shard, code: bytes, f: SceneFilter | None, k: int = 100, **kw: object) -> list[str]:
    return [h.id for h in shard.search([code], k, None, None, BITS, VERSION, scene_filter=f, **kw)[0]]  # type: ignore[arg-type]


def test_filters_apply_before_ranking_and_hits_carry_what_was_asked(redis_client: redis.Redis,
                                                                    redis_server: RedisServer) -> None:
    shard = make_shard(redis_server)
    ids, codes = fill(shard, 40)
    q = codes[0]
    sar = SceneFilter(sensors=frozenset({"SAR"}))
    assert set(hit_ids(shard, q, sar)) == set(ids[0::2])
    assert hit_ids(shard, q, sar, k=3) == [h.id for h in shard.search([q], 100, None, None, BITS, VERSION)[0]
                                            if int(h.id[-3:]) % 2 == 0][:3]  # the exact top-3 among SAR scenes
    week = SceneFilter(acquired_from=T0 + 86_400 * 5, acquired_until=T0 + 86_400 * 12)
    assert sorted(hit_ids(shard, q, week)) == ids[5:12]
    across = SceneFilter(intersects=Box(175.0, 0.0, -175.0, 20.0))  # centres 170, 172, ..., 178, -180, -178, ...
    assert sorted(hit_ids(shard, q, across)) == ids[3:8]  # footprints from 175.5..176.5 to -176.5..-175.5
    both = SceneFilter(attributes={"tile": "T1"}, sensors=frozenset({"MSI"}), center_within=Box(-180, 0, 0, 20))
    assert sorted(hit_ids(shard, q, both)) == [ids[i] for i in range(40) if i % 3 == 1 and i % 2 and 5 <= i < 95]
    assert hit_ids(shard, q, SceneFilter(attributes={"tile": "T9"})) == []
    hits = shard.search([codes[4]], 1, None, None, BITS, VERSION, scene_filter=sar, with_metadata=True,
                        with_thumbnails=True)[0]
    assert hits[0].id == ids[4] and hits[0].metadata == scene(4) and hits[0].thumbnail == b"jpeg-4"
    plain = shard.search([codes[5]], 1, None, None, BITS, VERSION)[0][0]
    assert plain.metadata is None and plain.thumbnail == b""  # not asked for
    reranked = shard.search([codes[6]], 2, None, None, BITS, VERSION, u=[1.0] * BITS, scene_filter=sar,
                            with_metadata=True)[0]
    assert all(h.metadata is not None and h.metadata.sensor == "SAR" for h in reranked) and len(reranked) == 2
    found, missing = shard.get([ids[3], "nope", ids[2]], with_metadata=True, with_thumbnails=True)
    assert [(f.id, f.metadata, f.thumbnail) for f in found] == [(ids[3], scene(3), b""), (ids[2], scene(2), b"jpeg-2")]
    assert missing == ["nope"]
    with pytest.raises(InvalidInput, match=r"^filter: intersects south"):
        hit_ids(shard, q, SceneFilter(intersects=Box(0, 5, 1, 4)))


def test_metadata_survives_a_shard_restart(redis_client: redis.Redis, redis_server: RedisServer) -> None:
    shard = make_shard(redis_server)
    ids, codes = fill(shard, 30)
    shard.add([ids[7]], [codes[7]], [0], BITS, VERSION)  # replaced without metadata or thumbnail: both go
    shard.add(["bare"], [codes[9]], [0], BITS, VERSION)  # the last slot, without metadata
    shard.delete([ids[8]])
    filters = [SceneFilter(sensors=frozenset({"MSI"})), SceneFilter(acquired_until=T0 + 86_400 * 10),
               SceneFilter(attributes={"tile": "T1"}), SceneFilter(intersects=Box(175.0, 0.0, -175.0, 20.0)),
               SceneFilter(sensors=frozenset({""}))]
    before = [hit_ids(shard, codes[1], f) for f in filters]
    assert sorted(before[-1]) == ["bare", ids[7]]  # "" stands for items without a sensor
    restarted = make_shard(redis_server)
    assert [hit_ids(restarted, codes[1], f) for f in filters] == before
    assert ids[7] not in before[0] and ids[8] not in before[0]
    found, _ = restarted.get(ids[:10], with_metadata=True, with_thumbnails=True)
    expect = {i: (scene(j), f"jpeg-{j}".encode() if j % 2 == 0 else b"") for j, i in enumerate(ids[:10])}
    expect[ids[7]] = (SceneMeta(), b"")
    del expect[ids[8]]
    assert {f.id: (f.metadata, f.thumbnail) for f in found} == expect


def test_update_metadata_changes_filters_and_only_existing_items(redis_client: redis.Redis,
                                                                 redis_server: RedisServer) -> None:
    shard = make_shard(redis_server)
    ids, codes = fill(shard, 20)
    oli = SceneFilter(sensors=frozenset({"OLI"}))
    assert hit_ids(shard, codes[0], oli) == []
    updated, missing = shard.update_metadata([ids[3], "ghost", ids[4], ids[3]],
                                             [SceneMeta(sensor="SAR"), SceneMeta(sensor="OLI"), SceneMeta(),
                                              SceneMeta(sensor="OLI", attributes={"tile": "T7"})])
    assert updated == [ids[3], ids[4]] and missing == ["ghost"]  # a repeated id: the last update wins
    assert hit_ids(shard, codes[0], oli) == [ids[3]]
    assert hit_ids(shard, codes[0], SceneFilter(attributes={"tile": "T7"})) == [ids[3]]
    assert ids[4] not in hit_ids(shard, codes[0], SceneFilter(acquired_from=0.0))  # its metadata is gone
    assert ids[3] not in hit_ids(shard, codes[0], SceneFilter(attributes={"tile": f"T{3 % 3}"}))
    assert not redis_client.hexists(shard._store.bucket_key("ghost"), "ghost")  # never created
    assert not redis_client.hexists(shard._store.keys["metadata"], ids[4])
    found, _ = shard.get([ids[3]], with_metadata=True, with_thumbnails=True)
    assert found[0].code == codes[3] and found[0].label == 3 and found[0].thumbnail == b""  # the rest stays
    restarted = make_shard(redis_server)
    assert hit_ids(restarted, codes[0], oli) == [ids[3]]
    assert restarted.get([ids[3]], with_metadata=True)[0][0].metadata == SceneMeta(sensor="OLI",
                                                                                   attributes={"tile": "T7"})


def test_delete_removes_metadata_and_a_reused_slot_starts_clean(redis_client: redis.Redis,
                                                                 redis_server: RedisServer) -> None:
    shard = make_shard(redis_server)
    ids, codes = fill(shard, 10)
    keys = shard._store.keys
    shard.delete([ids[2], ids[3]])
    assert not redis_client.hexists(keys["metadata"], ids[2]) and not redis_client.hexists(keys["thumbnails"], ids[2])
    assert redis_client.hlen(keys["metadata"]) == 8 and redis_client.hlen(keys["thumbnails"]) == 4
    shard.add(["fresh"], [codes[2]], [0], BITS, VERSION)  # takes a freed slot; has no metadata
    everything = SceneFilter(acquired_from=0.0)
    assert "fresh" not in hit_ids(shard, codes[2], everything)
    assert ids[2] not in hit_ids(shard, codes[2], everything)
    assert shard.get(["fresh"], with_metadata=True, with_thumbnails=True)[0][0][3:] == (SceneMeta(), b"")
    assert shard.update_metadata([ids[2]], [scene(2)]) == ([], [ids[2]])
    shard.delete(ids)
    assert redis_client.hlen(keys["metadata"]) == 0 and redis_client.hlen(keys["thumbnails"]) == 0


def test_bad_metadata_or_thumbnail_stores_nothing(redis_client: redis.Redis, redis_server: RedisServer) -> None:
    shard = make_shard(redis_server)
    ids, codes = fill(shard, 4)
    before = snapshot(redis_client)
    cases = [
        ([scene(0), SceneMeta(center=LonLat(0.0, 95.0))], None, r"item 1 \(id 'new-1'\): center latitude 95.0"),
        ([scene(0), SceneMeta(footprint=Box(0.0, 2.0, 1.0, 1.0))], None, "item 1 .*footprint south 2.0"),
        ([SceneMeta(attributes={"k": "v" * 300}), scene(1)], None, r"item 0 \(id 'new-0'\): attribute 'k'"),
        ([scene(0)], None, "1 metadata for 2 items"),
        (None, [b"", bytes(300_000)], "item 1 .*thumbnail has 300000 bytes"),
    ]
    for metas, thumbs, message in cases:
        with pytest.raises(InvalidInput, match=message):
            shard.add(["new-0", "new-1"], codes[:2], [0, 0], BITS, VERSION, metadata=metas, thumbnails=thumbs)
    with pytest.raises(InvalidInput, match=r"item 1 \(id 'scene-001'\): acquired nan"):
        shard.update_metadata([ids[0], ids[1]], [SceneMeta(), SceneMeta(acquired=float("nan"))])
    with pytest.raises(DeadlineExceeded, match="nothing was written"):
        shard.update_metadata([ids[0]], [SceneMeta()], remaining=0.01)
    with pytest.raises(DeadlineExceeded):  # the store's own fence: Redis refuses a late script
        shard._store.update_metadata([ids[0]], [b""], not_after=1.0)
    with pytest.raises(Mismatch):
        ShardStore(redis_client, 0, 48, VERSION).update_metadata([ids[0]], [b""])
    assert snapshot(redis_client) == before and len(shard) == 4
    assert shard.get([ids[1]], with_metadata=True)[0][0].metadata == scene(1)


def test_filtered_searches_stay_exact_while_slots_are_reused(redis_client: redis.Redis,
                                                             redis_server: RedisServer) -> None:
    """Writers delete items and add others into the freed slots with other metadata while readers
    search with a filter: every hit must pass the filter by the metadata it is returned with (a mask
    taken before a slot changed hands would let the new item through)."""
    shard = make_shard(redis_server)
    _, codes = fill(shard, 60)
    q = codes[0]
    msi = SceneFilter(sensors=frozenset({"MSI"}))
    stop = threading.Event()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for step in range(150):
                shard.delete([f"w{step - 1}"] if step else ["scene-001"])
                sensor = "MSI" if step % 2 else "SAR"
                shard.add([f"w{step}"], [q], [0], BITS, VERSION, metadata=[SceneMeta(sensor=sensor)])
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    def reader() -> None:
        try:
            while not stop.is_set():
                for h in shard.search([q], 5, None, None, BITS, VERSION, scene_filter=msi, with_metadata=True)[0]:
                    assert h.metadata is not None and h.metadata.sensor == "MSI", h
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    threads = [threading.Thread(target=writer), threading.Thread(target=reader), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[0]


def test_store_round_trip_of_blobs(redis_client: redis.Redis) -> None:
    """The store keeps blobs by id beside the code, with binary bytes intact, and loads them by slot."""
    store = ShardStore(redis_client, 3, BITS, VERSION)
    store.claim()
    codes = np.zeros((4, 8), np.uint8)
    blobs = [encode(scene(0)), b"", bytes(range(256)) * 3, encode(scene(3))]
    store.upsert(["a", "b", "c", "d"], codes, np.zeros(4, np.int32), metadata=blobs,
                 thumbnails=[b"\xff\x00", b"", b"t", b""])
    store.upsert(["d", "e", "d"], codes[:3], np.zeros(3, np.int32), metadata=[b"x", b"y", b""])  # the last d wins: none
    loaded = store.load()
    assert dict(zip(loaded.ids, loaded.metadata, strict=True)) == {"a": blobs[0], "b": b"", "c": blobs[2],
                                                                   "d": b"", "e": b"y"}
    assert decode(loaded.metadata[0]) == scene(0)
    assert store.thumbnails(["a", "b", "zz", "c", "d"]) == [b"\xff\x00", b"", b"", b"t", b""]
    assert store.update_metadata(["b", "q", "b"], [b"1", b"2", b"3"]) == (["b"], ["q"])
    assert dict(zip(*store.load()[1::3], strict=True))["b"] == b"3"
    with pytest.raises(InvalidInput, match="metadata must be 4 byte strings"):
        store.upsert(["a", "b", "c", "d"], codes, np.zeros(4, np.int32), metadata=[b""] * 3)


def test_grpc_add_search_get_update_and_invalid_argument(redis_client: redis.Redis,
                                                         shard0_redis: dict[str, str]) -> None:
    server = build_server(IndexSettings(**shard0_redis, bits=BITS, model_version=VERSION, shard=0,
                                        metrics_port=0, port=0))
    server.start()
    try:
        with grpc.insecure_channel(server.address) as channel:
            stub = rpc.IndexShardStub(channel)
            rng = np.random.default_rng(4)
            codes = [bytes(row) for row in rng.integers(0, 256, (6, BITS // 8), dtype=np.uint8)]
            items = [pb.Item(id=f"g{i}", code=codes[i], label=i, metadata=scene_to_pb(scene(i)),
                             thumbnail=b"jpg" if i == 2 else b"") for i in range(5)]
            items.append(pb.Item(id="bare", code=codes[5], label=0))
            assert stub.Add(pb.AddRequest(items=items, bits=BITS, model_version=VERSION), timeout=10).added == 6
            reply = stub.Search(pb.ShardSearchRequest(
                codes=[codes[2]], k=10, bits=BITS, model_version=VERSION, with_metadata=True, with_thumbnails=True,
                filter=filter_to_pb(SceneFilter(sensors=frozenset({"SAR"})))), timeout=10)
            hits = reply.results[0].hits
            assert hits[0].id == "g2" and {h.id for h in hits} == {"g0", "g2", "g4"}
            assert scene_from_pb(hits[0].metadata) == scene(2) and hits[0].thumbnail == b"jpg"
            got = stub.Get(pb.GetRequest(ids=["bare", "g1", "x"], with_metadata=True), timeout=10)
            assert not got.items[0].HasField("metadata") and scene_from_pb(got.items[1].metadata) == scene(1)
            assert got.items[1].thumbnail == b"" and list(got.missing) == ["x"]
            plain = stub.Get(pb.GetRequest(ids=["g1"]), timeout=10).items[0]
            assert not plain.HasField("metadata")
            update = stub.UpdateMetadata(pb.UpdateMetadataRequest(updates=[
                pb.MetadataUpdate(id="bare", metadata=scene_to_pb(SceneMeta(sensor="SAR"))),
                pb.MetadataUpdate(id="nope")]), timeout=10)
            assert update.updated == 1 and list(update.missing) == ["nope"]
            before = snapshot(redis_client)
            bad = pb.Item(id="bad", code=codes[0], label=0, metadata=pb.SceneMetadata(center=pb.GeoPoint(lat=-91)))
            with pytest.raises(grpc.RpcError) as info:
                stub.Add(pb.AddRequest(items=[items[0], bad], bits=BITS, model_version=VERSION), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "item 1 (id 'bad'): center latitude -91.0" in info.value.details()
            with pytest.raises(grpc.RpcError) as info:
                stub.UpdateMetadata(pb.UpdateMetadataRequest(updates=[pb.MetadataUpdate(
                    id="g1", metadata=pb.SceneMetadata(attributes={"": "x"}))]), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            with pytest.raises(grpc.RpcError) as info:
                stub.Search(pb.ShardSearchRequest(codes=[codes[0]], k=1, bits=BITS, model_version=VERSION,
                                                  filter=pb.SearchFilter(center_within=pb.BoundingBox(south=1))),
                            timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "center_within" in info.value.details()
            assert snapshot(redis_client) == before
    finally:
        server.stop(0)
