"""Exact global top-k from per-shard top-k lists (each sorted by distance, then id).

A shard answers either with hit objects or with columns (``gateway.core.HitColumns``: arrays, no
object per hit). Columns are merged on their arrays: the k-th smallest key is found with one
partition, the hits below it are all kept, the ids are compared only among the hits tied at it,
and a hit object is built only for the k kept. The order is the same either way: ascending key
(distance, or score when re-ranked), ties by id bytewise (equal to ``str`` order of the ids),
then by shard position, as ``heapq.merge`` of the lists gives it.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar

import numpy as np


class HitLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def distance(self) -> int: ...

    @property
    def score(self) -> float: ...


H = TypeVar("H", bound=HitLike)


class Columns(Protocol[H]):  # type: ignore[misc]
    """One shard's sorted hits as arrays (``gateway.core.HitColumns``)."""

    def __len__(self) -> int: ...

    def keys(self, by_score: bool) -> np.ndarray: ...

    def id_bytes(self, j: int) -> bytes: ...

    @staticmethod
    def take(answers: Sequence[Columns[H]], which: Sequence[int], positions: Sequence[int]) -> list[H]: ...

    def hits(self) -> list[H]: ...


def _is_columns(answer: object) -> bool:
    return hasattr(answer, "keys") and hasattr(answer, "take")


def merge_topk(per_shard: Iterable[Sequence[H] | Columns[H]], k: int, by_score: bool = False) -> list[H]:
    """Each shard returns its own exact top-k, so the global top-k is among their union.

    ``by_score``: the lists are re-ranked by asymmetric score (ascending), ties by id.
    """
    answers = list(per_shard)
    if answers and all(_is_columns(a) for a in answers):
        return _merge_columns(answers, k, by_score)  # type: ignore[arg-type]
    lists = [a.hits() if _is_columns(a) else a for a in answers]  # type: ignore[union-attr]
    key = (lambda h: (h.score, h.id)) if by_score else (lambda h: (h.distance, h.id))
    merged = heapq.merge(*lists, key=key)
    return list(itertools.islice(merged, k))


def _merge_columns(answers: Sequence[Columns[H]], k: int, by_score: bool) -> list[H]:
    keys = [np.asarray(a.keys(by_score), np.float64) for a in answers]  # exact for uint32 and float32
    sizes = [x.shape[0] for x in keys]
    key = np.concatenate(keys)
    which = np.repeat(np.arange(len(answers)), sizes)
    pos = np.concatenate([np.arange(n) for n in sizes])
    order = np.lexsort((pos, which, key))  # by key, then shard, then the shard's own (id) order
    key, which, pos = key[order], which[order], pos[order]
    w, p = which.tolist(), pos.tolist()
    if len(answers) > 1 and key.shape[0] > 1:
        # Hits of one key from several shards are told apart by id: only those groups need the ids.
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
        mixed = np.minimum.reduceat(which, starts) != np.maximum.reduceat(which, starts)
        ends = np.r_[starts[1:], key.shape[0]]
        for a, b in zip(starts[mixed].tolist(), ends[mixed].tolist(), strict=True):
            if a >= k:
                break
            group = sorted((answers[s].id_bytes(j), s, j) for s, j in zip(w[a:b], p[a:b], strict=True))
            w[a:b] = [s for _, s, _ in group]
            p[a:b] = [j for _, _, j in group]
    return answers[0].take(answers, w[:k], p[:k])
