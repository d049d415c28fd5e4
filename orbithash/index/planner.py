"""When a search may use multi-index hashing, and keeping the tables fresh enough to pay.

A shard of ``MIH_MIN_ITEMS`` items or more gets MIH tables (``orbithash.index.mih``), built off
the search path. Writes after a build are logged ("dirty" slots) and verified directly by every
probe; once the log holds a sixteenth of the slots the tables are rebuilt in the background. In
auto mode a probe runs under a work budget; when it gives up, the query is scanned instead and
auto mode scans for a while (exponentially longer after each miss) before probing again, so
MIH costs little where it never pays. Both methods return the same candidates, so this choice
never changes a result, only its cost.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from orbithash.index import mih
from orbithash.index.rwlock import ReadWriteLock
from orbithash.index.view import Candidates, SlotView, TopK

log = logging.getLogger(__name__)

Strategy = Literal["auto", "scan", "mih"]
STRATEGIES: tuple[Strategy, ...] = ("auto", "scan", "mih")

# Below this many items a scan takes ~0.1 ms: MIH tables would cost memory for nothing.
MIH_MIN_ITEMS = 1 << 18
# A probe may do (buckets + verified candidates) <= slots / this before it gives up: a random
# access costs ~16x a streamed slot of the scan, so a failed probe costs about one more scan.
_BUDGET_DIVISOR = 16
_REBUILD_DIRTY = 16  # rebuild the tables once more than 1/16 of the slots were written since
_MAX_DIRTY = 4  # with more than 1/4 of the slots dirty a probe would scan them: use the scan
_MAX_MISSES = 8  # the back-off stops growing at 2^8 scans between tries


@dataclass
class _Built:
    """Built tables and the dirty slots written since (``MihPlanner._dirty_log``), concatenated."""

    tables: mih.Tables
    cached: tuple[int, np.ndarray] = field(default=(0, np.empty(0, np.int64)))


class MihPlanner:
    """The MIH lifecycle of one index: build, dirty log, the choice between probe and scan, back-off.

    ``lock`` is the index's lock and ``view`` reads its slot arrays (called with the lock held);
    the index calls ``written`` and ``reset`` under its write lock and ``probe`` under its read lock.
    """

    def __init__(self, lock: ReadWriteLock, view: Callable[[], SlotView]) -> None:
        self._lock = lock
        self._view = view
        self._built: _Built | None = None
        self._dirty_log: list[np.ndarray] = []
        self._tracking = False  # log written slots (from the first build on)
        self._epoch = 0  # bumped by reset(): a build that started before is not installed
        self._build_mutex = threading.Lock()
        self._skip = 0  # auto mode: scans to do before trying MIH again after a failed probe
        self._misses = 0

    @property
    def tables(self) -> mih.Tables | None:
        return None if self._built is None else self._built.tables

    @property
    def skip(self) -> int:
        """Searches auto mode still scans before it probes again (0: not backing off)."""
        return self._skip

    # -- the index's writes -----------------------------------------------------------------

    def written(self, slots: np.ndarray) -> None:
        """Remember slots whose code may differ from the tables (caller holds the write lock)."""
        if self._tracking:
            self._dirty_log.append(np.array(slots, np.int64))

    def reset(self) -> None:
        """Drop the tables and the log with the index's items (caller holds the write lock)."""
        self._built = None
        self._dirty_log = []
        self._epoch += 1

    # -- building ---------------------------------------------------------------------------

    def build(self) -> mih.Tables:
        """Build (or rebuild) the tables now; searches go on meanwhile, writes too.

        The tables are built from the live arrays without a lock held: every slot written after
        the snapshot point is in the dirty log, which probes verify directly, so a table entry
        torn by a concurrent write can only add a candidate, never hide one.
        """
        with self._build_mutex:
            return self._build_locked()

    def _build_locked(self) -> mih.Tables:
        with self._lock.read():
            epoch, view = self._epoch, self._view()
            self._tracking = True  # writers are excluded while we hold the read lock
            mark = len(self._dirty_log)
        tables = mih.build_tables(view.codes, view.live, view.end, view.bits)
        with self._lock.write():
            if self._epoch == epoch:
                self._dirty_log = self._dirty_log[mark:]
                self._built = _Built(tables)
        log.info("MIH tables: %d items, %d substrings of %s bits, %.1f MB, built in %.2f s", tables.n,
                 len(tables.widths), "/".join(map(str, tables.widths.tolist())), tables.nbytes / 1e6,
                 tables.build_s)
        return tables

    def _build_in_background(self) -> None:
        """Start a build unless one runs; the searches meanwhile scan (or use the old tables)."""
        if not self._build_mutex.acquire(blocking=False):
            return

        def build() -> None:
            try:
                self._build_locked()
            except Exception:
                log.exception("MIH table build failed; searches keep scanning")
            finally:
                self._build_mutex.release()

        threading.Thread(target=build, name="mih-build", daemon=True).start()

    # -- searching --------------------------------------------------------------------------

    def dirty(self) -> np.ndarray:
        """Slots written since the tables were built; empty without tables (caller holds the read lock)."""
        return np.empty(0, np.int64) if self._built is None else self._dirty(self._built)

    def _dirty(self, built: _Built) -> np.ndarray:
        """The log as one array, concatenated once per change of the log rather than per search."""
        log_len = len(self._dirty_log)
        if built.cached[0] != log_len:  # racing readers compute the same array: harmless
            built.cached = (log_len, np.concatenate(self._dirty_log) if log_len else np.empty(0, np.int64))
        return built.cached[1]

    def probe(self, view: SlotView, queries: np.ndarray, top: TopK, strategy: Strategy, items: int,
              threads: int) -> list[Candidates | None] | None:
        """Each query's candidates through the tables (None where a probe gave up), or None to scan all.

        "mih" probes whatever tables there are without a budget; "auto" only when they may pay
        (see ``_worth_probing``). The caller holds the read lock and scans what comes back None.
        """
        if strategy == "scan" or (strategy == "auto" and items < MIH_MIN_ITEMS):  # the common case: decided cheaply
            return None
        if strategy == "auto":
            built = self._worth_probing(view.end, top.k)
            budget = max(view.end // _BUDGET_DIVISOR, 1024)
        else:
            built, budget = self._built, 1 << 62
        if built is None:
            return None
        found = mih.probe(built.tables, view, queries, top, self._dirty(built), budget, threads)
        if any(hits is None for hits in found):
            self._note_miss()
        elif strategy == "auto":
            self._misses = 0
        return found

    def _worth_probing(self, end: int, k: int) -> _Built | None:
        """The tables when a probe may beat the scan (the shard is large enough); starts a (re)build
        when they are missing or stale."""
        built = self._built
        dirty = 0 if built is None else self._dirty(built).shape[0]
        if built is None or dirty > end // _REBUILD_DIRTY:
            self._build_in_background()
        if built is None or dirty > end // _MAX_DIRTY or k > end // 64:
            return None
        if self._skip > 0:  # recent probes gave up: scan for a while (races only skew the count)
            self._skip -= 1
            return None
        return built

    def _note_miss(self) -> None:
        """Back off exponentially after probes that gave up, so MIH costs little where it never pays."""
        self._misses = min(self._misses + 1, _MAX_MISSES)
        self._skip = 1 << self._misses
