"""ShardStore against a real redis-server: round trips, slot reuse, model checks, atomicity, restarts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import redis
from redis.backoff import ExponentialBackoff
from redis.crc import key_slot
from redis.retry import Retry

from index_service.store import Loaded, ShardStore
from orbithash import InvalidInput, Mismatch, Unavailable
from orbithash.index import HammingIndex
from orbithash_local.processes import free_port
from orbithash_local.redis_server import RedisServer


def codes_for(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    return np.packbits(rng.integers(0, 2, (n, bits), dtype=np.uint8), axis=1)


def as_dict(loaded: Loaded) -> dict[str, tuple[int, bytes, int]]:
    slots, ids, codes, labels, _ = loaded
    assert len(slots) == len(ids) == len(codes) == len(labels)
    assert list(slots) == sorted(slots)
    return {i: (int(s), c.tobytes(), int(lab)) for s, i, c, lab in zip(slots, ids, codes, labels, strict=True)}


def snapshot(client: redis.Redis) -> dict[bytes, bytes]:
    """Every key's serialized value: equal snapshots mean Redis was not touched."""
    return {key: client.dump(key) for key in client.keys("*")}


@pytest.fixture()
def store(redis_client: redis.Redis) -> ShardStore:
    s = ShardStore(redis_client, 0, 48, "model-a")
    s.claim()
    return s


def test_upsert_delete_load_round_trip(store: ShardStore) -> None:
    rng = np.random.default_rng(1)
    ids = ["scene/001", "tile 2", "ÿ-ünïcødé", "🛰️ sat", "a,b\tc", "x" * 200]
    codes = codes_for(rng, len(ids), 48)
    labels = np.array([0, 5, -1, 2, 2, 7], np.int32)
    slots, existing = store.upsert(ids, codes, labels)
    assert existing == 0 and slots.tolist() == list(range(len(ids)))
    assert as_dict(store.load()) == {i: (s, c.tobytes(), int(lab))
                                     for i, s, c, lab in zip(ids, range(6), codes, labels, strict=True)}
    assert store.delete(["tile 2", "nope", "tile 2"]) == (["tile 2"], ["nope"])
    assert store.count() == 5
    loaded = as_dict(store.load())
    assert "tile 2" not in loaded and loaded["🛰️ sat"] == (3, codes[3].tobytes(), 2)


def test_replacing_an_id_keeps_its_slot(store: ShardStore) -> None:
    rng = np.random.default_rng(2)
    first, second = codes_for(rng, 3, 48), codes_for(rng, 2, 48)
    store.upsert(["a", "b", "c"], first, np.array([1, 2, 3]))
    slots, existing = store.upsert(["b", "new"], second, np.array([9, 8]))
    assert slots.tolist() == [1, 3] and existing == 1
    loaded = as_dict(store.load())
    assert loaded["b"] == (1, second[0].tobytes(), 9)
    assert loaded["a"] == (0, first[0].tobytes(), 1) and store.count() == 4


def test_repeated_id_in_one_call_last_wins(store: ShardStore) -> None:
    rng = np.random.default_rng(3)
    codes = codes_for(rng, 4, 48)
    slots, existing = store.upsert(["x", "y", "x", "x"], codes, np.array([1, 2, 3, 4]))
    assert slots.tolist() == [0, 1, 0, 0] and existing == 0
    assert as_dict(store.load()) == {"x": (0, codes[3].tobytes(), 4), "y": (1, codes[1].tobytes(), 2)}
    _, existing = store.upsert(["y", "y", "z"], codes[:3], np.array([5, 6, 7]))
    assert existing == 1  # distinct ids that existed before the call


def test_deleted_slots_are_blanked_and_reused(store: ShardStore, redis_client: redis.Redis) -> None:
    rng = np.random.default_rng(4)
    store.upsert(["a", "b", "c", "d"], codes_for(rng, 4, 48), np.array([1, 2, 3, 4]))
    assert store.delete(["b", "d"]) == (["b", "d"], [])
    raw_codes = redis_client.get(store.keys["codes"])
    raw_labels = np.frombuffer(redis_client.get(store.keys["labels"]), "<i4")
    assert raw_codes[6:12] == bytes(6) and raw_codes[18:24] == bytes(6)
    assert raw_labels.tolist() == [1, -1, 3, -1]
    slots, _ = store.upsert(["e", "f", "g"], codes_for(rng, 3, 48), np.array([5, 6, 7]))
    assert sorted(slots.tolist()[:2]) == [1, 3] and slots[2] == 4  # freed slots first, then new ones
    assert store.count() == 5 and redis_client.llen(store.keys["free"]) == 0


