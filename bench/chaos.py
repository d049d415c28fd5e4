"""Chaos and soak: a mixed load on a supervised local cluster while its processes are killed and stopped.

    .venv/bin/python bench/chaos.py --quick            # ≈ 1 min: five faults (the CI version)
    .venv/bin/python bench/chaos.py --minutes 10       # faults in turn, then a soak without faults

Starts the whole cluster as ``orbithash up`` does (redis-server, tritonserver, encoder, two shards,
gateway, all on loopback, supervised: a dead child is restarted). Worker threads send searches by
image, id and code, ingest streams (some with a bad item, which must store nothing) and deletes,
each with a client deadline. Meanwhile every process in turn is SIGKILLed (the supervisor restarts
it) or SIGSTOPped for a few seconds and resumed.

An oracle records every answer about a write: acknowledged ingests (present), acknowledged deletes
(deleted), refused ingests and the items a failed ingest's summary says were not stored (never),
and writes whose outcome the client cannot know (a dead gateway, a client deadline: ambiguous,
excluded from the checks). Checked during the run and, at the end, against every shard's
contents: ``lost_acknowledged`` (present but gone), ``phantom_writes`` (never, yet stored or
found), ``resurrected`` (deleted before a search began, yet found by it), ``unflagged_partial``
(a present item missing from a search by its id that did not say which shard failed).

Prints errors by status code, search p50/p99, recovery time per fault (from the kill or the
resume until a search by image answers without a missing shard and a write succeeds), memory growth
per process over the soak, the bad-input matrix (each hostile input's status), and a final JSON line.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import tifffile
from PIL import Image
from tqdm import tqdm

from gateway.placement import shard_for
from gateway.servicer import INGEST_SUMMARY_KEY
from orbithash.data import load_split
from orbithash.export.repository import DEFAULT_MODEL_NAME, model_path
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import Cluster, ClusterConfig

REPO = Path(__file__).resolve().parents[1]
SEARCH_DEADLINE_S = 5.0
WRITE_DEADLINE_S = 15.0
K = 20

PRESENT, DELETED, NEVER, AMBIGUOUS = "present", "deleted", "never", "ambiguous"


@dataclass
class Fact:
    state: str
    since: float  # monotonic time the answer that set the state arrived


class Oracle:
    """What the cluster acknowledged, by id. Ids are never reused, so each has one history."""

    def __init__(self, shards: int) -> None:
        self.shards = shards
        self._facts: dict[str, Fact] = {}
        self._lock = threading.Lock()
        self.violations: Counter[str] = Counter()
        self.examples: dict[str, str] = {}

    def set(self, ids: list[str], state: str) -> None:
        now = time.monotonic()
        with self._lock:
            for item_id in ids:
                self._facts[item_id] = Fact(state, now)

    def get(self, item_id: str) -> Fact | None:
        with self._lock:
            return self._facts.get(item_id)

    def present(self, owner: str) -> list[str]:
        with self._lock:
            return [i for i, f in self._facts.items() if f.state == PRESENT and i.startswith(owner)]

    def by_state(self) -> dict[str, list[str]]:
        with self._lock:
            out: dict[str, list[str]] = {}
            for item_id, fact in self._facts.items():
                out.setdefault(fact.state, []).append(item_id)
            return out

    def violation(self, kind: str, detail: str) -> None:
        with self._lock:
            self.violations[kind] += 1
            self.examples.setdefault(kind, detail)

    def check_hits(self, hits: list[pb.Hit], started: float) -> None:
        """No hit may be an item that was never stored, or one deleted before the search began."""
        for hit in hits:
            fact = self.get(hit.id)
            if fact is None:
                continue  # written by another worker a moment ago, not yet recorded
            if fact.state == NEVER:
                self.violation("phantom_writes", f"search found {hit.id!r}, which was never stored")
            elif fact.state == DELETED and fact.since < started:
                self.violation("resurrected", f"search found {hit.id!r}, deleted before it began")


@dataclass
class Stats:
    codes: Counter[str] = field(default_factory=Counter)
    partial: int = 0
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, code: grpc.StatusCode, started: float | None = None) -> None:
        with self.lock:
            self.codes[code.name] += 1
            if started is not None:
                self.latencies_ms.append((time.monotonic() - started) * 1000)


def _never_sent(err: grpc.RpcError) -> bool:
    """UNAVAILABLE before a connection existed: the request never reached a server."""
    details = (err.details() or "").lower()
    return err.code() == grpc.StatusCode.UNAVAILABLE and ("failed to connect" in details
                                                          or "connection refused" in details)


class Worker(threading.Thread):
    def __init__(self, number: int, address: str, images: list[bytes], codes: list[bytes], oracle: Oracle,
                 stats: Stats, stop: threading.Event) -> None:
        super().__init__(name=f"worker-{number}", daemon=True)
        self.owner = f"w{number}-"
        self.images, self.codes = images, codes
        self.oracle, self.stats, self.stop = oracle, stats, stop
        self.rng = random.Random(number)
        self.channel = grpc.insecure_channel(address, options=[
            ("grpc.initial_reconnect_backoff_ms", 100), ("grpc.max_reconnect_backoff_ms", 1000)])
        self.stub = rpc.GatewayStub(self.channel)
        self.sequence = 0

    def run(self) -> None:
        actions: list[tuple[float, Callable[[], None]]] = [
            (0.35, self.search_by_image), (0.2, self.search_by_id), (0.15, self.search_by_code),
            (0.2, self.ingest), (0.1, self.delete)]
        weights = [w for w, _ in actions]
        while not self.stop.is_set():
            action = self.rng.choices([a for _, a in actions], weights)[0]
            try:
                action()
            except Exception as exc:  # a bench bug must show, not end the thread silently
                self.oracle.violation("bench_errors", repr(exc))
                time.sleep(0.1)
        self.channel.close()

    def _search(self, request: pb.SearchRequest) -> tuple[pb.SearchResponse | None, float]:
        started = time.monotonic()
        try:
            reply = self.stub.Search(request, timeout=SEARCH_DEADLINE_S)
        except grpc.RpcError as err:
            self.failed(err)
            return None, started
        self.stats.record(grpc.StatusCode.OK, started)
        self.stats.partial += reply.partial
        self.oracle.check_hits(list(reply.hits), started)
        if reply.partial != bool(reply.failed_shards):
            self.oracle.violation("unflagged_partial", "partial flag and failed_shards disagree")
        return reply, started

    def failed(self, err: grpc.RpcError) -> None:
        """Count the status; after UNAVAILABLE wait a little, as a real client's retry policy would."""
        self.stats.record(err.code())
        if err.code() == grpc.StatusCode.UNAVAILABLE:
            time.sleep(0.05)

    def search_by_image(self) -> None:
        self._search(pb.SearchRequest(image=self.rng.choice(self.images), k=K))

    def search_by_code(self) -> None:
        self._search(pb.SearchRequest(code=self.rng.choice(self.codes), k=K))

    def search_by_id(self) -> None:
        present = self.oracle.present(self.owner)
        if not present:
            return self.search_by_image()
        item_id = self.rng.choice(present)
        started = time.monotonic()
        try:
            reply = self.stub.Search(pb.SearchRequest(id=item_id, k=100), timeout=SEARCH_DEADLINE_S)
        except grpc.RpcError as err:
            self.failed(err)
            if err.code() == grpc.StatusCode.NOT_FOUND and self.oracle.get(item_id).state == PRESENT:
                self.oracle.violation("lost_acknowledged", f"{item_id!r} acknowledged, then NOT_FOUND")
            return None
        self.stats.record(grpc.StatusCode.OK, started)
        self.oracle.check_hits(list(reply.hits), started)
        zero = [h.id for h in reply.hits if h.distance == 0]
        home = shard_for(item_id, self.oracle.shards)
        if item_id not in zero and len(zero) < len(reply.hits) and home not in reply.failed_shards:
            self.oracle.violation("unflagged_partial", f"search by {item_id!r} missed it, shard {home} not flagged")
        return None

    def ingest(self) -> None:
        n = self.rng.randint(1, 4)
        ids = [f"{self.owner}{self.sequence + i}" for i in range(n)]
        self.sequence += n
        items = [pb.IngestItem(id=i, image=self.rng.choice(self.images)) for i in ids]
        bad = self.rng.random() < 0.1
        if bad:  # a refused stream must store none of its items
            items.append(pb.IngestItem(id=f"{self.owner}{self.sequence}", image=b"not an image"))
            ids.append(items[-1].id)
            self.sequence += 1
        self.oracle.set(ids, AMBIGUOUS)  # until the answer says otherwise
        try:
            summary = self.stub.Ingest(iter(items), timeout=WRITE_DEADLINE_S)
        except grpc.RpcError as err:
            self.failed(err)
            self._failed_ingest(ids, err, bad)
            return
        self.stats.record(grpc.StatusCode.OK)
        if bad:
            self.oracle.violation("phantom_writes", f"a stream with a bad item was acknowledged: {ids}")
        if summary.ingested != len(ids):
            self.oracle.violation("dishonest_summary", f"ingested {summary.ingested} of {len(ids)}")
        self.oracle.set(ids, PRESENT)

    def _failed_ingest(self, ids: list[str], err: grpc.RpcError, bad: bool) -> None:
        trailing = dict(err.trailing_metadata() or ())
        if INGEST_SUMMARY_KEY in trailing:  # the gateway says exactly what was stored
            summary = pb.IngestSummary.FromString(trailing[INGEST_SUMMARY_KEY])
            failed, uncertain = set(summary.failed_shards), set(summary.uncertain_shards)
            home = {i: shard_for(i, self.oracle.shards) for i in ids}
            self.oracle.set([i for i in ids if home[i] not in failed], PRESENT)
            self.oracle.set([i for i in ids if home[i] in failed - uncertain], NEVER)
            # items of a shard that broke off mid-write stay ambiguous: the summary says it cannot know
        elif err.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED):
            self.oracle.set(ids, NEVER)
            if not bad:
                self.oracle.violation("wrongly_refused", f"{err.code().name}: {err.details()}")
        elif "nothing was stored" in (err.details() or "") or _never_sent(err):
            self.oracle.set(ids, NEVER)  # the gateway says so (checked), or the call never left the client
        # else: the gateway died mid-call or the client gave up: the outcome stays ambiguous

    def delete(self) -> None:
        present = self.oracle.present(self.owner)
        if not present:
            return self.ingest()
        victims = self.rng.sample(present, min(len(present), self.rng.randint(1, 2)))
        self.oracle.set(victims, AMBIGUOUS)
        try:
            reply = self.stub.Delete(pb.DeleteRequest(ids=victims), timeout=WRITE_DEADLINE_S)
        except grpc.RpcError as err:
            self.failed(err)
            return
        self.stats.record(grpc.StatusCode.OK)
        if reply.deleted != len(victims):
            self.oracle.violation("lost_acknowledged", f"delete found {reply.deleted} of {victims} present")
        self.oracle.set(victims, DELETED)
        return None


