"""What one search reads and what it asks for, as the scan and the MIH probe both take them."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

# (slots int64, distances int32) of one query: every slot at distance <= the k-th smallest,
# ties included, in no order; the index orders them by (distance, id).
Candidates = tuple[np.ndarray, np.ndarray]


class SlotView(NamedTuple):
    """The slot arrays cut to [0, end), taken under the read lock.

    Writers replace the arrays when they grow and never shrink ``end`` under a reader, so a view
    stays valid for the search that took it. A named tuple: one is made per search call, where
    a dataclass would add microseconds to the fixed cost of a small shard's search.
    """

    codes: np.ndarray  # (end, words) uint64: each code's bytes padded with zeros to whole words
    live: np.ndarray  # (end,) uint8
    labels: np.ndarray  # (end,) int32
    bits: int

    @property
    def end(self) -> int:
        return self.codes.shape[0]

    @property
    def words(self) -> int:
        return self.codes.shape[1]


class TopK(NamedTuple):
    """One search's question: the k nearest within ``threshold`` bits, of one label if given."""

    k: int
    threshold: int
    label: int | None = None

    def filter_args(self) -> tuple[int, bool, int, int]:
        """(label, use_label, k, threshold) as the kernels take them after ``live, labels``."""
        return (0 if self.label is None else int(self.label), self.label is not None, self.k, self.threshold)
