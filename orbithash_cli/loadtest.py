"""``orbithash loadtest``: a closed-loop load on the gateway, in the spirit of ghz and perf_analyzer.

``--concurrency`` worker threads, each with its own client, send requests drawn from a weighted mix
(``search-image=6,search-id=2,search-code=1,ingest=1``) back to back, each with a deadline
(``--timeout``) and no client retries unless ``--retries`` asks for them: a failure is counted by its
gRPC status, not hidden. The first ``--warmup`` seconds are sent but not recorded; then the run lasts
``--duration`` seconds or ``--requests`` requests. Latencies are those of successful requests;
QPS counts every request recorded over the measured time (the last in-flight requests included).

Before the run a few of the images are ingested under ``--id-prefix`` (``seed-N``): search-id asks for
them and search-code sends their codes. Ingest requests store one image each (``--ingest-batch``)
under ``<prefix>w<worker>-<n>``. Everything stored under the prefix by this run is deleted at the end
unless ``--keep``. Prints a table per request kind and ends with a JSON line.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from orbithash_cli import INCOMPLETE, OK, UsageError
from orbithash_cli.table import format_table

KINDS = ("search-image", "search-id", "search-code", "ingest")
DEFAULT_MIX = "search-image=6,search-id=2,search-code=1,ingest=1"
SEED_IMAGES = 16          # images ingested before the run for search-id and search-code
MAX_IMAGES = 256          # images read into memory from --images
PERCENTILES = (50, 90, 99)


# -- pure logic: the mix, percentiles, the report ----------------------------------------------------

def parse_mix(text: str) -> dict[str, int]:
    """``"search-image=6,ingest=1"`` → ``{"search-image": 6, "ingest": 1}``; a kind alone weighs 1.

    Weights are non-negative integers, at least one positive; kinds are those of ``KINDS``, each once.
    """
    mix: dict[str, int] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip()
        if name not in KINDS:
            raise UsageError(f"--mix: unknown request kind {name!r} (kinds: {', '.join(KINDS)})")
        if name in mix:
            raise UsageError(f"--mix: {name} given twice")
        try:
            weight = int(value) if sep else 1
        except ValueError:
            raise UsageError(f"--mix: the weight of {name} must be a whole number, got {value.strip()!r}") from None
        if weight < 0:
            raise UsageError(f"--mix: the weight of {name} must not be negative")
        mix[name] = weight
    mix = {k: w for k, w in mix.items() if w > 0}
    if not mix:
        raise UsageError("--mix: no request kind with a positive weight")
    return mix


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation between order statistics (numpy's
    default); None for no values."""
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not within 0..100")
    ordered = sorted(values)
    if not ordered:
        return None
    rank = q / 100 * (len(ordered) - 1)
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class KindStats:
    """What one request kind did over the measured time."""

    latencies_ms: list[float] = field(default_factory=list)  # successful requests
    errors: Counter[str] = field(default_factory=Counter)    # failed ones, by gRPC status name

    @property
    def requests(self) -> int:
        return len(self.latencies_ms) + sum(self.errors.values())


def summarize(stats: dict[str, KindStats], elapsed_s: float) -> dict[str, object]:
    """Per kind and in total: requests, ok, QPS, latency percentiles (ms, successful requests), errors."""
    def one(s: KindStats) -> dict[str, object]:
        row: dict[str, object] = {"requests": s.requests, "ok": len(s.latencies_ms),
                                  "qps": round(s.requests / elapsed_s, 2) if elapsed_s > 0 else 0.0}
        for q in PERCENTILES:
            value = percentile(s.latencies_ms, q)
            row[f"p{q}_ms"] = None if value is None else round(value, 2)
        row["mean_ms"] = round(sum(s.latencies_ms) / len(s.latencies_ms), 2) if s.latencies_ms else None
        row["max_ms"] = round(max(s.latencies_ms), 2) if s.latencies_ms else None
        row["errors"] = dict(sorted(s.errors.items()))
        return row

    total = KindStats()
    for s in stats.values():
        total.latencies_ms.extend(s.latencies_ms)
        total.errors.update(s.errors)
    return {"kinds": {kind: one(s) for kind, s in stats.items()}, "total": one(total),
            "elapsed_s": round(elapsed_s, 3)}