# -- faults -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Fault:
    target: str  # a child's name in the cluster: redis-server, tritonserver, encoder, shard-N, gateway
    action: str  # "kill" (SIGKILL; the supervisor restarts it) or "stop" (SIGSTOP, then SIGCONT)

    @property
    def name(self) -> str:
        return f"{self.action} {self.target}"


FAULTS = [Fault("shard-1", "kill"), Fault("shard-0", "stop"), Fault("redis-server", "stop"),
          Fault("redis-server", "kill"), Fault("tritonserver", "kill"), Fault("tritonserver", "stop"),
          Fault("encoder", "kill"), Fault("encoder", "stop"), Fault("gateway", "kill"), Fault("gateway", "stop")]
QUICK_FAULTS = [Fault("shard-1", "kill"), Fault("shard-0", "stop"), Fault("redis-server", "stop"),
                Fault("tritonserver", "kill"), Fault("gateway", "kill")]


def pid_of(cluster: Cluster, name: str) -> int:
    child = next(c for c in cluster.children() if c.name == name)
    return child.process.pid


_probes = iter(range(10**9))


def answers_in_full(stub: rpc.GatewayStub, image: bytes) -> bool:
    """A search by image answers without a missing shard, and a write is stored and deleted again."""
    probe = f"probe-{next(_probes)}"
    try:
        if stub.Search(pb.SearchRequest(image=image, k=K), timeout=2.0).partial:
            return False
        stub.Ingest(iter([pb.IngestItem(id=probe, image=image)]), timeout=2.0)
        stub.Delete(pb.DeleteRequest(ids=[probe]), timeout=2.0)
    except grpc.RpcError:
        return False
    return True


