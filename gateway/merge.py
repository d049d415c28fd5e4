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


H = TypeVar("H", bound=HitLike)


def merge_topk(per_shard: Iterable[Sequence[H]], k: int) -> list[H]:
    """Each shard returns its own exact top-k, so the global top-k is among their union."""
    merged = heapq.merge(*per_shard, key=lambda h: (h.distance, h.id))
    return list(itertools.islice(merged, k))