def _errors_cell(errors: dict[str, int]) -> str:
    return ", ".join(f"{code} {n}" for code, n in errors.items()) or "-"


def format_report(summary: dict[str, object]) -> str:
    """The table a person reads: one row per request kind and one for all of them."""
    kinds: dict[str, dict] = summary["kinds"]  # type: ignore[assignment]
    headers = ["kind", "requests", "QPS", "p50 ms", "p90 ms", "p99 ms", "errors"]

    def cells(name: str, row: dict) -> list[object]:
        ms = ["-" if row[f"p{q}_ms"] is None else f"{row[f'p{q}_ms']:.1f}" for q in PERCENTILES]
        return [name, row["requests"], f"{row['qps']:.1f}", *ms, _errors_cell(row["errors"])]

    rows = [cells(kind, row) for kind, row in kinds.items()]
    rows.append(cells("all", summary["total"]))  # type: ignore[arg-type]
    return format_table(headers, rows, right=headers[1:6])


# -- the run -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    mix: dict[str, int]
    concurrency: int = 4
    duration_s: float | None = 10.0     # measured seconds, or None with ``requests``
    requests: int | None = None         # measured requests in all, or None with ``duration_s``
    warmup_s: float = 1.0
    timeout_s: float = 10.0
    k: int = 10
    ingest_batch: int = 1
    id_prefix: str = "loadtest/"
    seed: int = 0


@dataclass
class LoadResult:
    summary: dict[str, object]
    ingested: list[str]                 # every id this run tried to store (seeds included)


class _Clock:
    """When recording starts, and the measured requests' budget or deadline."""

    def __init__(self, plan: Plan) -> None:
        self.start = time.perf_counter() + plan.warmup_s
        self.deadline = self.start + plan.duration_s if plan.duration_s is not None else None
        self._left = plan.requests
        self._lock = threading.Lock()

    def admit(self) -> tuple[bool, bool]:
        """(go on, record this request)."""
        now = time.perf_counter()
        if now < self.start:
            return True, False
        if self.deadline is not None:
            return now < self.deadline, True
        with self._lock:
            if self._left is None or self._left <= 0:
                return False, False
            self._left -= 1
            return True, True


def _error_code(exc: BaseException) -> str:
    code = getattr(exc, "code", None)
    if code is not None and hasattr(code, "name"):
        return str(code.name)
    return f"CLIENT_{type(exc).__name__}"


class _Worker(threading.Thread):
    def __init__(self, number: int, client, plan: Plan, clock: _Clock, images: list[bytes], ids: list[str],
                 codes: list[bytes], stop: threading.Event) -> None:
        super().__init__(name=f"loadtest-{number}", daemon=True)
        self.number, self.client, self.plan, self.clock = number, client, plan, clock
        self.images, self.ids, self.codes, self.stop = images, ids, codes, stop
        self.rng = random.Random(plan.seed * 1000 + number)
        self.stats = {kind: KindStats() for kind in plan.mix}
        self.ingested: list[str] = []
        self._sequence = 0
        self.failure: BaseException | None = None

    def _ingest(self) -> None:
        from orbithash_client import Item

        items = []
        for _ in range(self.plan.ingest_batch):
            item_id = f"{self.plan.id_prefix}w{self.number}-{self._sequence}"
            self._sequence += 1
            self.ingested.append(item_id)  # before the call: a failed call may still have stored it
            items.append(Item(item_id, self.rng.choice(self.images)))
        self.client.ingest(items, batch_size=len(items), timeout=self.plan.timeout_s)

    def _request(self, kind: str) -> None:
        p = self.plan
        if kind == "search-image":
            self.client.search(image=self.rng.choice(self.images), k=p.k, timeout=p.timeout_s)
        elif kind == "search-id":
            self.client.search(id=self.rng.choice(self.ids), k=p.k, timeout=p.timeout_s)
        elif kind == "search-code":
            self.client.search(code=self.rng.choice(self.codes), k=p.k, timeout=p.timeout_s)
        else:
            self._ingest()

    def run(self) -> None:
        from orbithash_client import OrbitHashClientError

        kinds, weights = list(self.plan.mix), list(self.plan.mix.values())
        try:
            while not self.stop.is_set():
                go, record = self.clock.admit()
                if not go:
                    return
                kind = self.rng.choices(kinds, weights)[0]
                started = time.perf_counter()
                try:
                    self._request(kind)
                except OrbitHashClientError as exc:
                    if record:
                        self.stats[kind].errors[_error_code(exc)] += 1
                    continue
                if record:
                    self.stats[kind].latencies_ms.append((time.perf_counter() - started) * 1000)
        except BaseException as exc:  # a bug of the load test must show, not end the thread silently
            self.failure = exc


