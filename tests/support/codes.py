"""Random, clustered and trained-like packed codes, a filled index, and the brute-force Hamming
oracle the index tests compare with."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from orbithash.index import HammingIndex

Items = dict[str, tuple[np.ndarray, int]]  # id → (packed code, label), as ``reference`` takes them


def random_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    return np.packbits(rng.integers(0, 2, (n, bits), dtype=np.uint8), axis=1)


def clustered_codes(rng: np.random.Generator, n: int, bits: int) -> np.ndarray:
    """Few centres, each item a centre with 0–2 flipped bits: many exact duplicates and ties."""
    centres = rng.integers(0, 2, (4, bits), dtype=np.uint8)
    signs = centres[rng.integers(0, 4, n)]
    for _ in range(2):
        flip = rng.random(n) < 0.5
        signs[flip, rng.integers(0, bits, int(flip.sum()))] ^= 1
    return np.packbits(signs, axis=1)


def trained_like(rng: np.random.Generator, n: int, bits: int, classes: int = 5, flip: float = 0.08) -> np.ndarray:
    """Codes like a trained model's: a centre code per class, each bit flipped with probability ``flip``."""
    centres = rng.integers(0, 2, (classes, bits), dtype=np.uint8)
    signs = centres[rng.integers(0, classes, n)] ^ (rng.random((n, bits)) < flip)
    return np.packbits(signs.astype(np.uint8), axis=1)


MAKERS: dict[str, Callable[[np.random.Generator, int, int], np.ndarray]] = {
    "random": random_codes, "clustered": clustered_codes, "trained": trained_like}


def shuffled_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Ids whose string order differs from slot order, so tie-breaking by id is observable."""
    return [f"item-{v}" for v in rng.permutation(n * 7)[:n].tolist()]


def filled_index(bits: int, n: int, kind: str, seed: int, *, capacity: int = 1024, threads: int | None = None,
                 spare: int = 10) -> tuple[HammingIndex, Items, np.random.Generator]:
    """An index of n ``kind`` codes (labels -1..2) at sparse, unordered slots, as a store after deletes.

    Returns the items as ``reference`` takes them and the generator, to draw queries from.
    """
    rng = np.random.default_rng(seed)
    codes = MAKERS[kind](rng, n, bits)
    ids = shuffled_ids(rng, n)
    labels = rng.integers(-1, 3, n).astype(np.int32)
    index = HammingIndex(bits, capacity=capacity, threads=threads)
    index.put(rng.permutation(n + spare)[:n], ids, codes, labels)
    return index, {i: (c, int(lab)) for i, c, lab in zip(ids, codes, labels, strict=True)}, rng


def reference(items: Items, query: np.ndarray, bits: int, k: int,
              max_distance: int | None = None, label: int | None = None) -> list[tuple[str, int, int]]:
    """Brute force: every distance by unpackbits, filter, full sort by (distance, id)."""
    rows = []
    q = np.unpackbits(query, count=bits)
    for item_id, (code, lab) in items.items():
        d = int(np.count_nonzero(np.unpackbits(code, count=bits) != q))
        if (max_distance is None or d <= max_distance) and (label is None or lab == label):
            rows.append((item_id, d, lab))
    return sorted(rows, key=lambda r: (r[1], r[0]))[:k]
