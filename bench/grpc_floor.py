"""The gRPC-Python floor: the same calls as a shard's, to a server that does nothing.

    .venv/bin/python bench/grpc_floor.py [--seconds 3] [--reply-bytes 2500]

The reference for the two shard RPC targets of issue 14 (``rpc_p50_ms`` ≤ 0.9 ms and
``shard_concurrency_speedup`` ≥ 1.8): a bare ``grpc.server`` (sync, the shard's thread count, no
interceptor, one bytes-in/bytes-out method answering a fixed reply as large as a packed k = 100
shard answer) in a child process, called from this process as the shard benches call a shard.
What the shard spends above this floor is ours to cut; the floor itself is gRPC's Python layer
and the machine. bench/index_search.py (``rpc_floor_p50_ms``) and bench/shard_concurrency.py
(``floor_speedup_c4``) measure it in the same run as the shard, alternating with it.

Prints p50 at concurrency 1, calls/s at concurrency 1, 2 and 4 with the CPU per call of both
processes, and a final JSON line (``floor_p50_ms``, ``floor_qps_c<N>``, ``floor_speedup_c4``,
``floor_cpu_ms_per_call_c<N>``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

import grpc
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_per_query import cpu_seconds

METHOD = "/orbithash.bench.Floor/Call"
PACKED_K100_BYTES = 2500  # a packed ShardSearchResponse of 100 hits with short ids (docs/rpc-overhead.md)
SERVER_THREADS = 16  # as every service's default (orbithash_serving.settings, workers)

Call = Callable[[int], None]


def serve(reply_bytes: int) -> None:
    """The child: bind a free loopback port, print it, answer every call with ``reply_bytes`` bytes."""
    reply = bytes(reply_bytes)
    handler = grpc.method_handlers_generic_handler(
        "orbithash.bench.Floor", {"Call": grpc.unary_unary_rpc_method_handler(lambda request, context: reply)})
    server = grpc.server(ThreadPoolExecutor(SERVER_THREADS), handlers=[handler])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.stop(0)


class FloorServer:
    """The bare server in a child process, for as long as the ``with`` block runs."""

    def __init__(self, reply_bytes: int = PACKED_K100_BYTES) -> None:
        self.process = subprocess.Popen([sys.executable, __file__, "--serve", "--reply-bytes", str(reply_bytes)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line.strip().isdigit():
            self.close()
            raise RuntimeError(f"the floor server did not start (it printed {line!r})")
        self.address = f"127.0.0.1:{int(line)}"
        self.pid = self.process.pid

    def close(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> FloorServer:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


def floor_call(channel: grpc.Channel) -> Call:
    """One empty call per invocation, with a request of a single-code search's size."""
    call = channel.unary_unary(METHOD)
    request = bytes(40)

    def one(_: int) -> None:
        call(request, timeout=30)

    return one


def rate(address: str, concurrency: int, seconds: float, make_call: Callable[[grpc.Channel], Call]) -> float:
    """Answers per second with ``concurrency`` threads, each on its own channel, calling back to back."""
    counts = [0] * concurrency
    start = threading.Barrier(concurrency + 1)
    stop_at: list[float] = []

    def worker(w: int) -> None:
        with grpc.insecure_channel(address) as channel:
            call = make_call(channel)
            call(w)  # connect before the clock starts
            start.wait()
            i = w
            while time.perf_counter() < stop_at[0]:
                call(i)
                counts[w] += 1
                i += concurrency

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(concurrency)]
    for t in threads:
        t.start()
    stop_at.append(time.perf_counter() + seconds + 0.05)
    t0 = time.perf_counter()
    start.wait()
    for t in threads:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def rate_measured(address: str, pid: int, concurrency: int, seconds: float,
                  make_call: Callable[[grpc.Channel], Call]) -> tuple[float, float, float]:
    """(answers/s, server CPU ms per call, this process's CPU ms per call) of one ``rate``."""
    server0, client0, t0 = cpu_seconds(pid), cpu_seconds(os.getpid()), time.perf_counter()
    qps = rate(address, concurrency, seconds, make_call)
    calls = qps * (time.perf_counter() - t0)
    return qps, (cpu_seconds(pid) - server0) * 1e3 / calls, (cpu_seconds(os.getpid()) - client0) * 1e3 / calls


def p50_ms(call: Call, n: int) -> float:
    times = []
    for i in range(n):
        t = time.perf_counter()
        call(i)
        times.append(time.perf_counter() - t)
    return round(float(np.percentile(times, 50)) * 1e3, 3)


def measure(seconds: float, reply_bytes: int, n_latency: int = 500) -> dict:
    out: dict = {"floor_reply_bytes": reply_bytes}
    with FloorServer(reply_bytes) as server, grpc.insecure_channel(server.address) as channel:
        call = floor_call(channel)
        p50_ms(call, 50)  # warm-up
        out["floor_p50_ms"] = p50_ms(call, n_latency)
        measured = {c: rate_measured(server.address, server.pid, c, seconds, floor_call) for c in (1, 2, 4)}
    for c, (qps, server_ms, client_ms) in measured.items():
        out[f"floor_qps_c{c}"] = round(qps, 1)
        out[f"floor_cpu_ms_per_call_c{c}"] = {"server": round(server_ms, 3), "client": round(client_ms, 3)}
    out["floor_speedup_c4"] = round(measured[4][0] / measured[1][0], 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=3.0, help="seconds per concurrency level")
    parser.add_argument("--reply-bytes", type=int, default=PACKED_K100_BYTES, help="size of every answer")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.reply_bytes)
        return
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    out = measure(args.seconds, args.reply_bytes)
    print(f"  empty call, {args.reply_bytes} bytes back, concurrency 1: p50 {out['floor_p50_ms']:.3f} ms")
    for c in (1, 2, 4):
        cpu = out[f"floor_cpu_ms_per_call_c{c}"]
        print(f"  concurrency {c}: {out[f'floor_qps_c{c}']:8.1f} calls/s "
              f"({out[f'floor_qps_c{c}'] / out['floor_qps_c1']:.2f}x of c=1); "
              f"CPU per call: server {cpu['server']:.3f} ms, client {cpu['client']:.3f} ms")
    out["load_avg"] = round(os.getloadavg()[0], 2)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
