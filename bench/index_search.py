"""Index search benchmark: HammingIndex vs FAISS IndexBinaryFlat, and a real shard over gRPC.

    python bench/index_search.py            # full run (1M flat, 10M clustered, 1M over gRPC)
    python bench/index_search.py --quick    # ~1 minute (100k flat, 1M clustered, 100k over gRPC)
    python bench/index_search.py --sizes-only [--quick]   # only 10k, 100k x 64-bit, 1M (300k) x 128, x 256

Same process, same codes, FAISS as reference, one thread each unless a row says otherwise,
median over many queries. Prints a table, then one JSON line with every figure. Ratios are our
time / FAISS time (lower is better); ``sublinear_speedup`` is FAISS time / our time on codes
clustered like a trained model's, after checking that both return the same distances and that
the MIH path returns exactly what our scan returns.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orbithash.index import MIH_MIN_ITEMS, HammingIndex

ROWS: list[tuple[str, str, str, str]] = []


def row(name: str, ours: float | str, ref: float | str = "", note: str = "") -> None:
    def fmt(v: float | str) -> str:
        return f"{v:.3f}" if isinstance(v, float) else v

    ROWS.append((name, fmt(ours), fmt(ref), note))
    print(f"  {name:<44} {fmt(ours):>10} {fmt(ref):>10}  {note}", flush=True)


def uniform(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    out = np.empty((n, bits // 8), np.uint8)
    for a in range(0, n, 1 << 20):
        b = min(n, a + (1 << 20))
        out[a:b] = np.packbits(rng.integers(0, 2, (b - a, bits), dtype=np.uint8), axis=1)
    return out


def trained_like(rng: np.random.Generator, n: int, centres: np.ndarray, flip: float) -> np.ndarray:
    """Each code = its class centre with every bit flipped with probability ``flip``."""
    bits = centres.shape[1]
    out = np.empty((n, bits // 8), np.uint8)
    for a in range(0, n, 1 << 20):
        b = min(n, a + (1 << 20))
        signs = centres[rng.integers(0, len(centres), b - a)] ^ (rng.random((b - a, bits), np.float32) < flip)
        out[a:b] = np.packbits(signs, axis=1)
    return out


def median_ms(fn: Callable[[np.ndarray], object], queries: np.ndarray, step: int = 1) -> float:
    times = []
    for a in range(0, len(queries) - step + 1, step):
        t = time.perf_counter()
        fn(queries[a:a + step])
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def load_index(codes: np.ndarray, bits: int, threads: int) -> HammingIndex:
    n = len(codes)
    index = HammingIndex(bits, capacity=n, threads=threads)
    index.put(np.arange(n), [str(i) for i in range(n)], codes, np.zeros(n, np.int32))
    return index


def flat_section(n: int, nq: int, out: dict) -> None:
    """Uniform codes, k=100: the scan's home ground (MIH tables exist but auto mode backs off)."""
    rng = np.random.default_rng(0)
    for bits, key in ((64, "ratio_64"), (48, "ratio_48")):
        flat_one(n, bits, uniform(rng, n, bits), uniform(rng, nq, bits), key, out)
    out["n_flat"] = n


def flat_one(n: int, bits: int, codes: np.ndarray, queries: np.ndarray, key: str, out: dict) -> None:
    index = load_index(codes, bits, threads=1)
    if n >= 1 << 18:
        index.build_multi_index()  # as a shard does after load; auto must still pick the scan here
    ref = faiss.IndexBinaryFlat(bits)
    ref.add(codes)
    faiss.omp_set_num_threads(1)
    d_ref, _ = ref.search(queries[:20], 100)
    got = index.search(queries[:20], 100)
    assert [[d for _, d, _ in hits] for hits in got] == d_ref.tolist(), "distances differ from FAISS"
    ours = median_ms(lambda q: index.search(q, 100), queries)
    theirs = median_ms(lambda q: ref.search(q, 100), queries)
    out[key] = round(ours / theirs, 3)
    row(f"{n // 1000}k x {bits}-bit, 1 query, k=100 (ms)", ours, theirs, f"ratio {out[key]}")
    if bits != 64:
        return
    batch = median_ms(lambda q: index.search(q, 100), queries, 64)
    batch_ref = median_ms(lambda q: ref.search(q, 100), queries, 64)
    out["ratio_batch"] = round(batch / batch_ref, 3)
    row(f"{n // 1000}k x 64-bit, batch of 64, k=100 (ms)", batch, batch_ref, f"ratio {out['ratio_batch']}")
    index2 = load_index(codes, bits, threads=2)
    faiss.omp_set_num_threads(2)
    two = median_ms(lambda q: index2.search(q, 100), queries, 64)
    two_ref = median_ms(lambda q: ref.search(q, 100), queries, 64)
    row("  same, 2 threads each (ms)", two, two_ref, f"ratio {two / two_ref:.3f}")
    one2 = median_ms(lambda q: index2.search(q, 100), queries)
    one2_ref = median_ms(lambda q: ref.search(q, 100), queries)
    row("  1 query, 2 threads each (ms)", one2, one2_ref, f"ratio {one2 / one2_ref:.3f}")
    faiss.omp_set_num_threads(1)