def inject(cluster: Cluster, fault: Fault, hold_s: float, stub: rpc.GatewayStub, image: bytes,
           timeout_s: float = 90.0) -> float:
    """Apply the fault; seconds from the kill (or the resume) until the cluster answers in full: a
    search by image without a missing shard, and a write."""
    pid = pid_of(cluster, fault.target)
    if fault.action == "kill":
        os.kill(pid, signal.SIGKILL)
        ended = time.monotonic()  # recovery counts from the kill: the supervisor's restart is part of it
    else:
        os.kill(pid, signal.SIGSTOP)
        time.sleep(hold_s)
        os.kill(pid, signal.SIGCONT)
        ended = time.monotonic()
    while not answers_in_full(stub, image):
        if time.monotonic() - ended > timeout_s:
            return float("inf")
        time.sleep(0.1)
    return time.monotonic() - ended


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its process group's other members (Triton's stub)."""
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if int(entry.name) != pid and os.getpgid(int(entry.name)) != pid:
                continue
            status = (entry / "status").read_text()
        except (OSError, ProcessLookupError):
            continue
        line = next((x for x in status.splitlines() if x.startswith("VmRSS:")), None)
        total += int(line.split()[1]) if line else 0
    return total / 1024


def memory(cluster: Cluster) -> dict[str, tuple[int, float]]:
    return {c.name: (c.process.pid, rss_mb(c.process.pid)) for c in cluster.children()}


# -- the bad-input matrix ---------------------------------------------------------------------------

def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height)).save(buffer, "PNG")
    return buffer.getvalue()


def _tiff16(side: int) -> bytes:
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, np.zeros((side, side), np.uint16), compression="zlib")
    return buffer.getvalue()


def _field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field (value shorter than 128 bytes)."""
    return bytes([number << 3 | 2, len(value)]) + value


