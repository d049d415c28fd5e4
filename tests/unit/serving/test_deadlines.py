"""The absolute write limit a shard reads from metadata: only a finite time counts, the earliest wins."""

from __future__ import annotations

import math
import time

import pytest

from orbithash_serving.deadlines import NOT_AFTER_KEY, not_after_metadata, write_time_left


class Context:
    def __init__(self, metadata: list[tuple[str, str]], remaining: float | None = None) -> None:
        self._metadata = tuple(metadata)
        self._remaining = remaining

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return self._metadata

    def time_remaining(self) -> float | None:
        return self._remaining


def test_the_caller_s_limit_and_grpc_s_deadline_whichever_is_earlier() -> None:
    assert write_time_left(Context([], None)) is None
    assert write_time_left(Context([], 7.0)) == 7.0
    left = write_time_left(Context(list(not_after_metadata(3.0)), 7.0))
    assert left is not None and 2.5 < left <= 3.0
    assert write_time_left(Context(list(not_after_metadata(9.0)), 7.0)) == 7.0


def test_of_several_limits_the_earliest_counts() -> None:
    now = time.time()
    left = write_time_left(Context([(NOT_AFTER_KEY, f"{now + 30}"), (NOT_AFTER_KEY, f"{now + 2}")]))
    assert left is not None and 1.5 < left <= 2.0


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "-nan", "1e400", "soon", ""])
def test_a_limit_that_is_not_a_finite_time_is_ignored(value: str) -> None:
    """A NaN or infinite limit was returned as the time left when gRPC reported no deadline (None);
    the shard's ``int(limit * 1e6)`` would then fail. gRPC's sync server reports a large number
    instead, and ``min`` kept it, so only the order of ``min``'s arguments hid it."""
    assert write_time_left(Context([(NOT_AFTER_KEY, value)], None)) is None
    assert write_time_left(Context([(NOT_AFTER_KEY, value)], 5.0)) == 5.0


def test_a_limit_in_the_past_leaves_no_time() -> None:
    left = write_time_left(Context([(NOT_AFTER_KEY, "1.5")], 5.0))  # 1970
    assert left is not None and left < 0 and math.isfinite(left)
