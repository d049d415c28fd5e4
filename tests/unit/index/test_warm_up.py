"""warm_up compiles what a shard's searches run, so no query waits for numba after a (re)start."""

from __future__ import annotations

import pickle
import subprocess
import sys

from orbithash.index import scan
from orbithash.index.kernel_cache import kernel_cache_dir

# Run in a fresh interpreter: in the suite, earlier tests have already compiled every kernel for
# every shape, so in-process neither "warm_up compiled it" nor "nothing new compiled" could fail.
_FRESH_WARM_UP = """
import numpy as np
from orbithash.index import HammingIndex, hamming, ids, scan, warm_up

kernels = [hamming._search_one, hamming._scan_ranked, scan._scan_many, ids._lookup, ids._remove_many]
assert not any(k.signatures for k in kernels), "not a fresh interpreter: a kernel ran before warm_up"
warm_up()
before = [len(k.signatures) for k in kernels]
assert all(before), f"warm_up left a kernel uncompiled: {before}"
rng = np.random.default_rng(0)
for bits in (32, 64, 128, 256):
    index = HammingIndex(bits, threads=1)
    codes = rng.integers(0, 256, (300, bits // 8), dtype=np.uint8)
    index.put(np.arange(300), [f"id-{i}" for i in range(300)], codes, (np.arange(300) % 5).astype(np.int32))
    index.search(codes[:1], 10)  # plain single query
    index.search_ranked(np.frombuffer(codes[1].tobytes(), np.uint8).reshape(1, -1), 10)
    index.search(codes[:1], 10, max_distance=bits // 2, label=2)  # filtered single query
    index.search(codes[:7], 10)  # a batch
    assert index.get("id-3") == (codes[3].tobytes(), 3)
    assert index.remove(["id-4", "missing"]) == ["id-4"]
after = [len(k.signatures) for k in kernels]
assert after == before, f"compiled after warm_up: {before} -> {after}"
"""


def test_after_warm_up_no_search_shape_compiles_anything_new() -> None:
    done = subprocess.run([sys.executable, "-c", _FRESH_WARM_UP], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def test_a_start_compiles_each_word_count_loop_once() -> None:
    """A caller's constant (start 0, no label) reaching the loops as a numba literal compiled all four
    of them again per distinct constant: 24 compilations and minutes before a fresh shard served.
    numba's on-disk index of each loop lists every signature it was ever compiled for, so a fresh
    process calling the loops with new constants adds to it, warm cache or cold (a cold cache only
    makes this test compile everything first)."""
    # Two callers of the loops with different constants: a filtered and a plain single query.
    code = ("import numpy as np; from orbithash.index import HammingIndex, warm_up; warm_up();"
            "index = HammingIndex(64, capacity=4, threads=1); codes = np.arange(16, dtype=np.uint8).reshape(2, 8);"
            "index.put(np.array([0, 1]), ['a', 'b'], codes, np.array([0, 1], np.int32));"
            "index.search(codes[:1], 1, max_distance=3, label=1); index.search(codes[:1], 1)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    cache_dir = kernel_cache_dir(scan._fill1)
    assert cache_dir is not None
    for loop in ("_fill1", "_fill2", "_fill3", "_fill4"):
        (index_file,) = cache_dir.glob(f"scan.{loop}-*.nbi")
        with index_file.open("rb") as fh:
            pickle.load(fh)  # numba's version
            _stamp, overloads = pickle.loads(fh.read())
        assert len(overloads) == 1, (loop, [signature for signature, *_ in overloads])