def same_answer(got: list, d_ref: np.ndarray, i_ref: np.ndarray) -> None:
    """Our hits (ids are slot numbers as str) against FAISS's: the same distances, and the same ids
    closer than the k-th distance; at that distance FAISS orders ties arbitrarily, we by id."""
    for hits, d_row, i_row in zip(got, d_ref.tolist(), i_ref.tolist(), strict=True):
        assert [d for _, d, _ in hits] == d_row, "distances differ from FAISS"
        cut = d_row[-1]
        assert {int(i) for i, d, _ in hits if d < cut} == {i for i, d in zip(i_row, d_row, strict=True) if d < cut}


def paired_medians(ours: Callable[[np.ndarray], object], ref: Callable[[np.ndarray], object], queries: np.ndarray,
                   repeats: int = 4) -> tuple[float, float]:
    """``median_ms`` of each over the same queries, alternated ``repeats`` times (who goes first
    alternating too), and the median of those medians: on a shared machine the load drifts, and
    alternating lets a drift hit both alike."""
    mine, theirs = [], []
    for r in range(repeats):
        for fn, times in ((ours, mine), (ref, theirs))[::1 if r % 2 == 0 else -1]:
            times.append(median_ms(fn, queries))
    return statistics.median(mine), statistics.median(theirs)


def size_row(codes: np.ndarray, queries: np.ndarray, bits: int) -> tuple[float, float, float]:
    """(our ms, FAISS ms, our ms as tuples) for one query at a time, k=100, after checking both answer alike.

    Ours is ``search_ranked``: the columns a shard serves (ids as bytes, distances, labels), as FAISS
    answers arrays; ``search`` also makes a str and a tuple per hit, timed as the third figure.
    """
    index = load_index(codes, bits, threads=1)
    if len(codes) >= MIH_MIN_ITEMS:
        index.build_multi_index()
    ref = faiss.IndexBinaryFlat(bits)
    ref.add(codes)
    d_ref, i_ref = ref.search(queries[:50], 100)  # also warms both
    same_answer(index.search(queries[:50], 100), d_ref, i_ref)
    ours, theirs = paired_medians(lambda q: index.search_ranked(q, 100), lambda q: ref.search(q, 100), queries)
    return ours, theirs, median_ms(lambda q: index.search(q, 100), queries)


def sizes_section(n_long: int, nq: int, out: dict) -> None:
    """One query, k=100, uniform codes, one thread each: shard sizes and code lengths against FAISS.

    Small shards show our fixed cost per call, long codes the popcount loop over 2 and 4 words.
    As in ``flat_one``, a shard of >= 2^18 items has MIH tables and auto mode must back off to the scan.
    """
    rng = np.random.default_rng(4)
    faiss.omp_set_num_threads(1)
    for n, bits, key in ((10_000, 64, "ratio_10k"), (100_000, 64, "ratio_100k"), (n_long, 128, "ratio_128"),
                         (n_long, 256, "ratio_256")):
        ours, theirs, tuples = size_row(uniform(rng, n, bits), uniform(rng, nq, bits), bits)
        out[key] = round(ours / theirs, 3)
        out[f"{key}_ms"] = [round(ours, 4), round(theirs, 4)]
        out[f"{key}_tuples"] = round(tuples / theirs, 3)
        row(f"{n // 1000}k x {bits}-bit, 1 query, k=100 (ms)", ours, theirs,
            f"ratio {out[key]} (target <= 1.0); as tuples {tuples:.3f} ms")
    out["n_long"] = n_long


