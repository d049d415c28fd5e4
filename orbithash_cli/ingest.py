"""``orbithash ingest``: send folders, zip files and globs of images to the gateway, resumably.

The images are found (``sources``), matched with their metadata (sidecars, then what the file says
itself: GeoTIFF footprint, EXIF time) and their labels (``--labels-from-folders``), and sent in
batches over several concurrent streams. Each batch is one ``Ingest`` call, which the gateway
answers only after the shards made the writes durable; only then are its ids appended to the
journal. A rerun skips what the journal holds. A batch the gateway refuses because of one of its
images is split in halves until the bad image is alone, which is then reported and skipped (or
ends the run with ``--on-error fail``); the others are sent. A gateway that stops answering is
retried for ``--retry-s`` seconds before the run stops with exit code 3.
"""

from __future__ import annotations

import argparse
import json
import queue
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from orbithash_cli import INCOMPLETE, INTERRUPTED, OK, USAGE, CliError, GatewayUnreachable, UsageError
from orbithash_cli.geotags import embedded
from orbithash_cli.journal import Journal, default_path
from orbithash_cli.remote import REFUSED, UNREACHABLE, cli_error
from orbithash_cli.scenes import merge
from orbithash_cli.sidecar import Sidecar, load_sidecars
from orbithash_cli.sources import Found, Problem, Source, check_id, discover, image_type, why
from orbithash_cli.table import printable
from orbithash_client import DeadlineExceeded, Info, IngestSummary, Item, Metadata, OrbitHashClient

_SHOWN = 20  # problems listed by name in the summary (all of them with --json)
_RETRY_FIRST_S, _RETRY_MAX_S = 0.5, 8.0


@dataclass(frozen=True)
class Options:
    streams: int = 4
    batch: int = 16
    batch_bytes: int = 64 * 1024 * 1024  # a batch closes before its files would exceed this (one large file alone)
    on_error: str = "skip"          # "skip" or "fail"
    labels_from_folders: bool = False
    id_prefix: str = ""
    retry_s: float = 30.0           # how long an unreachable gateway is retried
    timeout_s: float = 120.0        # deadline of one batch
    progress: bool = True


@dataclass(frozen=True)
class Planned:
    source: Source
    id: str
    label: int | None
    metadata: Metadata | None  # from the sidecars


@dataclass
class Report:
    found: int = 0
    journaled: int = 0                   # skipped: already acknowledged in an earlier run
    to_send: int = 0
    stored: int = 0                      # acknowledged by the gateway in this run
    replaced: int = 0
    problems: list[Problem] = field(default_factory=list)
    failed_sending: int = 0              # problems met while sending (the others were known before)
    notes: list[str] = field(default_factory=list)
    stopped: str = ""                    # why the run ended before sending everything
    stopped_code: int = OK               # the exit code of the error that stopped it (OK: none did)
    interrupted: bool = False
    seconds: float = 0.0
    journal: str = ""

    @property
    def not_sent(self) -> int:
        return self.to_send - self.stored - self.failed_sending

    @property
    def unreachable(self) -> bool:
        return self.stopped_code == GatewayUnreachable.exit_code

    @property
    def resumable(self) -> bool:
        """Whether the same command again would send the rest (not when credentials or usage are wrong)."""
        return self.stopped_code != USAGE and (self.interrupted or self.unreachable or self.not_sent > 0)

    def exit_code(self) -> int:
        if self.stopped_code not in (OK, INCOMPLETE):  # unreachable (3), denied or refused as it is (2)
            return self.stopped_code
        if self.interrupted:
            return INTERRUPTED
        return INCOMPLETE if self.problems or self.stopped or self.not_sent else OK

    def rate(self) -> float:
        return self.stored / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict:
        return {"found": self.found, "skipped_journaled": self.journaled, "sent": self.to_send,
                "stored": self.stored, "replaced": self.replaced, "failed": len(self.problems),
                "not_sent": self.not_sent, "problems": [{"file": p.origin, "reason": p.reason} for p in self.problems],
                "notes": self.notes, "stopped": self.stopped, "seconds": round(self.seconds, 3),
                "images_per_s": round(self.rate(), 2), "journal": self.journal, "exit_code": self.exit_code()}