def seed_items(client, plan: Plan, images: list[bytes]) -> tuple[list[str], list[bytes]]:
    """Ingest a few images under the prefix: the ids search-id asks for and the codes search-code sends."""
    from orbithash_client import Item

    ids = seed_ids(plan, images)
    if not ids:
        return [], []
    client.ingest([Item(i, image) for i, image in zip(ids, images, strict=False)], batch_size=len(ids),
                  timeout=max(plan.timeout_s, 60.0))
    got = client.get(ids, timeout=max(plan.timeout_s, 60.0))
    return [item.id for item in got.items], [item.code for item in got.items]


def seed_ids(plan: Plan, images: Sequence[bytes]) -> list[str]:
    if not ({"search-id", "search-code"} & set(plan.mix)):
        return []
    return [f"{plan.id_prefix}seed-{i}" for i in range(min(SEED_IMAGES, len(images)))]


def run_load(make_client: Callable[[], object], plan: Plan, images: list[bytes],
             stop: threading.Event | None = None, ingested: list[str] | None = None) -> LoadResult:
    """Seed, warm up, measure; the clients are closed, nothing is deleted (see ``cleanup``).

    ``ingested`` (when given) receives every id the run tried to store, even when it ends by an exception.
    """
    if not images:
        raise UsageError("no images to send")
    stop = stop or threading.Event()
    ingested = [] if ingested is None else ingested
    ingested.extend(seed_ids(plan, images))  # before the call: a failed seeding may still have stored some
    setup = make_client()
    try:
        ids, codes = seed_items(setup, plan, images)
    finally:
        setup.close()
    if ({"search-id", "search-code"} & set(plan.mix)) and not ids:
        raise UsageError("the seed images were not stored: search-id and search-code have nothing to ask for")
    clock = _Clock(plan)
    workers = [_Worker(n, make_client(), plan, clock, images, ids, codes, stop) for n in range(plan.concurrency)]
    try:
        for w in workers:
            w.start()
        for w in workers:
            while w.is_alive():
                w.join(0.2)
    finally:
        stop.set()
        for w in workers:
            w.join()
            w.client.close()
            ingested.extend(w.ingested)
    ended = time.perf_counter()
    failures = [w.failure for w in workers if w.failure is not None]
    if failures:
        raise failures[0]
    stats = {kind: KindStats() for kind in plan.mix}
    for w in workers:
        for kind, s in w.stats.items():
            stats[kind].latencies_ms.extend(s.latencies_ms)
            stats[kind].errors.update(s.errors)
    return LoadResult(summarize(stats, max(ended - clock.start, 1e-9)), list(ingested))


def cleanup(client, ids: list[str], timeout_s: float = 60.0) -> int:
    """Delete ``ids`` (500 per call); how many were stored and are now deleted."""
    deleted = 0
    for a in range(0, len(ids), 500):
        deleted += client.delete(ids[a:a + 500], timeout=timeout_s).deleted
    return deleted


# -- the command -------------------------------------------------------------------------------------

