"""Ranked: the columns a search answers, and the two ways out of them (hit tuples, joined ids)."""

from __future__ import annotations

import numpy as np
import pytest

from orbithash.index import HammingIndex


@pytest.mark.parametrize("ids", [["a"], ["scène-é", "b", "ß" * 3], [f"item-{i}" for i in range(50)], ["x" * 256, "y"]])
def test_joined_ids_are_the_ids_bytes_with_their_ends(ids: list[str]) -> None:
    index = HammingIndex(64)
    codes = np.arange(len(ids) * 8, dtype=np.uint8).reshape(len(ids), 8)
    index.put(np.arange(len(ids)), ids, codes, np.zeros(len(ids), np.int32))
    ranked = index.search_ranked(codes[:1], len(ids))[0]
    order = ranked.ids()
    assert sorted(order) == sorted(ids)
    body, ends = ranked.joined_ids()
    assert ends.dtype == np.uint32 and ends.tolist() == np.cumsum([len(i.encode()) for i in order]).tolist()
    assert body == b"".join(i.encode() for i in order)
    assert ranked.hits() == index.search(codes[:1], len(ids))[0]


def test_an_empty_answer_has_empty_columns() -> None:
    index = HammingIndex(64)
    ranked = index.search_ranked(np.zeros((2, 8), np.uint8), 5)
    assert [r.count for r in ranked] == [0, 0]
    assert ranked[0].joined_ids()[0] == b"" and ranked[0].hits() == []