def test_other_bits_or_model_version_are_refused(store: ShardStore, redis_client: redis.Redis) -> None:
    rng = np.random.default_rng(5)
    store.upsert(["a"], codes_for(rng, 1, 48), np.array([0]))
    for bits, version in ((64, "model-a"), (48, "model-b")):
        other = ShardStore(redis_client, 0, bits, version)
        with pytest.raises(Mismatch, match="48-bit codes of model 'model-a'"):
            other.claim()
        with pytest.raises(Mismatch):
            other.upsert(["b"], codes_for(rng, 1, bits), np.array([0]))
        with pytest.raises(Mismatch):
            other.delete(["a"])
        with pytest.raises(Mismatch):
            other.load()
    assert as_dict(store.load()).keys() == {"a"}
    ShardStore(redis_client, 1, 64, "model-b").claim()  # another shard is independent


def test_an_empty_shard_may_be_reclaimed_by_another_model(store: ShardStore, redis_client: redis.Redis) -> None:
    rng = np.random.default_rng(6)
    store.upsert(["a", "b"], codes_for(rng, 2, 48), np.array([0, 1]))
    store.delete(["a", "b"])
    other = ShardStore(redis_client, 0, 256, "model-c")
    other.claim()
    slots, _ = other.upsert(["c"], codes_for(rng, 1, 256), np.array([3]))
    assert slots.tolist() == [0]  # fresh layout: old free list and counter are gone
    assert redis_client.hgetall(store.keys["meta"]) == {b"bits": b"256", b"model_version": b"model-c",
                                                        b"code_bytes": b"32"}
    with pytest.raises(Mismatch):
        store.upsert(["d"], codes_for(rng, 1, 48), np.array([0]))


def test_unclaimed_shard_refuses_writes(redis_client: redis.Redis) -> None:
    s = ShardStore(redis_client, 4, 64, "m")
    with pytest.raises(Mismatch, match="not claimed"):
        s.upsert(["a"], np.zeros((1, 8), np.uint8), np.array([0]))
    assert redis_client.keys("*") == []


def test_a_failing_script_writes_nothing(store: ShardStore, redis_client: redis.Redis) -> None:
    rng = np.random.default_rng(7)
    store.upsert(["a", "b"], codes_for(rng, 2, 48), np.array([1, 2]))
    store.delete(["a"])
    before = snapshot(redis_client)
    # The script itself refuses a code blob of the wrong size, before its first write.
    blob = codes_for(rng, 3, 48).tobytes()[:-1]
    labels = np.array([1, 2, 3], "<i4").tobytes()
    keys = [*store._key_list, "orbithash:{shard-0}:op:test", "orbithash:{shard-0}:op:test"]
    head = [*store._meta_args, "0", store.max_slots]  # the meta check, no deadline, the slot limit
    with pytest.raises(redis.ResponseError, match="ORBITHASH_INVALID"):
        store._upsert(keys=keys, args=[*head, blob, labels, "c", "b", "d", *[b""] * 6])
    with pytest.raises(redis.ResponseError, match="ORBITHASH_INVALID"):
        store._upsert(keys=keys,
                      args=[*head, blob + b"\0", labels[:-1], "c", "b", "d", *[b""] * 6])
    with pytest.raises(redis.ResponseError, match="ORBITHASH_INVALID"):  # a metadata blob short
        store._upsert(keys=keys,
                      args=[*head, blob + b"\0", labels, "c", "b", "d", *[b""] * 5])
    # The public API refuses bad input before Redis sees it.
    with pytest.raises(InvalidInput):
        store.upsert(["c", "d"], codes_for(rng, 2, 64), np.array([1, 2]))
    with pytest.raises(InvalidInput, match="labels"):
        store.upsert(["c"], codes_for(rng, 1, 48), np.array([1, 2]))
    with pytest.raises(InvalidInput):
        store.upsert(["c"], codes_for(rng, 1, 48), np.array([-2]))
    with pytest.raises(InvalidInput):
        store.upsert(["", "d"], codes_for(rng, 2, 48), np.array([1, 2]))
    with pytest.raises(InvalidInput, match="UTF-8"):
        store.upsert(["ok", "bad\ud800"], codes_for(rng, 2, 48), np.array([1, 2]))
    with pytest.raises(InvalidInput):
        store.delete(["b", ""])
    assert snapshot(redis_client) == before