def sublinear_section(n: int, nq: int, out: dict) -> None:
    """Trained-like clustered codes, k=10: MIH against FAISS's linear scan, results checked equal."""
    bits, k, flip = 64, 10, 0.08
    rng = np.random.default_rng(1)
    centres = rng.integers(0, 2, (21, bits), dtype=np.uint8).astype(bool)
    t = time.perf_counter()
    codes = trained_like(rng, n, centres, flip)
    queries = trained_like(rng, nq, centres, flip)  # drawn like the data, not taken from it
    index = load_index(codes, bits, threads=1)
    load_s = time.perf_counter() - t
    tables = index.build_multi_index()
    row(f"{n // 1_000_000}M clustered: load ids+codes (s)", load_s, "", "21 classes, flip p=0.08")
    row("  MIH build (s)", tables.build_s, "", f"substrings {'/'.join(map(str, tables.widths.tolist()))} bits")
    row("  MIH tables (bytes/item)", f"{tables.nbytes / n:.1f}", "", "int32 slots + inline codes + offsets")
    ref = faiss.IndexBinaryFlat(bits)
    ref.add(codes)
    faiss.omp_set_num_threads(1)
    d_ref, i_ref = ref.search(queries, k)
    got = index.search(queries, k)
    assert got == index.search(queries, k, strategy="scan"), "MIH differs from the scan"
    same_answer(got, d_ref, i_ref)
    ours = median_ms(lambda q: index.search(q, k), queries)
    scan = median_ms(lambda q: index.search(q, k, strategy="scan"), queries)
    theirs = median_ms(lambda q: ref.search(q, k), queries)
    out["sublinear_speedup"] = round(theirs / ours, 2)
    out["mih_build_s"] = round(tables.build_s, 2)
    out["mih_bytes_per_item"] = round(tables.nbytes / n, 1)
    out["n_sublinear"] = n
    row(f"{n // 1_000_000}M clustered, 1 query, k=10, auto=MIH (ms)", ours, theirs,
        f"speedup {out['sublinear_speedup']}x, identical results")
    row("  same, our linear scan (ms)", scan, theirs, f"speedup {theirs / scan:.2f}x")


