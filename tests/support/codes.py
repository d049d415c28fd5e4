"""Random and clustered packed codes, and the brute-force Hamming oracle the index tests compare with."""

from __future__ import annotations

import numpy as np


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


def shuffled_ids(rng: np.random.Generator, n: int) -> list[str]:
    """Ids whose string order differs from slot order, so tie-breaking by id is observable."""
    return [f"item-{v}" for v in rng.permutation(n * 7)[:n].tolist()]


def reference(items: dict[str, tuple[np.ndarray, int]], query: np.ndarray, bits: int, k: int,
              max_distance: int | None = None, label: int | None = None) -> list[tuple[str, int, int]]:
    """Brute force: every distance by unpackbits, filter, full sort by (distance, id)."""
    rows = []
    q = np.unpackbits(query, count=bits)
    for item_id, (code, lab) in items.items():
        d = int(np.count_nonzero(np.unpackbits(code, count=bits) != q))
        if (max_distance is None or d <= max_distance) and (label is None or lab == label):
            rows.append((item_id, d, lab))
    return sorted(rows, key=lambda r: (r[1], r[0]))[:k]
