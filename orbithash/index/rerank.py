"""Asymmetric re-ranking: the few candidates of an exact search, ordered by the query's real output."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from orbithash import InvalidInput
from orbithash.codes import as_code_array


def rerank_asymmetric(u_query: np.ndarray, stored_codes: np.ndarray, bits: int, ids: Sequence[str]) -> list[int]:
    """Order candidates by score -u·b (b in {-1, +1} from the stored bits) as float32, ties by id.

    Returns indices into ``ids``. Asymmetric: the query keeps its real-valued hash output u, so
    candidates at equal Hamming distance are told apart by how sure the query was of the bits
    on which they differ — a cheap refinement of the few hundred candidates of an exact search.
    The score is ranked as the float32 a shard sends, so hits sent with equal scores are in id
    order, as the gateway's merge expects of each shard.
    """
    u = np.asarray(u_query, np.float64).reshape(-1)
    if u.shape[0] != bits or not np.all(np.isfinite(u)):
        raise InvalidInput(f"u_query must be {bits} finite floats, got shape {np.shape(u_query)}")
    codes = as_code_array(stored_codes, bits, "stored_codes", n=len(ids))
    signs = np.unpackbits(codes, axis=1, count=bits).astype(np.float64) * 2 - 1
    score = (-(signs @ u)).astype(np.float32).tolist()
    return sorted(range(len(ids)), key=lambda i: (score[i], ids[i]))