def plan(found: Found, sidecar: Sidecar, info: Info, options: Options, done: set[str],
         report: Report) -> list[Planned]:
    """What to send: every image found with its id, label and sidecar metadata, minus journaled ids.

    Problems known before sending (an id too long or taken twice, an unknown class folder) go to
    ``report.problems``.
    """
    report.problems.extend(found.problems)
    classes = {name: i for i, name in enumerate(info.model.class_names)}
    taken: dict[str, str] = {}
    out: list[Planned] = []
    for source in found.sources:
        item_id = options.id_prefix + source.rel
        if (why := check_id(item_id)) is not None:
            report.problems.append(Problem(source.origin, why))
            continue
        if item_id in taken:
            report.problems.append(Problem(source.origin, f"id {item_id!r} is already taken by {taken[item_id]}"))
            continue
        taken[item_id] = source.origin
        label = None
        if options.labels_from_folders:
            if source.folder is None:
                report.problems.append(Problem(source.origin, "not inside a class folder (--labels-from-folders)"))
                continue
            if source.folder not in classes:
                report.problems.append(Problem(source.origin, f"class folder {source.folder!r} is not a class of "
                                                              f"the served model {info.model.name}"))
                continue
            label = classes[source.folder]
        report.found += 1
        if item_id in done:
            report.journaled += 1
            continue
        out.append(Planned(source, item_id, label, sidecar.lookup(item_id, source.rel, source.path)))
    report.found += len(report.problems)
    report.to_send = len(out)
    return out


@dataclass(frozen=True)
class Prepared:
    item: Item | None = None
    problem: Problem | None = None
    note: str = ""  # something the operator should know, the upload goes ahead


def prepare(item: Planned) -> Prepared:
    """Read one image, check its type and add what the file says about itself.

    Whatever goes wrong with this one file (unreadable, a zip member with a bad CRC or encrypted, a
    header Pillow calls a decompression bomb, a parser's surprise) is a problem named by the file:
    one hostile image must never stop the run, or a rerun would stop at it again.
    """
    origin = item.source.origin
    try:
        data = item.source.read()
    except Exception as exc:  # OSError, BadZipFile, RuntimeError (encrypted), zlib.error, ...
        return Prepared(problem=Problem(origin, f"cannot be read ({why(exc)})"))
    if not data:
        return Prepared(problem=Problem(origin, "is empty"))
    if image_type(data) is None:
        return Prepared(problem=Problem(origin, "is not a JPEG, PNG or TIFF image (by its first bytes)"))
    try:
        own = embedded(data)
    except Exception as exc:  # DecompressionBombError and whatever else a crafted header causes
        return Prepared(problem=Problem(origin, f"cannot be inspected ({why(exc)})"))
    return Prepared(Item(item.id, data, item.label, merge(item.metadata, own.metadata)),
                    note=f"{origin}: {own.note}" if own.note else "")


