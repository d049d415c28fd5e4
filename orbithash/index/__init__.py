"""Exact Hamming search over packed binary codes: the in-memory index of one shard.

``HammingIndex`` (``hamming``) keeps the slots and ranks candidates, their ids stored column-wise
by ``ids``; ``scan`` (the linear scan) and ``mih`` (multi-index hashing) find them, built on the
shared numba ``kernels``; ``planner`` decides when the MIH tables pay and keeps them fresh;
``rerank`` refines candidates by the query's real-valued output. Exported here: what a user of
the index calls or annotates with. Imports numpy and numba only.
"""

from orbithash.index.hamming import MAX_K, HammingIndex, warm_up
from orbithash.index.mih import Tables
from orbithash.index.planner import MIH_MIN_ITEMS, Strategy
from orbithash.index.ranked import Ranked, Result
from orbithash.index.rerank import rerank_asymmetric

__all__ = ["MAX_K", "MIH_MIN_ITEMS", "HammingIndex", "Ranked", "Result", "Strategy", "Tables", "rerank_asymmetric",
           "warm_up"]
