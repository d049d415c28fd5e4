"""One shard's data plane: Redis store (system of record) + in-memory Hamming mirror.

A write is acknowledged only after Redis executed it; the mirror then applies the same slots, so
a restarted shard rebuilds exactly what it acknowledged. Validation lives here, not in the
servicer.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from prometheus_client import CollectorRegistry, Gauge

from index_service.store import ShardStore
from orbithash import InvalidInput, Mismatch, ResourceExhausted
from orbithash.bits import code_bytes, padding_is_zero
from orbithash.index import MIH_MIN_ITEMS, HammingIndex, rerank_asymmetric

log = logging.getLogger("orbithash.index")

MAX_ID_BYTES = 256


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
        self._lock = threading.Lock()
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

    def __len__(self) -> int:
        return len(self._index)

    def _check_model(self, bits: int, model_version: str) -> None:
        if bits != self.bits or model_version != self.model_version:
            raise Mismatch(f"shard {self.shard} holds {self.bits}-bit codes of model {self.model_version!r}; "
                           f"got {bits}-bit codes of model {model_version!r}")

    def _codes(self, codes: Sequence[bytes], what: str) -> np.ndarray:
        if not codes:
            raise InvalidInput(f"no {what} given")
        if len(codes) > self.max_batch:
            raise ResourceExhausted(f"{len(codes)} {what} in one call, limit {self.max_batch}")
        width = code_bytes(self.bits)
        for i, code in enumerate(codes):
            if len(code) != width:
                raise InvalidInput(f"{what} {i}: {len(code)} bytes, a {self.bits}-bit code has {width}")
            if not padding_is_zero(code, self.bits):
                raise InvalidInput(f"{what} {i}: padding bits beyond bit {self.bits} must be zero")
        return np.frombuffer(b"".join(codes), np.uint8).reshape(len(codes), width)

    def add(self, ids: Sequence[str], codes: Sequence[bytes], labels: Sequence[int], bits: int,
            model_version: str) -> tuple[int, int]:
        self._check_model(bits, model_version)
        packed = self._codes(codes, "codes")
        for i, item_id in enumerate(ids):
            if not item_id or len(item_id.encode()) > MAX_ID_BYTES:
                raise InvalidInput(f"item {i}: id must be 1..{MAX_ID_BYTES} bytes of UTF-8")
        lab = np.asarray(labels, np.int32)
        with self._lock:
            slots, replaced = self._store.upsert(ids, packed, lab)
            self._index.put(slots, ids, packed, lab)
            self._items.set(len(self._index))
        return len(ids), replaced

    def delete(self, ids: Sequence[str]) -> tuple[list[str], list[str]]:
        if not ids:
            raise InvalidInput("no ids given")
        with self._lock:
            deleted, missing = self._store.delete(ids)
            self._index.remove(deleted)
            self._items.set(len(self._index))
        return deleted, missing

    def search(self, codes: Sequence[bytes], k: int, max_distance: int | None, label: int | None,
               bits: int, model_version: str, u: Sequence[float] = (), candidates: int = 0) -> list[list[ShardHit]]:
        """Exact top-k by Hamming distance; with ``u`` (K floats per query), the ``candidates``
        nearest are re-ranked by the asymmetric score -u·b and the best k returned."""
        self._check_model(bits, model_version)
        if not 1 <= k <= self.max_k:
            raise InvalidInput(f"k must be in 1..{self.max_k}, got {k}")
        queries = self._codes(codes, "query codes")
        if not len(u):
            with self._lock:
                results = self._index.search(queries, k, max_distance, label)
            return [[ShardHit(i, d, lab) for i, d, lab in hits] for hits in results]
        if len(u) != len(codes) * self.bits:
            raise InvalidInput(f"u has {len(u)} floats; {len(codes)} queries of {self.bits} bits need "
                               f"{len(codes) * self.bits}")
        pool = min(max(candidates or 4 * k, k), self.max_k)
        us = np.asarray(u, np.float64).reshape(len(codes), self.bits)
        with self._lock:
            results = self._index.search(queries, pool, max_distance, label)
            stored = [[self._index.get(i) for i, _, _ in hits] for hits in results]
        return [self._rerank(hits, [s[0] for s in found], q_u, k)
                for hits, found, q_u in zip(results, stored, us, strict=True)]

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
        with self._lock:
            for item_id in ids:
                entry = self._index.get(item_id)
                if entry is None:
                    missing.append(item_id)
                else:
                    found.append((item_id, entry[0], entry[1]))
        return found, missing