class Sender:
    """Batches over ``streams`` threads; ids journaled once acknowledged; problems reported as they come."""

    def __init__(self, client: OrbitHashClient, journal: Journal, options: Options, report: Report) -> None:
        self.client = client
        self.journal = journal
        self.options = options
        self.report = report
        self._lock = threading.Lock()
        self._stop = threading.Event()   # stop taking batches (a fatal error, Ctrl-C)
        self._fed = threading.Event()    # every batch is queued
        self._fatal: CliError | None = None
        self._bar = None

    def run(self, items: Sequence[Planned]) -> None:
        from tqdm import tqdm

        started = time.monotonic()
        work: queue.Queue[list[Planned]] = queue.Queue(maxsize=self.options.streams * 2)
        threads = [threading.Thread(target=self._worker, args=(work,), name=f"ingest-{i}", daemon=True)
                   for i in range(max(1, min(self.options.streams, len(items))))]
        self._bar = tqdm(total=len(items), unit="img", desc="ingest", file=sys.stderr, dynamic_ncols=True,
                         disable=not self.options.progress, smoothing=0.05)
        for thread in threads:
            thread.start()
        try:
            try:
                for batch in batches(items, self.options.batch, self.options.batch_bytes):
                    while not self._stop.is_set():
                        try:
                            work.put(batch, timeout=0.2)
                            break
                        except queue.Full:
                            continue
                self._fed.set()
                _join(threads)
            except KeyboardInterrupt:
                self._stop.set()
                self.report.interrupted = True
                self._bar.write("interrupted: finishing the batches in flight (Ctrl-C again quits at once; "
                                "the journal keeps what was acknowledged)", file=sys.stderr)
                _join(threads)
        except KeyboardInterrupt:
            pass  # the second Ctrl-C: leave the daemon threads; acknowledged ids are already journaled
        finally:
            self._bar.close()
            self.report.seconds = time.monotonic() - started
        if self._fatal is not None:
            self.report.stopped_code = self._fatal.exit_code
            self.report.stopped = str(self._fatal)

    def _worker(self, work: queue.Queue) -> None:
        while not self._stop.is_set():
            try:
                batch = work.get(timeout=0.2)
            except queue.Empty:
                if self._fed.is_set():
                    return
                continue
            try:
                self._batch(batch)
            except CliError as exc:
                self._halt(exc)
            except Exception as exc:  # an unexpected answer (FAILED_PRECONDITION, INTERNAL) or a bug: stop, say so
                self._halt(cli_error(exc))

    def _batch(self, batch: list[Planned]) -> None:
        items = []
        for planned in batch:
            prepared = prepare(planned)
            if prepared.note:
                with self._lock:
                    self.report.notes.append(prepared.note)
            if prepared.problem is not None:
                self._problem(prepared.problem)
            elif prepared.item is not None:
                items.append(prepared.item)
        if items and not self._stop.is_set():
            self._send(items, {planned.id: planned.source.origin for planned in batch})

    def _send(self, items: list[Item], origins: dict[str, str]) -> None:
        """One ingest call; a refused batch is halved until the refused image is alone."""
        try:
            stored = self._ingest_retrying(items)
        except REFUSED as exc:
            if len(items) == 1:
                self._problem(Problem(origins[items[0].id], f"refused by the gateway: {exc.message}"))
                return
            half = len(items) // 2
            for part in (items[:half], items[half:]):
                if not self._stop.is_set():
                    self._send(part, origins)
            return
        self.journal.record(item.id for item in items)
        with self._lock:
            self.report.stored += len(items)
            self.report.replaced += stored.replaced
            self._bar.update(len(items))

    def _ingest_retrying(self, items: list[Item]) -> IngestSummary:
        """The client retries briefly by itself; this keeps trying for ``retry_s`` (a restarting gateway)."""
        deadline = time.monotonic() + self.options.retry_s
        delay = _RETRY_FIRST_S
        while True:
            try:
                return self.client.ingest(items, batch_size=len(items), timeout=self.options.timeout_s)
            except DeadlineExceeded as exc:  # the gateway answers, too slowly: waiting longer will not help
                raise GatewayUnreachable(
                    f"a batch of {len(items)} image(s) was not acknowledged within --timeout "
                    f"{self.options.timeout_s:g} s ({exc.message}): the gateway is slow or the batch too large; "
                    "raise --timeout or lower --batch/--batch-mb, then rerun to resume") from exc
            except UNREACHABLE as exc:
                if time.monotonic() + delay > deadline or self._stop.is_set():
                    raise GatewayUnreachable(f"the cluster at {self.client.target} stopped answering ingest calls "
                                             f"({exc.message}); rerun the same command to resume") from exc
                self._bar.write(f"gateway unreachable ({exc}); retrying in {delay:.1f} s", file=sys.stderr)
                self._stop.wait(delay)
                delay = min(delay * 2, _RETRY_MAX_S)

    def _problem(self, problem: Problem) -> None:
        with self._lock:
            self.report.problems.append(problem)
            self.report.failed_sending += 1
            self._bar.update(1)
            self._bar.write(f"failed: {printable(problem)}", file=sys.stderr)
        if self.options.on_error == "fail":
            self._halt(CliError(f"stopped at the first bad file (--on-error fail): {problem}"))

    def _halt(self, error: CliError) -> None:
        with self._lock:
            if self._fatal is None:
                self._fatal = error
        self._stop.set()


def batches(items: Sequence[Planned], count: int, size: int) -> Iterator[list[Planned]]:
    """Consecutive batches of at most ``count`` items and, unless one item alone is larger, ``size`` bytes."""
    batch: list[Planned] = []
    held = 0
    for item in items:
        nbytes = item.source.size
        if batch and (len(batch) == count or held + nbytes > size):
            yield batch
            batch, held = [], 0
        batch.append(item)
        held += nbytes
    if batch:
        yield batch


