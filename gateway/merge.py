"""Exact global top-k from per-shard top-k lists (each sorted by distance, then id)."""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterable, Sequence
from typing import Protocol, TypeVar


class HitLike(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def distance(self) -> int: ...

    @property
    def score(self) -> float: ...


H = TypeVar("H", bound=HitLike)


def merge_topk(per_shard: Iterable[Sequence[H]], k: int, by_score: bool = False) -> list[H]:
    """Each shard returns its own exact top-k, so the global top-k is among their union.

    ``by_score``: the lists are re-ranked by asymmetric score (ascending), ties by id.
    """
    key = (lambda h: (h.score, h.id)) if by_score else (lambda h: (h.distance, h.id))
    merged = heapq.merge(*per_shard, key=key)
    return list(itertools.islice(merged, k))