def test_padding_bits_are_refused(redis_client: redis.Redis) -> None:
    s = ShardStore(redis_client, 2, 12, "m")
    s.claim()
    with pytest.raises(InvalidInput, match="padding"):
        s.upsert(["a"], np.array([[0, 0x01]], np.uint8), np.array([0]))
    s.upsert(["a"], np.array([[0, 0x10]], np.uint8), np.array([0]))
    assert as_dict(s.load()) == {"a": (0, bytes([0, 0x10]), 0)}


def test_keys_share_one_cluster_hash_slot(store: ShardStore, redis_client: redis.Redis) -> None:
    rng = np.random.default_rng(8)
    store.upsert(["a", "b"], codes_for(rng, 2, 48), np.array([0, 1]), metadata=[b"m", b"n"],
                 thumbnails=[b"t", b"u"])
    store.delete(["a"])
    keys = redis_client.keys("*")
    ops = {k.decode() for k in keys if k.startswith(b"orbithash:{shard-0}:op:")}
    assert len(ops) == 2  # the last write's reply, the one before it shrunk to a marker
    assert {k.decode() for k in keys} - ops == {*store.keys.values(), store.bucket_key("b")}  # "a"'s bucket went empty
    assert {key_slot(k) for k in keys} == {key_slot(b"orbithash:{shard-0}:x")}
    assert all(k.startswith(b"orbithash:{shard-0}:") for k in keys)