def _join(threads: list[threading.Thread]) -> None:
    """Wait for the threads in short steps, so that Ctrl-C reaches the main thread."""
    while any(t.is_alive() for t in threads):
        for thread in threads:
            thread.join(timeout=0.2)


# -- the command ----------------------------------------------------------------------------------

def options_from(args: argparse.Namespace) -> Options:
    if args.streams < 1 or args.batch < 1 or args.batch_mb <= 0:
        raise UsageError("--streams and --batch must be at least 1, --batch-mb above 0")
    return Options(streams=args.streams, batch=args.batch, batch_bytes=int(args.batch_mb * 1024 * 1024),
                   on_error=args.on_error,
                   labels_from_folders=args.labels_from_folders, id_prefix=args.id_prefix or "",
                   retry_s=args.retry_s, timeout_s=args.timeout, progress=not args.quiet)


def command(args: argparse.Namespace, connect: Callable[[str | None], OrbitHashClient]) -> int:
    options = options_from(args)
    found = discover(args.paths)
    try:
        sidecar = load_sidecars(args.metadata or [])
        if not found.sources and not found.problems:
            left = [f"{found.ignored} other file(s) left alone"] if found.ignored else []
            raise UsageError("; ".join([f"no JPEG, PNG or TIFF image in {' '.join(args.paths)}", *left,
                                        *filter(None, [found.zip_advice()])]) + "; nothing was sent")
        journal_path = args.journal or default_path(found.roots, options.id_prefix)
        about = {"roots": [str(r.resolve()) for r in found.roots], "id_prefix": options.id_prefix}
        client = connect(args.gateway)
        try:
            info = client.info()
            with Journal.open(journal_path, {"gateway": client.target, **about}, restart=args.restart) as journal:
                report = Report(journal=str(journal_path))
                items = plan(found, sidecar, info, options, journal.done, report)
                _say_plan(report, journal, found, sidecar)
                if report.problems and options.on_error == "fail":
                    report.stopped = (f"{len(report.problems)} file(s) cannot be ingested (--on-error fail): "
                                      "nothing was sent")
                elif items:
                    print(f"sending {len(items)} image(s)", file=sys.stderr)
                    Sender(client, journal, options, report).run(items)
        finally:
            client.close()
    finally:
        found.close()
    _summary(report, args.json)
    return report.exit_code()


def _say_plan(report: Report, journal: Journal, found: Found, sidecar: Sidecar) -> None:
    lines = [f"journal {journal.path}"]
    if journal.torn:
        lines.append("the journal's last line was cut off by a crash: ignored (its ids are sent again)")
    if report.journaled:
        lines.append(f"skipping {report.journaled} image(s) already acknowledged (in the journal)")
    if found.ignored:
        lines.append(f"left alone {found.ignored} file(s) that are not JPEG, PNG or TIFF"
                     + (f"; {found.zip_advice()}" if found.walked_zips else ""))
    if sidecar.ignored:
        lines.append(f"metadata: ignored column(s)/propert(ies) {', '.join(sorted(sidecar.ignored))}")
    unused = sidecar.unused()
    if unused:
        lines.append(f"metadata: {len(unused)} entr(ies) match no image found, e.g. {', '.join(unused[:3])}")
    for line in lines:
        print(printable(line), file=sys.stderr)


def _summary(report: Report, as_json: bool) -> None:
    out = sys.stderr if as_json else sys.stdout
    print(f"stored {report.stored} image(s) ({report.replaced} replaced an item of the same id) in "
          f"{report.seconds:.1f} s, {report.rate():.1f} images/s; skipped {report.journaled} already journaled; "
          f"{len(report.problems)} failed" + (f"; {report.not_sent} not sent" if report.not_sent else ""), file=out)
    for problem in report.problems[:_SHOWN]:
        print(f"  failed: {printable(problem)}", file=out)
    if len(report.problems) > _SHOWN:
        print(f"  … and {len(report.problems) - _SHOWN} more (all of them with --json)", file=out)
    if report.notes:
        print(f"{len(report.notes)} note(s), e.g. {printable(report.notes[0])}", file=out)
    if report.stopped:
        print(f"stopped: {printable(report.stopped)}", file=out)
    if report.resumable:
        print(f"rerun the same command to send the rest (journal {printable(report.journal)})", file=out)
    if as_json:
        print(json.dumps(report.as_dict()))
