"""The numba pieces both searches are built from: popcount, the threshold cut, result packing.

The linear scan (``scan``) and multi-index hashing (``mih``) compute the same thing, every slot
at distance <= the k-th smallest, and share these kernels so they cut and pack candidates the
same way. Imports nothing of the index, so either search can build on it without a cycle.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic


@intrinsic
def popcount(typingctx, x):
    """``llvm.ctpop.i64``: numba exposes no popcount, and LLVM vectorises this one."""
    if not isinstance(x, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        value = builder.zext(args[0], ir.IntType(64)) if x.bitwidth < 64 else args[0]
        return builder.ctpop(value)

    return types.uint64(x), codegen


@njit(cache=True, nogil=True)
def tighten(cand_slots, cand_dist, n, k, threshold, bits):
    """Lower the threshold to the k-th smallest candidate distance and drop what lies above it."""
    if n >= k:
        hist = np.zeros(bits + 1, np.int64)
        for j in range(n):
            hist[cand_dist[j]] += 1
        seen = 0
        for t in range(bits + 1):
            seen += hist[t]
            if seen >= k:
                threshold = min(threshold, t)
                break
    kept = 0
    for j in range(n):
        if cand_dist[j] <= threshold:
            cand_slots[kept] = cand_slots[j]
            cand_dist[kept] = cand_dist[j]
            kept += 1
    return kept, threshold


@njit(cache=True, nogil=True)
def concat(parts_slots, parts_dist):
    """Per-query (slots, distances) lists → (offsets, all slots, all distances) in one array each."""
    nq = len(parts_slots)
    offsets = np.zeros(nq + 1, np.int64)
    for r in range(nq):
        offsets[r + 1] = offsets[r] + parts_slots[r].shape[0]
    all_slots = np.empty(offsets[nq], np.int64)
    all_dist = np.empty(offsets[nq], np.int32)
    for r in range(nq):
        all_slots[offsets[r]:offsets[r + 1]] = parts_slots[r]
        all_dist[offsets[r]:offsets[r + 1]] = parts_dist[r]
    return offsets, all_slots, all_dist
