"""What scene metadata costs per item, in the shard process and in Redis, kept within a budget; and,
as a by-product, what it costs in time (masks, writes, start-up), which is printed, not asserted.

Run with ``-s`` to see the figures docs/metadata.md quotes (one JSON line):

    ORBITHASH_METADATA_ITEMS=100000 .venv/bin/pytest -s tests/integration/index_service/test_metadata_memory.py
"""

from __future__ import annotations

import json
import os
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np
import redis
from prometheus_client import CollectorRegistry

from index_service.shard import Shard
from index_service.store import ShardStore
from orbithash.metadata import Box, LonLat, MetadataColumns, SceneFilter, SceneMeta, encode

N = int(os.environ.get("ORBITHASH_METADATA_ITEMS", "50000"))  # the docs quote 100 000
MIRROR_BUDGET = 600  # bytes per item in the shard process
REDIS_BUDGET = 350  # bytes per item in Redis


def typical(rng: np.random.Generator, i: int) -> SceneMeta:
    """A Sentinel-2-like scene: time, centre, footprint, sensor, platform, a 50-byte URI and three
    attributes (cloud cover with ~1000 values, a tile id with ~60 000, a processing level with 2)."""
    lon, lat = float(rng.uniform(-180, 179)), float(rng.uniform(-80, 80))
    tile = f"{rng.integers(1, 61):02d}{'CDEFGHJKLMNPQRSTUVWX'[rng.integers(0, 20)]}{rng.integers(0, 50):02d}"
    return SceneMeta(
        acquired=1.6e9 + float(rng.integers(0, 10**8)), center=LonLat(lon + 0.5, lat + 0.5),
        footprint=Box(lon, lat, lon + 1.0, lat + 1.0), sensor="MSI", platform=f"Sentinel-2{'AB'[i % 2]}",
        source_uri=f"s3://sentinel-s2-l1c/tiles/{tile}/2023/5/{i % 28 + 1}/0/{i:08d}",
        attributes={"cloud_cover": f"{rng.integers(0, 1000) / 10:.1f}", "tile": tile,
                    "level": "L1C" if rng.random() < 0.7 else "L2A"})


def ms(fn: Callable[[], object], repeat: int = 10) -> float:
    fn()
    began = time.perf_counter()
    for _ in range(repeat):
        fn()
    return round((time.perf_counter() - began) / repeat * 1000, 3)


def mask_times_per_million() -> dict[str, float]:
    """Mask times over 1M slots of numeric columns filled directly (no per-item Python needed)."""
    rng = np.random.default_rng(1)
    n = 1_000_000
    columns = MetadataColumns(n)
    lon, lat = rng.uniform(-180, 179, n).astype(np.float32), rng.uniform(-80, 80, n).astype(np.float32)
    columns._acquired[:] = rng.uniform(1.6e9, 1.7e9, n)
    columns._center[:] = lon + 0.5, lat + 0.5
    columns._footprint[:] = lon, lat, lon + 1, lat + 1
    columns._sensor[:] = columns._sensor_codes.setdefault("MSI", 1)
    return {name: ms(lambda f=f: columns.mask(f, n)) for name, f in [
        ("acquired_from", SceneFilter(acquired_from=1.65e9)),
        ("center_within", SceneFilter(center_within=Box(0, 0, 10, 10))),
        ("intersects", SceneFilter(intersects=Box(170, -10, -170, 10))),
        ("one_sensor", SceneFilter(sensors=frozenset({"MSI"})))]}


def test_bytes_per_item_in_the_mirror_and_in_redis(redis_client: redis.Redis) -> None:
    rng = np.random.default_rng(0)
    metas = [typical(rng, i) for i in range(N)]  # transient in a shard: decoded from Redis or a request
    slots = np.arange(N)

    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    blobs = [encode(m) for m in metas]
    columns = MetadataColumns(capacity=N)
    columns.put(slots, metas, blobs)
    del blobs  # the columns hold the only reference to each blob now, as in the shard
    mirror = (tracemalloc.get_traced_memory()[0] - base) / N
    tracemalloc.stop()
    kept = [b for b in columns._blobs[:N] if b is not None]
    blob_part = sum(sys.getsizeof(b) + 8 for b in kept) / N  # object + list pointer
    numeric_part = 8 + 2 * 4 + 4 * 4 + 4  # acquired, centre, footprint, sensor code
    figures: dict[str, object] = {
        "items": N, "mirror_bytes_per_item": round(mirror, 1), "blob_bytes": round(sum(map(len, kept)) / N, 1),
        "mirror_blob_part": round(blob_part, 1), "mirror_numeric_part": numeric_part,
        "mirror_postings_part": round(mirror - blob_part - numeric_part, 1)}
    figures["mask_ms_here"] = {name: ms(lambda f=f: columns.mask(f, N)) for name, f in [
        ("common_attribute", SceneFilter(attributes={"level": "L1C"})),
        ("rare_attribute", SceneFilter(attributes={"tile": metas[0].attributes["tile"]})),
        ("all_of_them", SceneFilter(1.65e9, None, Box(-180, -90, 0, 90), None, frozenset({"MSI"}),
                                    {"level": "L1C", "cloud_cover": "12.5"}))]}
    figures["mask_ms_per_million_slots"] = mask_times_per_million()

    codes = np.zeros((N, 8), np.uint8)
    labels = np.zeros(N, np.int32)
    ids = [f"S2A_MSIL1C_{i:08d}" for i in range(N)]
    used, write_us, open_us = [], [], []
    for shard, with_metadata in ((0, False), (1, True)):
        store = ShardStore(redis_client, shard, 64, "v")
        store.claim()
        before = int(redis_client.info("memory")["used_memory"])
        began = time.perf_counter()
        for a in range(0, N, 1000):
            store.upsert(ids[a:a + 1000], codes[a:a + 1000], labels[a:a + 1000],
                         metadata=[encode(m) for m in metas[a:a + 1000]] if with_metadata else None)
        write_us.append(round((time.perf_counter() - began) / N * 1e6, 1))
        used.append(int(redis_client.info("memory")["used_memory"]) - before)
        began = time.perf_counter()
        Shard(shard, store, 64, "v", 100, 1000, CollectorRegistry()).open()
        open_us.append(round((time.perf_counter() - began) / N * 1e6, 1))
    in_redis = (used[1] - used[0]) / N
    figures.update({"redis_bytes_per_item": round(in_redis, 1), "redis_item_without_metadata": round(used[0] / N, 1),
                    "upsert_us_per_item_without_with": write_us, "shard_open_us_per_item_without_with": open_us,
                    "load_average": round(os.getloadavg()[0], 2)})
    print(json.dumps(figures))
    assert mirror < MIRROR_BUDGET and in_redis < REDIS_BUDGET, figures
