"""Stable placement of item ids on shards.

Jump consistent hash (Lamping & Veach, 2014) over a 64-bit BLAKE2b of the UTF-8 id: the same id
always lands on the same shard, and growing from n to n+1 shards moves only 1/(n+1) of the items.
"""

from __future__ import annotations

import hashlib

_MASK = (1 << 64) - 1


def jump_hash(key: int, buckets: int) -> int:
    if buckets <= 0:
        raise ValueError("buckets must be positive")
    b, j = -1, 0
    while j < buckets:
        b = j
        key = (key * 2862933555777941757 + 1) & _MASK
        j = int((b + 1) * ((1 << 31) / ((key >> 33) + 1)))
    return b


def shard_for(item_id: str, shards: int) -> int:
    digest = hashlib.blake2b(item_id.encode("utf-8"), digest_size=8).digest()
    return jump_hash(int.from_bytes(digest, "big"), shards)
