"""One shard's data plane: Redis store (system of record) + in-memory Hamming mirror.

A write is acknowledged only after Redis executed it; the mirror then applies the same slots, so
a restarted shard rebuilds exactly what it acknowledged. Writes are serialised by one mutex so
the mirror applies them in the order Redis did; searches never take it: they read the mirror
under its own reader-writer lock (held only while the mirror changes, never across a Redis call),
so concurrent queries run in parallel and a slow Redis write does not stall them. Validation
(``orbithash.codes``) happens here, once, not in the servicer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from index_service.store import ShardStore
from orbithash import DeadlineExceeded, InvalidInput, Mismatch, OrbitHashError, ResourceExhausted
from orbithash.codes import as_code_array, check_ids, check_k, check_labels, rerank_pool
from orbithash.index import MIH_MIN_ITEMS, HammingIndex, rerank_asymmetric

log = logging.getLogger("orbithash.index")

# A write must land in Redis this long before the caller's deadline, so that its reply can still
# reach the caller in time; later, Redis refuses it (see ShardStore.upsert).
REPLY_MARGIN_S = 0.05


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
        self._write_lock = threading.Lock()  # writes only: Redis order = mirror order
        self.ready = True  # last answer of probe(): can the shard reach Redis
        self._items = Gauge("orbithash_index_items", "Live items in this shard.", registry=registry)

    def open(self) -> None:
        """Claim the shard's keys and rebuild the mirror from Redis."""
        self._store.claim()
        total = self._store.count()
        log.info("shard %d: loading %d items from Redis", self.shard, total)

        def progress(done: int, of: int) -> None:
            log.info("shard %d: loaded %d/%d", self.shard, done, of)

        slots, ids, codes, labels = self._store.load(progress)
        if len(ids):
            self._index.put(slots, ids, codes, labels)
            if len(ids) >= MIH_MIN_ITEMS:
                self._index.build_multi_index()  # large shards answer sub-linearly from the first query
        self._items.set(len(self._index))
        log.info("shard %d: %d items ready (%d bits, model %s)", self.shard, len(self._index), self.bits,
                 self.model_version)

    def probe(self) -> bool:
        """Ping Redis (the readiness check); the answer is kept in ``ready`` for Stats."""
        try:
            self.ready = self._store.ping()
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
            model_version: str, remaining: float | None = None) -> tuple[int, int]:
        """Store items; ``remaining``: seconds left of the caller's deadline (None: no deadline).
        Either every item is stored and acknowledged, or none is."""
        self._check_model(bits, model_version)
        self._check_batch(len(codes), "codes")
        packed = as_code_array(codes, self.bits, "codes", n=len(ids))
        check_ids(ids)
        lab = check_labels(np.asarray(labels, np.int64), len(ids))
        limit = not_after(remaining)  # fixed now: time spent waiting for the lock counts too
        with self._write_lock:
            slots, replaced = self._store.upsert(ids, packed, lab, limit)
            self._index.put(slots, ids, packed, lab)
            self._items.set(len(self._index))
        return len(ids), replaced

    def delete(self, ids: Sequence[str], remaining: float | None = None) -> tuple[list[str], list[str]]:
        if not ids:
            raise InvalidInput("no ids given")
        check_ids(ids)
        limit = not_after(remaining)
        with self._write_lock:
            deleted, missing = self._store.delete(ids, limit)
            self._index.remove(deleted)
            self._items.set(len(self._index))
        return deleted, missing

    def search(self, codes: Sequence[bytes], k: int, max_distance: int | None, label: int | None,
               bits: int, model_version: str, u: Sequence[float] = (), candidates: int = 0) -> list[list[ShardHit]]:
        """Exact top-k by Hamming distance; with ``u`` (K floats per query), the ``candidates``
        nearest are re-ranked by the asymmetric score -u·b and the best k returned."""
        self._check_model(bits, model_version)
        check_k(k, self.max_k)
        self._check_batch(len(codes), "query codes")
        queries = as_code_array(codes, self.bits, "query codes")
        if not len(u):
            results = self._index.search(queries, k, max_distance, label)
            return [[ShardHit(i, d, lab) for i, d, lab in hits] for hits in results]
        if len(u) != len(codes) * self.bits:
            raise InvalidInput(f"u has {len(u)} floats; {len(codes)} queries of {self.bits} bits need "
                               f"{len(codes) * self.bits}")
        us = np.asarray(u, np.float64).reshape(len(codes), self.bits)
        results = self._index.search(queries, rerank_pool(k, candidates, self.max_k), max_distance, label)
        reranked = []
        for hits, q_u in zip(results, us, strict=True):
            # An item deleted between the search and this read is dropped, as if searched a moment later.
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

    def get(self, ids: Sequence[str]) -> tuple[list[tuple[str, bytes, int]], list[str]]:
        found, missing = [], []
        check_ids(ids)
        for item_id in ids:
            entry = self._index.get(item_id)
            if entry is None:
                missing.append(item_id)
            else:
                found.append((item_id, entry[0], entry[1]))
        return found, missing
