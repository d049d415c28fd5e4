"""warm_up compiles what a shard's searches run, so no query waits for numba after a (re)start."""

from __future__ import annotations

import numpy as np

from orbithash.index import HammingIndex, hamming, ids, scan, warm_up


def test_after_warm_up_no_search_shape_compiles_anything_new() -> None:
    warm_up()
    kernels = [hamming._search_one, hamming._scan_ranked, scan._scan_many, ids._lookup, ids._remove_many]
    before = [len(k.signatures) for k in kernels]
    assert all(before), "warm_up left a kernel uncompiled"
    rng = np.random.default_rng(0)
    for bits in (32, 64, 128, 256):
        index = HammingIndex(bits, threads=1)
        codes = rng.integers(0, 256, (300, bits // 8), dtype=np.uint8)
        index.put(np.arange(300), [f"id-{i}" for i in range(300)], codes, (np.arange(300) % 5).astype(np.int32))
        index.search(codes[:1], 10)  # plain single query
        index.search_ranked(np.frombuffer(codes[1].tobytes(), np.uint8).reshape(1, -1), 10)
        index.search(codes[:1], 10, max_distance=bits // 2, label=2)  # filtered single query
        index.search(codes[:7], 10)  # a batch
        assert index.get("id-3") is not None
        assert index.remove(["id-4", "missing"]) == ["id-4"]
    assert [len(k.signatures) for k in kernels] == before
