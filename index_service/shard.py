"""One shard's data plane: Redis store (system of record) + in-memory Hamming mirror.

A write is acknowledged only after Redis executed it; the mirror then applies the same slots, so
a restarted shard rebuilds exactly what it acknowledged. Writes are serialised by one mutex so
the mirror applies them in the order Redis did; searches never take it: they read the mirror
under its own reader-writer lock (held only while the mirror changes, never across a Redis call),
so concurrent queries run in parallel and a slow Redis write does not stall them. Validation
(``orbithash.codes``, ``orbithash.metadata``) happens here, once, not in the servicer.

The mirror is the Hamming index plus the metadata columns (``orbithash.metadata``), which a
search turns into a mask of allowed slots. Both change under one reader-writer lock, so a mask
always describes the items the index holds (a slot freed and reused by another item between the
two would otherwise pass the old item's filter). Thumbnails are not mirrored: a search or Get
that asks for them reads them from Redis, by id, after ranking.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import NamedTuple, TypeVar

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge

from index_service.store import PendingWrite, ShardStore, Unsettled
from orbithash import DeadlineExceeded, InvalidInput, Mismatch, OrbitHashError, ResourceExhausted
from orbithash.codes import as_code_array, check_ids, check_k, check_labels, rerank_pool, shown
from orbithash.index import MIH_MIN_ITEMS, HammingIndex, Ranked, rerank_asymmetric
from orbithash.index.rwlock import ReadWriteLock
from orbithash.metadata import MetadataColumns, SceneFilter, SceneMeta, check_filter, check_scene, check_thumbnail
from orbithash.metadata import decode as decode_metadata
from orbithash.metadata import encode as encode_metadata

log = logging.getLogger("orbithash.index")
R = TypeVar("R")

# A write must land in Redis this long before the caller's deadline, so that its reply can still
# reach the caller in time; later, Redis refuses it (see ShardStore.upsert).
REPLY_MARGIN_S = 0.05
_LOAD_CHUNK = 10_000  # stored metadata decoded per step at start-up


def not_after(remaining: float | None) -> float | None:
    """The Unix time after which a write with ``remaining`` seconds left must not be applied."""
    if remaining is None:
        return None
    if remaining <= REPLY_MARGIN_S:
        raise DeadlineExceeded(f"the request arrived with {max(remaining, 0) * 1000:.0f} ms left; "
                               "nothing was written (allow more time)")
    return time.time() + remaining - REPLY_MARGIN_S


@dataclass(frozen=True)
class ShardHit:
    id: str
    distance: int
    label: int
    score: float = 0.0
    metadata: SceneMeta | None = None  # when asked for
    thumbnail: bytes = b""  # when asked for and stored


class ShardItem(NamedTuple):
    """A stored item as Get returns it."""

    id: str
    code: bytes
    label: int
    metadata: SceneMeta | None = None  # when asked for
    thumbnail: bytes = b""  # when asked for and stored


def _where(position: int, item_id: str) -> str:
    return f"item {position} (id {shown(item_id)})"


class Shard:
    def __init__(self, shard: int, store: ShardStore, bits: int, model_version: str, max_k: int,
                 max_batch: int, registry: CollectorRegistry) -> None:
        self.shard = shard
        self.bits = bits
        self.model_version = model_version
        self.max_k = max_k
        self.max_batch = max_batch
        self._store = store
        self._index = HammingIndex(bits)
        self._columns = MetadataColumns()
        self._mirror = ReadWriteLock()  # index + columns change together; a search sees them at one moment
        self._write_lock = threading.Lock()  # writes only: Redis order = mirror order
        self._pending: tuple[PendingWrite, Callable] | None = None  # an unanswered write and its apply
        self.ready = True  # last answer of probe(): can the shard reach Redis
        self._items = Gauge("orbithash_index_items", "Live items in this shard.", registry=registry)
        self._settled = Counter("orbithash_index_unanswered_writes",
                                "Writes Redis never answered, settled later: applied (Redis had run them; the "
                                "mirror caught up) or not (they never will run).", ["outcome"], registry=registry)

    def open(self) -> None:
        """Claim the shard's keys and rebuild the mirror from Redis."""
        self._store.claim()
        total = self._store.count()
        log.info("shard %d: loading %d items from Redis", self.shard, total)

        def progress(done: int, of: int) -> None:
            log.info("shard %d: loaded %d/%d", self.shard, done, of)

        slots, ids, codes, labels, blobs = self._store.load(progress)
        if len(ids):
            self._index.put(slots, ids, codes, labels)
            self._load_metadata(slots, ids, blobs)
            if len(ids) >= MIH_MIN_ITEMS:
                self._index.build_multi_index()  # large shards answer sub-linearly from the first query
        self._items.set(len(self._index))
        log.info("shard %d: %d items ready (%d bits, model %s)", self.shard, len(self._index), self.bits,
                 self.model_version)

    def _load_metadata(self, slots: np.ndarray, ids: list[str], blobs: list[bytes]) -> None:
        """Decode the stored metadata into the columns, in chunks: a SceneMeta costs far more than
        its blob, so a million at once would be a passing gigabyte. The cyclic garbage collector
        is paused meanwhile: these objects hold no cycles, and its passes over millions of new
        objects would double the time (nothing else runs in the process before it serves)."""
        described = [j for j, blob in enumerate(blobs) if blob]
        collecting = gc.isenabled()
        gc.disable()
        try:
            for a in range(0, len(described), _LOAD_CHUNK):
                part = described[a:a + _LOAD_CHUNK]
                metas = []
                for j in part:
                    try:
                        metas.append(decode_metadata(blobs[j]))
                    except OrbitHashError as exc:
                        raise OrbitHashError(f"shard {self.shard}: the stored metadata of id {shown(ids[j])} "
                                             f"cannot be read: {exc}") from exc
                self._columns.put(slots[part], metas, [blobs[j] for j in part])
        finally:
            if collecting:
                gc.enable()

    def probe(self) -> bool:
        """Ping Redis (the readiness check); the answer is kept in ``ready`` for Stats. An unanswered
        write is settled here too once Redis answers, so the mirror does not wait for the next write."""
        try:
            self.ready = self._store.ping()
            if self.ready and self._pending is not None and self._write_lock.acquire(blocking=False):
                try:
                    self._settle()
                finally:
                    self._write_lock.release()
        except OrbitHashError:
            self.ready = False
        return self.ready

    def __len__(self) -> int:
        return len(self._index)

    def _check_model(self, bits: int, model_version: str) -> None:
        if bits != self.bits or model_version != self.model_version:
            raise Mismatch(f"shard {self.shard} holds {self.bits}-bit codes of model {self.model_version!r}; "
                           f"got {bits}-bit codes of model {model_version!r}")

    def _check_batch(self, n: int, what: str) -> None:
        if not n:
            raise InvalidInput(f"no {what} given")
        if n > self.max_batch:
            raise ResourceExhausted(f"{n} {what} in one call, limit {self.max_batch}")

    def add(self, ids: Sequence[str], codes: Sequence[bytes], labels: Sequence[int], bits: int,
            model_version: str, remaining: float | None = None, metadata: Sequence[SceneMeta] | None = None,
            thumbnails: Sequence[bytes] | None = None) -> tuple[int, int]:
        """Store items, each with its metadata and thumbnail (None: none for any; they replace what a
        replaced item had); ``remaining``: seconds left of the caller's deadline (None: no deadline).
        Either every item is stored and acknowledged, or none is. Of an id given more than once the
        last item is stored, as in :meth:`update_metadata`; (stored, replaced) count each id once."""
        self._check_model(bits, model_version)
        self._check_batch(len(codes), "codes")
        packed = as_code_array(codes, self.bits, "codes", n=len(ids))
        check_ids(ids)
        lab = check_labels(np.asarray(labels, np.int64), len(ids))
        metas = self._checked_metadata(ids, metadata)
        thumbs = None
        if thumbnails is not None:
            self._check_count(ids, thumbnails, "thumbnails")
            thumbs = [check_thumbnail(t, _where(j, i)) for j, (i, t) in enumerate(zip(ids, thumbnails, strict=True))]
        last = list({item_id: j for j, item_id in enumerate(ids)}.values())  # each id's last position
        if len(last) < len(ids):
            ids, packed, lab, metas = [ids[j] for j in last], packed[last], lab[last], [metas[j] for j in last]
            thumbs = None if thumbs is None else [thumbs[j] for j in last]
        blobs = [encode_metadata(m) for m in metas]
        limit = not_after(remaining)  # fixed now: time spent waiting for the lock counts too

        def apply(reply: tuple[np.ndarray, int]) -> None:
            with self._mirror.write():
                self._index.put(reply[0], ids, packed, lab)
                self._columns.put(reply[0], metas, blobs)

        _, replaced = self._write(lambda: self._store.upsert(ids, packed, lab, limit, blobs, thumbs), apply)
        return len(ids), replaced

    def _write(self, send: Callable[[], R], apply: Callable[[R], None]) -> R:
        """Send one write to Redis and apply its answer to the mirror, in Redis's order.

        A write that Redis never answered is settled first (it may have run after its caller was
        told UNAVAILABLE): without that the mirror would miss it, or keep what it deleted, until
        the next restart."""
        with self._write_lock:
            self._settle()
            try:
                reply = send()
            except Unsettled as exc:
                self._pending = (exc.pending, apply)
                raise
            apply(reply)
            self._items.set(len(self._index))
            return reply

    def _settle(self) -> None:
        """With the write lock held: learn from Redis what became of the unanswered write, if any."""
        if self._pending is None:
            return
        pending, apply = self._pending
        reply = self._store.settle(pending)
        self._pending = None
        if reply is not None:
            apply(reply)
            self._items.set(len(self._index))
        self._settled.labels("applied" if reply is not None else "not_applied").inc()
        log.warning("shard %d: an unanswered write was %s", self.shard,
                    "applied by Redis; the mirror now has it" if reply is not None else "not applied by Redis")

    @staticmethod
    def _check_count(ids: Sequence[str], values: Sequence[object], what: str) -> None:
        if len(values) != len(ids):
            raise InvalidInput(f"{len(values)} {what} for {len(ids)} items")

    def _checked_metadata(self, ids: Sequence[str], metadata: Sequence[SceneMeta] | None) -> list[SceneMeta]:
        if metadata is None:
            return [SceneMeta()] * len(ids)
        self._check_count(ids, metadata, "metadata")
        return [check_scene(m, _where(j, i)) for j, (i, m) in enumerate(zip(ids, metadata, strict=True))]

    def update_metadata(self, ids: Sequence[str], metadata: Sequence[SceneMeta], remaining: float | None = None
                        ) -> tuple[list[str], list[str]]:
        """Replace the metadata of stored items whole (codes, labels and thumbnails stay); returns
        (updated, missing), each id once. Ids not stored are reported, never created; either
        every update is applied or none is."""
        self._check_batch(len(ids), "ids")
        check_ids(ids)
        metas = self._checked_metadata(ids, metadata)
        last = dict(zip(ids, metas, strict=True))  # of a repeated id the last update wins, as in Redis
        blob_of = {i: encode_metadata(m) for i, m in last.items()}
        limit = not_after(remaining)

        def apply(reply: tuple[list[str], list[str]]) -> None:
            with self._mirror.write():
                found = [(i, self._index.slot(i)) for i in reply[0]]
                found = [(i, s) for i, s in found if s is not None]
                self._columns.put([s for _, s in found], [last[i] for i, _ in found], [blob_of[i] for i, _ in found])

        return self._write(lambda: self._store.update_metadata(list(blob_of), list(blob_of.values()), limit), apply)

    def delete(self, ids: Sequence[str], remaining: float | None = None) -> tuple[list[str], list[str]]:
        self._check_batch(len(ids), "ids")  # one script: a huge one would block Redis for every shard on it
        check_ids(ids)
        limit = not_after(remaining)

        def apply(reply: tuple[list[str], list[str]]) -> None:
            with self._mirror.write():
                slots = [self._index.slot(i) for i in reply[0]]
                self._index.remove(reply[0])
                self._columns.remove([s for s in slots if s is not None])

        return self._write(lambda: self._store.delete(ids, limit), apply)

    def search(self, codes: Sequence[bytes], k: int, max_distance: int | None, label: int | None,
               bits: int, model_version: str, u: Sequence[float] = (), candidates: int = 0,
               scene_filter: SceneFilter | None = None, with_metadata: bool = False,
               with_thumbnails: bool = False) -> list[list[ShardHit]]:
        """Exact top-k by Hamming distance among the items that pass ``scene_filter``; with ``u``
        (K floats per query), the ``candidates`` nearest are re-ranked by the asymmetric score
        -u·b and the best k returned. Hits carry metadata and thumbnails when asked for."""
        queries = self._checked_queries(codes, k, bits, model_version, u, scene_filter)
        with self._mirror.read():
            allowed = self._allowed(scene_filter)
            if not len(u):
                found = self._index.search_ranked(queries, k, max_distance, label, allowed=allowed)
                results = [[ShardHit(i, d, lab) for i, d, lab in ranked.hits()] for ranked in found]
            else:
                results = self._search_reranked(queries, np.asarray(u, np.float64).reshape(len(codes), self.bits),
                                                k, max_distance, label, candidates, allowed)
            if with_metadata:
                results = [[replace(h, metadata=self._metadata_of(h.id)) for h in hits] for hits in results]
        if with_thumbnails:
            thumbs = iter(self._store.thumbnails([h.id for hits in results for h in hits]))
            results = [[replace(h, thumbnail=next(thumbs)) for h in hits] for hits in results]
        return results

    def search_ranked(self, codes: Sequence[bytes], k: int, max_distance: int | None, label: int | None,
                      bits: int, model_version: str, scene_filter: SceneFilter | None = None) -> list[Ranked]:
        """``search`` without re-ranking, metadata or thumbnails, column-wise: no object per hit,
        for a reply that sends the columns as they are."""
        queries = self._checked_queries(codes, k, bits, model_version, (), scene_filter)
        with self._mirror.read():
            return self._index.search_ranked(queries, k, max_distance, label, allowed=self._allowed(scene_filter))

    def _checked_queries(self, codes: Sequence[bytes], k: int, bits: int, model_version: str, u: Sequence[float],
                         scene_filter: SceneFilter | None) -> np.ndarray:
        self._check_model(bits, model_version)
        check_k(k, self.max_k)
        self._check_batch(len(codes), "query codes")
        queries = as_code_array(codes, self.bits, "query codes")
        if len(u) and len(u) != len(codes) * self.bits:
            raise InvalidInput(f"u has {len(u)} floats; {len(codes)} queries of {self.bits} bits need "
                               f"{len(codes) * self.bits}")
        if scene_filter is not None:
            check_filter(scene_filter)
        return queries

    def _allowed(self, scene_filter: SceneFilter | None) -> np.ndarray | None:
        """The slots a filter lets through (caller holds the mirror's read lock); None: all."""
        if scene_filter is None or scene_filter.is_empty:
            return None
        return self._columns.mask(scene_filter, self._index.capacity)

    def _metadata_of(self, item_id: str) -> SceneMeta:
        """A stored item's metadata from the mirror (caller holds the mirror's read lock)."""
        slot = self._index.slot(item_id)
        return SceneMeta() if slot is None else self._columns.get(slot)

    def _search_reranked(self, queries: np.ndarray, us: np.ndarray, k: int, max_distance: int | None,
                         label: int | None, candidates: int, allowed: np.ndarray | None) -> list[list[ShardHit]]:
        results = self._index.search(queries, rerank_pool(k, candidates, self.max_k), max_distance, label,
                                     allowed=allowed)
        reranked = []
        for hits, q_u in zip(results, us, strict=True):
            stored = [(hit, self._index.get(hit[0])) for hit in hits]
            kept = [(hit, entry[0]) for hit, entry in stored if entry is not None]
            reranked.append(self._rerank([h for h, _ in kept], [c for _, c in kept], q_u, k))
        return reranked

    def _rerank(self, hits: list[tuple[str, int, int]], codes: list[bytes], u: np.ndarray,
                k: int) -> list[ShardHit]:
        if not hits:
            return []
        packed = np.frombuffer(b"".join(codes), np.uint8).reshape(len(codes), -1)
        ids = [h[0] for h in hits]
        order = rerank_asymmetric(u, packed, self.bits, ids)[:k]
        signs = np.unpackbits(packed[order], axis=1, count=self.bits).astype(np.float64) * 2 - 1
        scores = -(signs @ u)
        return [ShardHit(hits[j][0], hits[j][1], hits[j][2], float(sc))
                for j, sc in zip(order, scores, strict=True)]

    def get(self, ids: Sequence[str], with_metadata: bool = False, with_thumbnails: bool = False
            ) -> tuple[list[ShardItem], list[str]]:
        """Stored items in request order, with metadata and thumbnails when asked for; and the missing ids."""
        found, missing = [], []
        check_ids(ids)
        with self._mirror.read():
            for item_id in ids:
                entry = self._index.get(item_id)
                if entry is None:
                    missing.append(item_id)
                else:
                    meta = self._metadata_of(item_id) if with_metadata else None
                    found.append(ShardItem(item_id, entry[0], entry[1], meta))
        if with_thumbnails and found:
            thumbs = self._store.thumbnails([item.id for item in found])
            found = [item._replace(thumbnail=t) for item, t in zip(found, thumbs, strict=True)]
        return found, missing