def test_load_many_items_in_chunks_with_progress(redis_client: redis.Redis) -> None:
    s = ShardStore(redis_client, 3, 100, "m", namespace="ns")
    s.claim()
    rng = np.random.default_rng(9)
    n = 50_000  # several HSCAN chunks
    ids = [f"img-{i}-é" if i % 7 == 0 else f"img-{i}" for i in range(n)]
    codes = codes_for(rng, n, 100)
    labels = rng.integers(-1, 10, n).astype(np.int32)
    for a in range(0, n, 12_000):
        s.upsert(ids[a:a + 12_000], codes[a:a + 12_000], labels[a:a + 12_000])
    s.delete(ids[::10])
    calls: list[tuple[int, int]] = []
    slots, got_ids, got_codes, got_labels, _ = s.load(lambda done, total: calls.append((done, total)))
    keep = np.ones(n, bool)
    keep[::10] = False
    assert slots.tolist() == np.flatnonzero(keep).tolist()
    assert got_ids == [i for i, k in zip(ids, keep, strict=True) if k]
    assert np.array_equal(got_codes, codes[keep]) and np.array_equal(got_labels, labels[keep])
    assert len(calls) > 1 and calls[-1] == (n - n // 10, n - n // 10)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


def test_mirror_rebuilt_from_redis_answers_like_the_live_one(store: ShardStore) -> None:
    rng = np.random.default_rng(10)
    live = HammingIndex(48)
    for _ in range(5):
        ids = [f"i{v}" for v in rng.integers(0, 300, 120)]
        codes, labels = codes_for(rng, 120, 48), rng.integers(0, 3, 120).astype(np.int32)
        slots, _ = store.upsert(ids, codes, labels)
        live.put(slots, ids, codes, labels)
        gone = [f"i{v}" for v in rng.integers(0, 300, 40)]
        deleted, _ = store.delete(gone)
        assert sorted(live.remove(deleted)) == sorted(deleted)
    rebuilt = HammingIndex(48)
    rebuilt.put(*store.load()[:4])
    queries = codes_for(rng, 6, 48)
    assert len(rebuilt) == len(live) == store.count()
    assert rebuilt.search(queries, 40) == live.search(queries, 40)
    assert rebuilt.search(queries, 40, label=1) == live.search(queries, 40, label=1)


def test_every_acknowledged_item_survives_a_redis_restart(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    server = RedisServer(data)
    port = server.port
    rng = np.random.default_rng(11)
    try:
        client = server.client()
        s = ShardStore(client, 7, 64, "m")
        s.claim()
        ids = [f"r{i}" for i in range(3000)]
        codes = codes_for(rng, 3000, 64)
        labels = rng.integers(0, 5, 3000).astype(np.int32)
        for a in range(0, 3000, 500):
            s.upsert(ids[a:a + 500], codes[a:a + 500], labels[a:a + 500])
        s.delete(ids[:100])
        s.upsert(ids[200:210], codes[:10], labels[:10])  # replaced items
        expected = as_dict(s.load())
        client.close()
    finally:
        server.stop()
    restarted = RedisServer(data, port=port)
    try:
        s = ShardStore(restarted.client(), 7, 64, "m")
        s.claim()
        assert as_dict(s.load()) == expected
        assert len(expected) == 2900 and expected["r205"][1:] == (codes[5].tobytes(), int(labels[5]))
    finally:
        restarted.stop()


def test_unreachable_redis_raises_unavailable(tmp_path: Path) -> None:
    retry = Retry(ExponentialBackoff(cap=0.02, base=0.005), 2)
    client = redis.Redis(port=free_port(), socket_connect_timeout=0.5, retry=retry)
    s = ShardStore(client, 0, 64, "m")
    with pytest.raises(Unavailable, match="shard 0") as info:
        s.count()
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    # A server that goes away mid-life: writes fail as Unavailable, not as a crash.
    server = RedisServer(tmp_path / "gone")
    live = ShardStore(server.client("shard-0", retry=retry, socket_connect_timeout=0.5), 0, 64, "m")
    live.claim()
    server.stop()
    with pytest.raises(Unavailable):
        live.upsert(["a"], np.zeros((1, 8), np.uint8), np.array([0]))
    with pytest.raises(Unavailable):
        live.load()


def test_client_that_decodes_responses_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(InvalidInput, match="decode_responses"):
        ShardStore(redis.Redis.from_url(redis_server.url, decode_responses=True), 0, 64, "m")


def test_id_buckets_stay_compact(store: ShardStore, redis_client: redis.Redis) -> None:
    """The id -> slot map lives in small hashes that Redis keeps as listpacks (a few bytes per id)."""
    rng = np.random.default_rng(3)
    ids = [f"scene-{i:06d}" for i in range(3000)]
    store.upsert(ids, codes_for(rng, 3000, 48), np.zeros(3000, int))
    buckets = {store.bucket_key(i) for i in ids}
    assert len(buckets) > 2000  # spread over the 65 536 buckets
    assert {redis_client.object("encoding", b) for b in list(buckets)[:50]} == {b"listpack"}
    assert all(redis_client.hget(store.bucket_key(i), i) is not None for i in ids[:100])
    assert store.count() == 3000


def test_a_version_1_shard_is_migrated_at_claim_and_keeps_every_item(redis_client: redis.Redis) -> None:
    """Layout 1 kept two big hashes (slot_to_id, id_to_slot); claim moves them into the buckets."""
    rng = np.random.default_rng(5)
    codes = codes_for(rng, 5, 48)
    prefix = "orbithash:{shard-0}"
    redis_client.hset(f"{prefix}:meta", mapping={"bits": 48, "model_version": "m", "code_bytes": 6})
    redis_client.set(f"{prefix}:codes", codes.tobytes())
    redis_client.set(f"{prefix}:labels", np.arange(5, dtype="<i4").tobytes())
    redis_client.set(f"{prefix}:next_slot", 5)
    ids = ["v1-a", "v1-b", "v1-c", "v1-d", "v1-e"]
    redis_client.hset(f"{prefix}:id_to_slot", mapping={i: s for s, i in enumerate(ids)})
    redis_client.hset(f"{prefix}:slot_to_id", mapping={s: i for s, i in enumerate(ids)})
    store = ShardStore(redis_client, 0, 48, "m")
    store.claim()
    assert not redis_client.exists(f"{prefix}:id_to_slot", f"{prefix}:slot_to_id")
    loaded = store.load()
    assert loaded.ids == ids and loaded.slots.tolist() == [0, 1, 2, 3, 4]
    assert np.array_equal(loaded.codes, codes) and loaded.labels.tolist() == [0, 1, 2, 3, 4]
    assert store.delete(["v1-c"]) == (["v1-c"], [])
    slots, existing = store.upsert(["v1-a", "new"], codes_for(rng, 2, 48), np.array([7, 8]))
    assert slots.tolist() == [0, 2] and existing == 1  # the id kept its slot; the freed one was reused
    store.claim()  # again: nothing left to migrate
    assert store.count() == 5
