"""Queries per second on ONE index shard over gRPC at concurrency 1, 2 and 4.

    .venv/bin/python bench/shard_concurrency.py [--quick] [--checkout DIR]

Starts a real redis-server and ``python -m index_service`` on loopback, fills the shard with
uniform random 64-bit codes through ``Add``, then for each concurrency c runs c client threads,
each sending single-query ``Search`` calls (k = 100) back to back for a fixed time, and counts the
answers. Every answer is checked to hold k hits. The requests ask for packed hits, as the gateway
does (``--unpacked``: one ``Hit`` message per hit, as a client of the shard's public form would).

It also reads the user + system CPU time of the shard process and of this process (the load
generator) around each level, and prints the CPU both spend per call and the **ceiling** that
puts on the speedup: a machine of C cores serves at most C ÷ (CPU per call) calls/s, so
``ceiling_c4 = cores / (cpu_ms_per_call at c=4 / 1000) / qps_c1``. A speedup below 1.8 with a
ceiling below 1.8 says the machine is out of cores, not that the shard serialises.

The reference in the same run: each level is also run against a bare gRPC server that answers
every call at once (bench/grpc_floor.py), right after the shard's, so ``floor_speedup_c4`` says
what gRPC's Python layer reaches on this machine with no shard work at all.

``--checkout DIR`` runs the shard process from another checkout of this repository (e.g. a
``git worktree`` of an older commit) while the client stays this one, so a before/after
comparison uses the same load generator. Prints a table and a
final JSON line (``qps_c1``, ``qps_c2``, ``qps_c4``, ``speedup_c4``, ``cpu_ms_per_call_c<N>``
(shard, client), ``ceiling_c4``,
``floor_qps``, ``floor_speedup_c4``, per size).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import numpy as np
from grpc_floor import Call, FloorServer, floor_call, rate, rate_measured

import index_service
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import start_service
from orbithash_local.redis_server import RedisServer

REPO = Path(__file__).resolve().parents[1]
BITS, VERSION, K = 64, "bench", 100


def fill(stub: rpc.IndexShardStub, n: int, rng: np.random.Generator) -> None:
    codes = rng.integers(0, 256, (n, BITS // 8), dtype=np.uint8)
    for a in range(0, n, 1000):
        items = [pb.Item(id=f"item-{i}", code=codes[i].tobytes(), label=i % 21) for i in range(a, min(n, a + 1000))]
        stub.Add(pb.AddRequest(items=items, bits=BITS, model_version=VERSION), timeout=60)


def hit_count(reply: pb.ShardSearchResponse) -> int:
    """Hits of the first query, in either reply form."""
    return len(reply.packed[0].distances) // 4 if reply.packed else len(reply.results[0].hits)


def searcher(queries: list[pb.ShardSearchRequest]) -> Callable[[grpc.Channel], Call]:
    """A ``grpc_floor.rate`` call factory: call i sends query i (mod their number), checks k hits."""

    def make(channel: grpc.Channel) -> Call:
        stub = rpc.IndexShardStub(channel)

        def one(i: int) -> None:
            assert hit_count(stub.Search(queries[i % len(queries)], timeout=30)) == K

        return one

    return make


def measure(n: int, seconds: float, checkout: Path, out: dict, packed: bool = True) -> None:
    rng = np.random.default_rng(n)
    with tempfile.TemporaryDirectory(prefix="orbithash-conc-") as tmp:
        redis_server = RedisServer(Path(tmp) / "redis", appendfsync="always")
        shard = None
        try:
            user, password_file = redis_server.shard_credentials(0)
            args = ["--redis-url", redis_server.url, "--redis-username", user, "--redis-password-file",
                    str(password_file), "--bits", str(BITS), "--model-version", VERSION]
            shard = start_service("shard", index_service, args, Path(tmp), checkout=checkout)
            address = shard.address
            with grpc.insecure_channel(address) as channel:
                fill(rpc.IndexShardStub(channel), n, rng)
            queries = [pb.ShardSearchRequest(codes=[q.tobytes()], k=K, bits=BITS, model_version=VERSION, packed=packed)
                       for q in rng.integers(0, 256, (256, BITS // 8), dtype=np.uint8)]
            # Warm-up; a shard of >= MIH_MIN_ITEMS builds its multi-index tables in the background
            # after its first searches: let that finish so it does not load the first level only.
            search = searcher(queries)
            rate(address, 2, 1.0, search)
            time.sleep(3.0 if n >= 250_000 else 0.0)
            rate(address, 2, 1.0, search)
            # The floor (grpc_floor.py) level by level beside the shard, so both see the same machine.
            with FloorServer() as floor:
                rate(floor.address, 2, 0.5, floor_call)
                measured, floors = {}, {}
                for c in (1, 2, 4):
                    measured[c] = rate_measured(address, shard.process.pid, c, seconds, search)
                    floors[c] = rate_measured(floor.address, floor.pid, c, seconds, floor_call)
        finally:
            if shard is not None:
                shard.process.stop()
            redis_server.stop()
    label = f"{n // 1000}k"
    qps1 = measured[1][0]
    for c, (value, shard_ms, client_ms) in measured.items():
        out[f"qps_c{c}_{label}"] = round(value, 1)
        out[f"cpu_ms_per_call_c{c}_{label}"] = {"shard": round(shard_ms, 3), "client": round(client_ms, 3)}
        print(f"  {label:>6} codes, concurrency {c}: {value:8.1f} queries/s  ({value / qps1:.2f}x of c=1); "
              f"CPU per call: shard {shard_ms:.3f} ms, load generator {client_ms:.3f} ms")
    cores = len(os.sched_getaffinity(0))
    ceiling = cores / (sum(measured[4][1:]) / 1e3) / qps1
    out[f"speedup_c4_{label}"] = round(measured[4][0] / qps1, 2)
    out[f"ceiling_c4_{label}"] = round(ceiling, 2)
    out[f"floor_qps_{label}"] = {c: round(f[0], 1) for c, f in floors.items()}
    out[f"floor_speedup_c4_{label}"] = round(floors[4][0] / floors[1][0], 2)
    print(f"  {label:>6} codes: speedup at concurrency 4 {measured[4][0] / qps1:.2f}x; ceiling on {cores} cores "
          f"at that CPU per call {ceiling:.2f}x")
    print("  gRPC floor (grpc_floor.py, same levels): " + ", ".join(f"c={c} {f[0]:.0f}/s" for c, f in floors.items())
          + f"; speedup at concurrency 4 {floors[4][0] / floors[1][0]:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one 100k shard, 3 s per concurrency")
    parser.add_argument("--checkout", type=Path, default=REPO, help="repository the shard process runs from")
    parser.add_argument("--seconds", type=float, default=None, help="seconds per concurrency level")
    parser.add_argument("--sizes", type=int, nargs="+", default=None, help="shard sizes (codes)")
    parser.add_argument("--unpacked", action="store_true", help="ask for one Hit message per hit, not packed hits")
    args = parser.parse_args()
    sizes = args.sizes or ([100_000] if args.quick else [100_000, 1_000_000])
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    out: dict = {"checkout": str(args.checkout.resolve()), "cpus": os.cpu_count(), "packed": not args.unpacked}
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; shard from {args.checkout}")
    for n in sizes:
        measure(n, seconds, args.checkout.resolve(), out, packed=not args.unpacked)
    out["load_avg"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