def load_images(arguments: Sequence[str], limit: int = MAX_IMAGES) -> list[bytes]:
    """The bytes of up to ``limit`` images found under the given files, folders, zip files or globs."""
    from orbithash_cli.sources import discover, why
    from orbithash_cli.table import printable

    found = discover(arguments)
    try:
        for problem in found.problems:
            print(f"orbithash loadtest: skipping {printable(problem)}", file=sys.stderr)
        sources = found.sources
        step = max(1, len(sources) // limit)  # spread over the set (every class of an ImageFolder tree)
        images = []
        for source in sources[::step][:limit]:
            try:
                images.append(source.read())
            except Exception as exc:  # OSError, BadZipFile (CRC), RuntimeError (encrypted), ...
                raise UsageError(f"{source.origin}: cannot be read ({why(exc)}); remove it or "
                                 "name other images") from exc
        return images
    finally:
        found.close()


def plan_from(args: argparse.Namespace) -> Plan:
    if args.concurrency < 1:
        raise UsageError("--concurrency must be at least 1")
    if args.requests is not None and args.requests < 1:
        raise UsageError("--requests must be at least 1")
    duration = None if args.requests is not None else (10.0 if args.duration is None else args.duration)
    if duration is not None and duration <= 0:
        raise UsageError("--duration must be positive")
    if args.timeout <= 0 or args.warmup < 0 or args.ingest_batch < 1 or args.k < 1:
        raise UsageError("--timeout, --k and --ingest-batch must be positive, --warmup not negative")
    prefix = args.id_prefix if args.id_prefix is not None else f"loadtest-{uuid.uuid4().hex[:8]}/"
    return Plan(mix=parse_mix(args.mix), concurrency=args.concurrency, duration_s=duration, requests=args.requests,
                warmup_s=args.warmup, timeout_s=args.timeout, k=args.k, ingest_batch=args.ingest_batch,
                id_prefix=prefix, seed=args.seed)


def command(args: argparse.Namespace, connect) -> int:  # connect: address -> client (the operator commands')
    from orbithash_cli.commands import resolve_gateway, security_options
    from orbithash_cli.remote import connect as remote_connect
    from orbithash_client import OrbitHashClient

    plan = plan_from(args)
    address = resolve_gateway(args.gateway)
    images = load_images(args.images)
    if not images:
        raise UsageError(f"no JPEG, PNG or TIFF image found in {' '.join(args.images)}")

    security = security_options(args)

    def make_client() -> OrbitHashClient:
        return remote_connect(address, timeout=plan.timeout_s, ingest_timeout=plan.timeout_s, retries=args.retries,
                              **security)

    length = f"{plan.duration_s:g} s" if plan.duration_s is not None else f"{plan.requests} requests"
    print(f"orbithash loadtest: {address}, {plan.concurrency} workers, {length} after {plan.warmup_s:g} s of "
          f"warm-up, mix {plan.mix}, {len(images)} images, ids under {plan.id_prefix!r}", file=sys.stderr, flush=True)
    ingested: list[str] = []
    deleted = 0
    try:
        result = run_load(make_client, plan, images, ingested=ingested)
    finally:
        if not args.keep and ingested:
            cleaner = connect(address)  # the operator commands' client: deadlines of 60 s, retries
            try:
                deleted = cleanup(cleaner, ingested)
            finally:
                cleaner.close()
    summary = result.summary
    print(format_report(summary))
    total: dict = summary["total"]  # type: ignore[assignment]
    line = {"target": address, "concurrency": plan.concurrency, "duration_s": plan.duration_s,
            "requests_asked": plan.requests, "warmup_s": plan.warmup_s, "timeout_s": plan.timeout_s,
            "mix": plan.mix, "images": len(images), "elapsed_s": summary["elapsed_s"],
            "requests": total["requests"], "qps": total["qps"], "errors": total["errors"],
            "kinds": summary["kinds"], "id_prefix": plan.id_prefix, "ingested_ids": len(ingested),
            "deleted": deleted, "kept": bool(args.keep)}
    print(json.dumps(line), flush=True)
    return INCOMPLETE if total["errors"] else OK
