"""One query's answer column-wise, as the compiled ranking leaves it: no Python object per hit.

A service can send these columns as they are; only a caller that wants hit tuples pays for one
str and one tuple per hit.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from orbithash.index.ids import split_ids

Result = list[tuple[str, int, int]]  # (id, distance, label) by ascending distance, then id

_SEPARATOR = 0xFF  # joins the ids in ``blob``; never part of UTF-8


class Ranked(NamedTuple):
    """Up to k hits by ascending (distance, id)."""

    blob: np.ndarray  # uint8: the ids' UTF-8 bytes joined by 0xFF
    ascii: bool  # every id is ASCII (then one decode makes them all)
    distances: np.ndarray  # int32
    labels: np.ndarray  # int32

    @property
    def count(self) -> int:
        return int(self.distances.shape[0])

    def ids(self) -> list[str]:
        return split_ids(self.blob, self.ascii)

    def hits(self) -> Result:
        return list(zip(self.ids(), self.distances.tolist(), self.labels.tolist(), strict=True))

    def joined_ids(self) -> tuple[bytes, np.ndarray]:
        """The ids' bytes back to back, without separators, and their end offsets (uint32)."""
        n = self.count
        if n == 0:
            return b"", np.zeros(0, np.uint32)
        seps = np.flatnonzero(self.blob == _SEPARATOR)
        ends = np.empty(n, np.uint32)
        ends[:-1] = seps - np.arange(n - 1)
        ends[-1] = self.blob.shape[0] - (n - 1)
        body = np.delete(self.blob, seps) if n > 1 else self.blob
        return body.tobytes(), ends


def empty_ranked() -> Ranked:
    return Ranked(np.zeros(0, np.uint8), True, np.zeros(0, np.int32), np.zeros(0, np.int32))
