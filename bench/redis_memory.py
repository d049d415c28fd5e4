"""Redis memory per item of one shard's layout, and the write and load rates that come with it.

    .venv/bin/python bench/redis_memory.py --items 1000000      # ≈ 40 s
    .venv/bin/python bench/redis_memory.py --items 100000       # the quick version

Starts a fresh redis-server as the launcher does (but without fsync, which changes time, not
memory), writes N items × 64-bit codes with ids `item-000000000` (13 bytes) through
``ShardStore.upsert`` in batches of 10 000, and reports Redis ``used_memory`` after minus before,
per item (target ≤ 64 bytes), then reads everything back with ``ShardStore.load``. Ends with a JSON
line. See docs/redis-layout.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from index_service.store import ShardStore
from orbithash_local.redis_server import RedisServer

BATCH = 10_000


def measure(items: int, bits: int = 64) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="orbithash-redis-memory-") as work:
        server = RedisServer(Path(work), appendfsync="no", shards=1)
        try:
            client = server.client()
            store = ShardStore(client, 0, bits, "bench")
            store.claim()
            before = int(client.info("memory")["used_memory"])
            rng = np.random.default_rng(0)
            start = time.perf_counter()
            for first in range(0, items, BATCH):
                ids = [f"item-{i:09d}" for i in range(first, min(items, first + BATCH))]
                store.upsert(ids, rng.integers(0, 256, (len(ids), (bits + 7) // 8), dtype=np.uint8),
                             np.zeros(len(ids), np.int32))
            written = time.perf_counter() - start
            after = int(client.info("memory")["used_memory"])
            start = time.perf_counter()
            loaded = store.load()
            load_s = time.perf_counter() - start
            assert len(loaded.ids) == items
            client.close()
        finally:
            server.stop()
    return {"items": items, "redis_bytes_per_item": round((after - before) / items, 1),
            "upsert_items_per_s": round(items / written), "load_s": round(load_s, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    figures = measure(args.items)
    print(f"{args.items} items x 64-bit: Redis {figures['redis_bytes_per_item']} bytes/item (target <= 64), "
          f"upsert {figures['upsert_items_per_s']} items/s, load {figures['load_s']} s")
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