# (what is sent, the status a user should get). Each is sent to the gateway of a healthy cluster.
MATRIX: list[tuple[str, str, Callable[[grpc.Channel, bytes], object]]] = [
    ("Search without a query", "INVALID_ARGUMENT", lambda c, img: _stub(c).Search(pb.SearchRequest(), timeout=30)),
    ("Search k = 0", "INVALID_ARGUMENT", lambda c, img: _stub(c).Search(pb.SearchRequest(image=img), timeout=30)),
    ("Search k = 10^6 (over max_k)", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Search(pb.SearchRequest(image=img, k=10**6), timeout=30)),
    ("Search code of 3 bytes", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Search(pb.SearchRequest(code=b"abc", k=5), timeout=30)),
    ("Search id ''", "INVALID_ARGUMENT", lambda c, img: _stub(c).Search(pb.SearchRequest(id="", k=5), timeout=30)),
    ("Search unknown id", "NOT_FOUND", lambda c, img: _stub(c).Search(pb.SearchRequest(id="nope", k=5), timeout=30)),
    ("Search id of 1 MB", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Search(pb.SearchRequest(id="x" * 2**20, k=5), timeout=30)),
    ("Search id not UTF-8", "INVALID_ARGUMENT",
     lambda c, img: c.unary_unary("/orbithash.v1.Gateway/Search", request_serializer=bytes,
                                  response_deserializer=bytes)(_field(3, b"\xff\xfe") + b"\x20\x05", timeout=30)),
    ("Search image: garbage bytes", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Search(pb.SearchRequest(image=b"GIF89a junk", k=5), timeout=30)),
    ("Search image: truncated JPEG", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Search(pb.SearchRequest(image=img[: len(img) // 3], k=5), timeout=30)),
    ("Search image: empty bytes", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Search(pb.SearchRequest(image=b"", k=5), timeout=30)),
    ("Search rerank with a code query", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Search(pb.SearchRequest(code=b"\0" * 8, k=5, rerank=True), timeout=30)),
    ("Search image: 8192x8192 PNG", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Search(pb.SearchRequest(image=_png(8192, 8192), k=5), timeout=60)),
    ("Search image: 8192x8192 16-bit TIFF (zlib)", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Search(pb.SearchRequest(image=_tiff16(8192), k=5), timeout=60)),
    ("Ingest an empty stream", "INVALID_ARGUMENT", lambda c, img: _stub(c).Ingest(iter([]), timeout=30)),
    ("Ingest the same id twice", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Ingest(iter([pb.IngestItem(id="m-dup", image=img)] * 2), timeout=30)),
    ("Ingest label 999", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Ingest(iter([pb.IngestItem(id="m-ok", image=img),
                                          pb.IngestItem(id="m-999", image=img, label=999)]), timeout=30)),
    ("Ingest a corrupt image after a good one", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Ingest(iter([pb.IngestItem(id="m-ok", image=img),
                                          pb.IngestItem(id="m-bad", image=b"junk")]), timeout=30)),
    ("Ingest an id of 300 bytes", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Ingest(iter([pb.IngestItem(id="m" * 300, image=img)]), timeout=30)),
    ("Ingest an id not UTF-8", "INVALID_ARGUMENT",
     lambda c, img: c.stream_unary("/orbithash.v1.Gateway/Ingest", request_serializer=bytes,
                                   response_deserializer=bytes)(iter([_field(1, b"\xff") + _field(2, b"x")]),
                                                                timeout=30)),
    ("Ingest an image over the 256 MiB message limit", "RESOURCE_EXHAUSTED",
     lambda c, img: _stub(c).Ingest(iter([pb.IngestItem(id="m-huge", image=bytes(257 * 2**20))]), timeout=60)),
    ("Delete no ids", "INVALID_ARGUMENT", lambda c, img: _stub(c).Delete(pb.DeleteRequest(), timeout=30)),
    ("Delete [stored id, '']", "INVALID_ARGUMENT",
     lambda c, img: _stub(c).Delete(pb.DeleteRequest(ids=["m-kept", ""]), timeout=30)),
]


def _stub(channel: grpc.Channel) -> rpc.GatewayStub:
    return rpc.GatewayStub(channel)


def bad_input_matrix(address: str, image: bytes) -> list[dict[str, object]]:
    """Send each hostile input once; its status, message, and whether the cluster changed."""
    options = [("grpc.max_send_message_length", 512 * 2**20), ("grpc.max_receive_message_length", 512 * 2**20)]
    rows = []
    with grpc.insecure_channel(address, options=options) as channel:
        stub = _stub(channel)
        stub.Ingest(iter([pb.IngestItem(id="m-kept", image=image)]), timeout=60)
        for name, expected, call in MATRIX:
            before = stub.Info(pb.InfoRequest(), timeout=30).total
            started = time.monotonic()
            try:
                call(channel, image)
                code, message = "OK", ""
            except grpc.RpcError as err:
                code, message = err.code().name, err.details() or ""
            rows.append({"input": name, "expected": expected, "status": code, "message": message[:160],
                         "message_chars": len(message), "seconds": round(time.monotonic() - started, 2),
                         "stored_nothing": stub.Info(pb.InfoRequest(), timeout=30).total == before})
        stub.Delete(pb.DeleteRequest(ids=["m-kept"]), timeout=30)
    return rows


# -- the final check --------------------------------------------------------------------------------

def final_check(cluster: Cluster, oracle: Oracle) -> None:
    """Every shard's contents against the oracle: present ids stored, never/deleted ids not."""
    by_state = oracle.by_state()
    wanted = [i for s in (PRESENT, NEVER, DELETED) for i in by_state.get(s, [])]
    found: set[str] = set()
    for number, shard in enumerate(cluster.shards):
        mine = [i for i in wanted if shard_for(i, len(cluster.shards)) == number]
        with grpc.insecure_channel(shard.address) as channel:
            stub = rpc.IndexShardStub(channel)
            for a in range(0, len(mine), 500):
                reply = stub.Get(pb.GetRequest(ids=mine[a:a + 500]), timeout=30)
                found.update(i.id for i in reply.items)
    for item_id in by_state.get(PRESENT, []):
        if item_id not in found:
            oracle.violation("lost_acknowledged", f"{item_id!r} acknowledged, not in its shard at the end")
    for item_id in by_state.get(NEVER, []):
        if item_id in found:
            oracle.violation("phantom_writes", f"{item_id!r} never acknowledged as stored, in its shard at the end")
    for item_id in by_state.get(DELETED, []):
        if item_id in found:
            oracle.violation("resurrected", f"{item_id!r} deleted, in its shard at the end")


# -- the run ------------------------------------------------------------------------------------------

def run(repo: Path, work_dir: Path, faults: list[Fault], gap_s: float, hold_s: float, soak_s: float,
        threads: int) -> dict[str, object]:
    split = load_split(None)
    images = [r.data for r in split.database[::max(1, len(split.database) // 60)]][:60]
    # Without tokens the gateway tells callers apart by address, so the load's threads and the
    # recovery probe are one client to it, with up to threads + 1 ingest streams open, and a stream
    # given up at its deadline holds its slot until the gateway notices. The default limit (4) then
    # refuses a good stream as load shedding, which is the limit working, not a fault's effect.
    os.environ["ORBITHASH_GATEWAY_MAX_STREAMS_PER_CLIENT"] = str(2 * (threads + 1))
    config = ClusterConfig(model_repository=repo, work_dir=work_dir, shards=2, supervise=True)
    with Cluster(config) as cluster:
        assert cluster.gateway is not None
        address = cluster.gateway.address
        channel = grpc.insecure_channel(address)
        probe = rpc.GatewayStub(channel)
        codes = [probe.Search(pb.SearchRequest(image=i, k=1), timeout=60).query.code for i in images[:20]]
        matrix = bad_input_matrix(address, images[0])
        oracle, stats, stop = Oracle(len(cluster.shards)), Stats(), threading.Event()
        workers = [Worker(n, address, images, codes, oracle, stats, stop) for n in range(threads)]
        for w in workers:
            w.start()
        recovery: dict[str, list[float]] = {}
        try:
            time.sleep(gap_s)
            for fault in tqdm(faults, desc="faults", unit="fault"):
                seconds = round(inject(cluster, fault, hold_s, probe, images[0]), 2)
                recovery.setdefault(fault.name, []).append(seconds)
                tqdm.write(f"{fault.name:<22} recovered in {seconds:.2f} s")
                time.sleep(gap_s)
            before = memory(cluster)
            for _ in tqdm(range(int(soak_s)), desc="soak", unit="s"):
                time.sleep(1)
            after = memory(cluster)
        finally:
            stop.set()
            for w in workers:
                w.join(WRITE_DEADLINE_S + 5)
        final_check(cluster, oracle)
        channel.close()
    growth = {name: round(after[name][1] - mb, 1) for name, (pid, mb) in before.items() if after[name][0] == pid}
    latencies = np.asarray(stats.latencies_ms) if stats.latencies_ms else np.zeros(1)
    states = {s: len(ids) for s, ids in oracle.by_state().items()}
    return {
        "lost_acknowledged": oracle.violations["lost_acknowledged"],
        "phantom_writes": oracle.violations["phantom_writes"],
        "resurrected": oracle.violations["resurrected"],
        "unflagged_partial": oracle.violations["unflagged_partial"],
        "other_violations": {k: v for k, v in oracle.violations.items()
                             if k not in ("lost_acknowledged", "phantom_writes", "resurrected", "unflagged_partial")},
        "examples": oracle.examples,
        "max_recovery_s": max((max(r) for r in recovery.values()), default=0.0),
        "recovery_s": recovery,
        "rss_growth_mb": max(growth.values()) if growth else 0.0,
        "rss_growth_by_process_mb": growth,
        "errors_by_code": dict(stats.codes),
        "search_p50_ms": round(float(np.percentile(latencies, 50)), 2),
        "search_p99_ms": round(float(np.percentile(latencies, 99)), 2),
        "requests": sum(stats.codes.values()),
        "partial_answers": stats.partial,
        "items_by_state": states,
        "bad_input": matrix,
        "bad_input_unexpected": [r["input"] for r in matrix if r["status"] != r["expected"] or not r["stored_nothing"]],
        "soak_s": soak_s,
        "threads": threads,
    }


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="five faults, 2 s apart, a 5 s soak (≈ 1 min)")
    parser.add_argument("--minutes", type=float, default=10.0, help="total run time of the long version")
    parser.add_argument("--threads", type=int, default=4, help="load threads")
    parser.add_argument("--model-repository", type=Path, default=REPO / "model_repository")
    parser.add_argument("--work-dir", type=Path, default=None, help="cluster work dir (default: a temp dir)")
    args = parser.parse_args(argv)
    if args.quick:
        faults, gap_s, hold_s, soak_s = QUICK_FAULTS, 2.0, 2.0, 5.0
    else:
        faults, gap_s, hold_s = FAULTS * 2, 10.0, 5.0
        soak_s = max(30.0, args.minutes * 60 - len(faults) * (gap_s + hold_s + 5))
    if not model_path(args.model_repository, DEFAULT_MODEL_NAME).exists():
        print(f"no exported model in {args.model_repository}: run `bash scripts/demo.sh` (or orbithash train) first",
              file=sys.stderr)
        return 2
    # SIGTERM (a CI timeout, kill) unwinds like Ctrl-C, so the cluster is stopped, not orphaned.
    signal.signal(signal.SIGTERM, _interrupt)
    with tempfile.TemporaryDirectory(prefix="orbithash-chaos-") as tmp:
        result = run(args.model_repository, args.work_dir or Path(tmp), faults, gap_s, hold_s, soak_s, args.threads)
    print("| input | status | stored nothing | message |\n|---|---|---|---|")
    for row in result["bad_input"]:  # type: ignore[union-attr]
        mark = "" if row["status"] == row["expected"] else f" (expected {row['expected']})"
        print(f"| {row['input']} | {row['status']}{mark} | {row['stored_nothing']} | {row['message'][:100]} |")
    print(f"errors by code: {result['errors_by_code']}")
    print(f"search p50 {result['search_p50_ms']} ms, p99 {result['search_p99_ms']} ms, "
          f"{result['requests']} requests, {result['partial_answers']} partial answers")
    for name, seconds in result["recovery_s"].items():  # type: ignore[union-attr]
        print(f"  {name:<22} recovered in {seconds} s")
    print(f"rss growth over the soak (MB): {result['rss_growth_by_process_mb']}")
    print(json.dumps(result))
    bad = sum(int(result[k]) for k in ("lost_acknowledged", "phantom_writes", "resurrected", "unflagged_partial"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
