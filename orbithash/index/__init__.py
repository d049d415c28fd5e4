"""Exact Hamming search over packed binary codes: the in-memory index of one shard.

``HammingIndex`` is the public type; the kernels, the linear scan, multi-index hashing and
asymmetric re-ranking live in the modules beside it. Imports numpy and numba only.
"""

from orbithash.index.hamming import MIH_MIN_ITEMS, HammingIndex, rerank_asymmetric, warm_up

__all__ = ["MIH_MIN_ITEMS", "HammingIndex", "rerank_asymmetric", "warm_up"]