def memory_section(n: int, out: dict) -> None:
    """The index's own memory per item (id storage, codes, labels; MIH tables excluded) and load time.

    ``nbytes`` counts the arrays the index holds; tracemalloc counts every allocation it retains
    (numpy registers its buffers), with the caller's id strings already dropped, as after a reload.
    """
    import gc
    import tracemalloc

    rng = np.random.default_rng(3)
    codes, labels, slots = uniform(rng, n, 64), np.zeros(n, np.int32), np.arange(n)
    ids = [f"item-{i:09d}" for i in range(n)]
    times = []
    for _ in range(3):
        index = HammingIndex(64)
        t = time.perf_counter()
        index.put(slots, ids, codes, labels)
        times.append(time.perf_counter() - t)
    probe = [ids[i] for i in rng.integers(0, n, 100_000).tolist()]
    t = time.perf_counter()
    for item_id in probe:
        index.get(item_id)
    get_us = (time.perf_counter() - t) / len(probe) * 1e6
    del index, ids, probe
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    index = HammingIndex(64)
    index.put(slots, [f"item-{i:09d}" for i in range(n)], codes, labels)
    gc.collect()
    retained = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    out["bytes_per_item_index"] = round(index.nbytes / n, 1)
    out["bytes_per_item_traced"] = round(retained / n, 1)
    out["put_s"] = round(min(times), 3)
    out["get_us"] = round(get_us, 2)
    row(f"{n // 1000}k x 64-bit, index arrays (bytes/item)", out["bytes_per_item_index"], "",
        "ids 'item-%09d', MIH excluded; budget 64")
    row("  tracemalloc retained after load (bytes/item)", out["bytes_per_item_traced"])
    row(f"  put {n // 1000}k into an empty index (s)", out["put_s"], "", "min of 3")
    row("  get one id (us)", out["get_us"], "", "read lock + lookup + code copy")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def rpc_section(n: int, out: dict) -> None:
    """A real redis-server (appendfsync always) and ``python -m index_service`` over loopback."""
    import grpc
    from grpc_floor import FloorServer, floor_call

    import index_service
    from gateway.clients import ShardClient
    from gateway.core import ShardQuery
    from gateway.merge import merge_topk
    from orbithash_api.v1 import orbithash_pb2 as pb
    from orbithash_api.v1 import orbithash_pb2_grpc as rpc
    from orbithash_local.cluster import start_service
    from orbithash_local.redis_server import RedisServer

    bits, version = 64, "bench"
    rng = np.random.default_rng(2)
    codes = uniform(rng, n, bits)
    with tempfile.TemporaryDirectory(prefix="orbithash-bench-") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis", appendfsync="always")
        shard = None
        try:
            user, password_file = redis_server.shard_credentials(0)
            args = ["--redis-url", redis_server.url, "--redis-username", user, "--redis-password-file",
                    str(password_file), "--bits", str(bits), "--model-version", version]
            service = start_service("shard", index_service, args, Path(tmp), timeout=120)
            shard, address = service.process, service.address
            client = redis_server.client()
            redis_before, rss_before = int(client.info("memory")["used_memory"]), rss_bytes(shard.pid)
            requests = [pb.AddRequest(items=[pb.Item(id=f"item-{i}", code=codes[i].tobytes(), label=i % 21)
                                             for i in range(a, min(n, a + 1000))], bits=bits, model_version=version)
                        for a in range(0, n, 1000)]
            # The floor: a bare gRPC server (bench/grpc_floor.py), called between the shard's calls.
            with (grpc.insecure_channel(address) as channel, FloorServer() as floor,
                  grpc.insecure_channel(floor.address) as floor_channel):
                stub = rpc.IndexShardStub(channel)
                t = time.perf_counter()
                for request in requests:
                    stub.Add(request, timeout=60)
                add_s = time.perf_counter() - t
                out["add_codes_per_s"] = round(n / add_s)
                row(f"gRPC Add {n // 1000}k codes, batches of 1000 (codes/s)", f"{n / add_s:.0f}", "",
                    "Redis appendfsync always")
                queries = uniform(rng, 250, bits)
                search = [pb.ShardSearchRequest(codes=[q.tobytes()], k=100, bits=bits, model_version=version)
                          for q in queries]
                packed = [pb.ShardSearchRequest(codes=[q.tobytes()], k=100, bits=bits, model_version=version,
                                                packed=True) for q in queries]
                for request in search[:50]:  # warm-up; lets a shard >= MIH_MIN_ITEMS build its tables
                    stub.Search(request, timeout=30)
                time.sleep(3)
                times, times_old, times_client, times_client_old, times_floor = [], [], [], [], []
                shard_client, shard_client_old = ShardClient(0, address), ShardClient(0, address, packed=False)
                empty_call = floor_call(floor_channel)
                empty_call(0)
                # Paired: each query asked both ways, the order alternating, so load drifts hit both alike.
                for j, (request, old) in enumerate(zip(packed[50:], search[50:], strict=True)):
                    for ask in ((request, old) if j % 2 else (old, request)):
                        t = time.perf_counter()
                        reply = stub.Search(ask, timeout=30)
                        (times if ask.packed else times_old).append(time.perf_counter() - t)
                        hit_count = len(reply.packed[0].distances) // 4 if ask.packed else len(reply.results[0].hits)
                        assert hit_count == 100
                    query = ShardQuery(codes=tuple(request.codes), k=100, bits=bits, model_version=version)
                    for c in ((shard_client, shard_client_old) if j % 2 else (shard_client_old, shard_client)):
                        t = time.perf_counter()
                        hits = merge_topk(c.search(query, 30), 100)
                        (times_client if c.packed else times_client_old).append(time.perf_counter() - t)
                        assert len(hits) == 100
                    t = time.perf_counter()  # the same machine's gRPC floor, between the shard's calls
                    empty_call(j)
                    times_floor.append(time.perf_counter() - t)
                shard_client.close()
                shard_client_old.close()
            for key, ts in (("rpc", times), ("rpc_unpacked", times_old), ("rpc_client", times_client),
                            ("rpc_client_unpacked", times_client_old), ("rpc_floor", times_floor)):
                out[f"{key}_p50_ms"] = round(float(np.percentile(ts, 50)) * 1e3, 3)
                out[f"{key}_p99_ms"] = round(float(np.percentile(ts, 99)) * 1e3, 3)
            row(f"gRPC Search {n // 1000}k, 1 query, k=100, p50 (ms)", out["rpc_p50_ms"], "",
                "200 queries, loopback, packed hits")
            row(f"gRPC Search {n // 1000}k, 1 query, k=100, p99 (ms)", out["rpc_p99_ms"])
            row("  empty call to a bare gRPC server, same reply size, p50 (ms)", out["rpc_floor_p50_ms"], "",
                "the gRPC-Python floor (bench/grpc_floor.py), interleaved")
            row("  same, one Hit message per hit, p50 / p99 (ms)",
                f"{out['rpc_unpacked_p50_ms']:.3f} / {out['rpc_unpacked_p99_ms']:.3f}", "",
                "the answer before issue 14")
            row("  gateway ShardClient.search + merge to 100 Hit, p50 / p99 (ms)",
                f"{out['rpc_client_p50_ms']:.3f} / {out['rpc_client_p99_ms']:.3f}", "",
                f"unpacked {out['rpc_client_unpacked_p50_ms']:.3f} / {out['rpc_client_unpacked_p99_ms']:.3f}")
            out["bytes_per_item_shard"] = round((rss_bytes(shard.pid) - rss_before) / n, 1)
            out["bytes_per_item_redis"] = round((int(client.info("memory")["used_memory"]) - redis_before) / n, 1)
            out["n_rpc"] = n
            row("shard process RSS growth (bytes/item)", out["bytes_per_item_shard"], "", "ids, codes, MIH tables")
            row("Redis used_memory growth (bytes/item)", out["bytes_per_item_redis"])
            client.close()

            # Crash the shard (SIGKILL), then restart Redis from its append-only file, then start the
            # shard again: every acknowledged item must come back, and the same search answers.
            probe = search[50]
            with grpc.insecure_channel(address) as channel:
                before = rpc.IndexShardStub(channel).Search(probe, timeout=30)
            shard.kill()
            redis_server.stop()
            redis_server = RedisServer(Path(tmp) / "redis", port=redis_server.port, appendfsync="always")
            t = time.perf_counter()
            shard = start_service("shard", index_service, args, Path(tmp), port=int(address.rsplit(":", 1)[1]),
                                  timeout=300).process
            out["reload_s"] = round(time.perf_counter() - t, 2)
            with grpc.insecure_channel(address) as channel:
                stub = rpc.IndexShardStub(channel)
                count = stub.Stats(pb.StatsRequest(), timeout=30).count
                after = stub.Search(probe, timeout=30)
            assert count == n, f"{count} items after restart, {n} acknowledged"
            assert after == before, "a different answer after restart"
            row(f"shard restart after crash + Redis restart: {n // 1000}k items back (s)", out["reload_s"], "",
                "process start + load from Redis + index build; count and answers equal")
        finally:
            if shard is not None:
                shard.stop()
            redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    parser.add_argument("--skip-rpc", action="store_true", help="no redis-server / gRPC part")
    parser.add_argument("--rpc-only", action="store_true", help="only the redis-server / gRPC part")
    parser.add_argument("--sizes-only", action="store_true", help="only the size and code-length rows against FAISS")
    args = parser.parse_args()
    n_flat, n_sub, n_rpc = (100_000, 1_000_000, 100_000) if args.quick else (1_000_000, 10_000_000, 1_000_000)
    n_long = 300_000 if args.quick else 1_000_000
    out: dict = {}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; faiss {faiss.__version__}")
    print(f"  {'measure':<44} {'ours':>10} {'faiss':>10}")
    if not args.rpc_only:
        sizes_section(n_long, 400 if args.quick else 200, out)
    if not (args.rpc_only or args.sizes_only):
        memory_section(n_flat, out)
        flat_section(n_flat, 400, out)
        sublinear_section(n_sub, 200, out)
    if not (args.skip_rpc or args.sizes_only):
        rpc_section(n_rpc, out)
    out["load_avg"] = round(os.getloadavg()[0], 2)
    keys = ["ratio_64", "ratio_48", "ratio_batch", "ratio_10k", "ratio_100k", "ratio_128", "ratio_256",
            "sublinear_speedup", "bytes_per_item_shard", "bytes_per_item_redis", "rpc_p50_ms", "rpc_p99_ms",
            "add_codes_per_s"]
    print(json.dumps({**{key: out.get(key) for key in keys}, **{key: v for key, v in out.items() if key not in keys}}))


if __name__ == "__main__":
    main()
