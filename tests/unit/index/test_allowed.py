"""``HammingIndex.search(allowed=...)``: a bool mask over slots applied before ranking, so the
result is the exact top-k of the allowed items, checked against the brute-force reference for
random masks of every density, with the radius and label filters, for the scan and for MIH."""

from __future__ import annotations

import numpy as np
import pytest
from support.codes import filled_index, random_codes, reference

from orbithash import InvalidInput
from orbithash.index import HammingIndex


@pytest.mark.parametrize("strategy", ["scan", "mih"])
@pytest.mark.parametrize("bits", [12, 64, 256])
def test_random_masks_equal_brute_force(strategy: str, bits: int) -> None:
    index, items, rng = filled_index(bits, 1500, "clustered" if bits == 12 else "random", bits, threads=2, spare=60)
    slot_of = {i: index.slot(i) for i in items}
    queries = np.concatenate([random_codes(rng, 2, bits), items[next(iter(items))][0][None]])
    for density in (0.0, 0.002, 0.05, 0.5, 0.98, 1.0):
        allowed = rng.random(index.capacity) < density
        kept = {i: v for i, v in items.items() if allowed[slot_of[i]]}
        for k, radius, label in ((1, None, None), (20, None, None), (2000, None, None), (30, bits // 3, None),
                                 (10, None, 2), (50, bits // 2, 0)):
            got = index.search(queries, k, radius, label, strategy=strategy, allowed=allowed)  # type: ignore[arg-type]
            assert got == [reference(kept, q, bits, k, radius, label) for q in queries], (density, k, radius, label)


def test_allowed_applies_before_ranking_and_mask_ends_are_closed() -> None:
    """A near item that is not allowed never displaces a far allowed one; slots past the mask's end
    are not allowed; an all-False or empty mask finds nothing."""
    index = HammingIndex(16, capacity=4)
    codes = np.array([[0, 0], [0, 1], [0, 3], [0, 7], [0, 15]], np.uint8)
    index.put(np.arange(5), ["a", "b", "c", "d", "e"], codes, np.zeros(5, np.int32))
    allowed = np.array([False, True, False, True])  # slot 4 lies past its end
    for strategy in ("scan", "mih"):
        got = index.search(codes[:1], 2, strategy=strategy, allowed=allowed)  # type: ignore[arg-type]
        assert got == [[("b", 1, 0), ("d", 3, 0)]]
        assert index.search(codes[:1], 3, strategy=strategy, allowed=np.zeros(8, bool)) == [[]]  # type: ignore[arg-type]
        assert index.search(codes[:1], 3, strategy=strategy, allowed=np.zeros(0, bool)) == [[]]  # type: ignore[arg-type]
    assert index.search(codes[:1], 5, allowed=np.ones(5, bool)) == index.search(codes[:1], 5)
    for bad in (np.ones(5, np.uint8), np.ones((1, 5), bool), [True] * 5):
        with pytest.raises(InvalidInput, match="allowed"):
            index.search(codes[:1], 1, allowed=bad)  # type: ignore[arg-type]
