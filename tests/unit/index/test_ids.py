"""The columnar id storage: exact against a dict oracle, and within its memory budget."""

from __future__ import annotations

import re

import numpy as np
import pytest

from orbithash import InvalidInput
from orbithash.codes import check_ids
from orbithash.index import HammingIndex
from orbithash.index import ids as ids_module
from orbithash.index.ids import IdTable, encode_ids

# Issue 14: the shard's own arrays for 1M x 64-bit codes with ids <= 16 bytes, MIH tables excluded.
BYTES_PER_ITEM_BUDGET = 64


def random_id(rng: np.random.Generator) -> str:
    """Short ids that share prefixes and lengths (many bucket collisions), some long, some not ASCII."""
    kind = int(rng.integers(0, 10))
    if kind < 6:
        return f"i{int(rng.integers(0, 400))}"
    if kind < 8:
        return "é€" * int(rng.integers(1, 40)) + str(int(rng.integers(0, 50)))  # up to 196 bytes
    return "x" * int(rng.integers(200, 254)) + f"{int(rng.integers(0, 99)):02d}"  # up to 256 bytes


def check(table: IdTable, live: np.ndarray, oracle: dict[str, int]) -> None:
    assert len(table) == len(oracle)
    for id, slot in oracle.items():
        assert table.slot(id) == slot
    slots = np.array(sorted(oracle.values()), np.int64)
    by_slot = {s: i for i, s in oracle.items()}
    assert table.ids(slots) == [by_slot[s] for s in slots.tolist()]
    assert np.flatnonzero(live).tolist() == slots.tolist()


def test_random_puts_moves_takeovers_and_removes_match_a_dict() -> None:
    rng = np.random.default_rng(3)
    capacity = 300
    table, live = IdTable(capacity), np.zeros(capacity, np.uint8)
    oracle: dict[str, int] = {}
    for step in range(300):
        if step % 7 == 6:
            gone = [random_id(rng) for _ in range(int(rng.integers(1, 30)))]
            expected = []
            for id in gone:
                if id in oracle:
                    del oracle[id]
                    expected.append(id)
            assert table.remove([*gone, 17, "\ud800"], live) == expected  # a non-str, an unencodable str
        else:
            n = int(rng.integers(1, 60))
            slots = rng.integers(0, capacity, n)
            ids = [random_id(rng) for _ in range(n)]
            table.put(slots.astype(np.int64), *encode_ids(ids), live)
            for slot, id in zip(slots.tolist(), ids, strict=True):  # the oracle of HammingIndex.put
                oracle.pop(id, None)
                for other in [o for o, s in oracle.items() if s == slot]:
                    del oracle[other]
                oracle[id] = slot
        check(table, live, oracle)
        assert table.slot("absent") is None and table.slot("i" * 300) is None and table.slot(5) is None
    table.clear()
    assert len(table) == 0 and table.slot(next(iter(oracle))) is None


def test_the_buffer_keeps_only_live_ids_after_churn() -> None:
    table, live = IdTable(1000), np.zeros(1000, np.uint8)
    slots = np.arange(1000, dtype=np.int64)
    for round in range(20):  # every id replaced each round: garbage is dropped as the buffer grows
        table.put(slots, *encode_ids([f"round{round}-{i:04d}" for i in range(1000)]), live)
    live_bytes = 1000 * len(b"round19-0000")
    assert table._buf.nbytes <= 2 * live_bytes + 1000 * 16
    assert table.ids(np.array([0, 999])) == ["round19-0000", "round19-0999"]
    assert table.slot("round3-0005") is None


def test_bytes_per_item_of_a_bulk_loaded_shard_stay_within_budget() -> None:
    """A deterministic count over the index's own arrays (nbytes, not RSS): a regression fails here.

    Per item today: code 8 + label 4 + live flag 1 + id offset 8 + length 2 + hash 8 + id bytes 14
    + about 8 of id table (int32 buckets, load 3/8..3/4) = about 53 bytes.
    """
    n = 200_000
    index = HammingIndex(64)
    codes = np.zeros((n, 8), np.uint8)
    index.put(np.arange(n), [f"item-{i:09d}" for i in range(n)], codes, np.zeros(n, np.int32))
    per_item = index.nbytes / n
    assert per_item <= BYTES_PER_ITEM_BUDGET, f"{per_item:.1f} bytes per item"
    # 16-byte ids, written in batches after the load as a shard's ingest does
    more = HammingIndex(64)
    for a in range(0, n, 5000):
        more.put(np.arange(a, a + 5000), [f"{i:016d}" for i in range(a, a + 5000)], codes[:5000],
                 np.zeros(5000, np.int32))
    assert len(more) == n
    assert more.nbytes / n <= 2 * BYTES_PER_ITEM_BUDGET  # slot arrays double as they grow


def test_a_full_hash_collision_is_told_apart_by_the_bytes() -> None:
    """Two ids forced onto one 64-bit hash: the lookup still finds each one by its bytes."""
    buf = np.frombuffer(b"abcdabce", np.uint8)
    offsets, lengths = np.array([0, 4], np.uint64), np.array([4, 4], np.uint16)
    h = np.uint64(7)
    hashes = np.array([h, h], np.uint64)
    table = np.full(16, -1, np.int32)
    table[7], table[8] = 0, 1  # both probe from bucket 7
    for key, slot in ((b"abcd", 0), (b"abce", 1), (b"abcf", -1)):
        keys = np.frombuffer(key, np.uint8)
        assert ids_module._find(table, hashes, offsets, lengths, buf, keys, 0, 4, h)[1] == slot


def test_encode_ids_accepts_and_refuses_exactly_what_check_ids_does() -> None:
    for ids in (["a", "b" * 256, "\x00x"], ["é", "a€", "x" * 254 + "é"], ["z"]):
        keys, ends = encode_ids(ids)
        raw = check_ids(ids)
        assert keys.tobytes() == b"".join(raw) and ends.tolist() == np.cumsum([len(r) for r in raw]).tolist()
    for bad in (["a", ""], ["a", "b" * 257], ["a", 3], ["é" * 129], ["a", "\ud800"], ["a", None]):
        with pytest.raises(InvalidInput) as expected:
            check_ids(bad)
        with pytest.raises(InvalidInput, match=re.escape(str(expected.value))):
            encode_ids(bad)  # type: ignore[arg-type]
