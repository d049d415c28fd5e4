"""The MIH lifecycle: tables dropped with the items, built in the background once a shard is
large enough, used while they pay, and backed off from when probes give up."""

from __future__ import annotations

import time

import numpy as np
import pytest
from support.codes import filled_index, random_codes, trained_like

from orbithash.index import mih, planner


def test_clear_drops_the_tables() -> None:
    index, _, rng = filled_index(64, 500, "random", 1, threads=2, spare=50)
    index.build_multi_index()
    index.clear()
    assert index._planner.tables is None
    assert index.search(random_codes(rng, 2, 64), 5, strategy="mih") == [[], []]


def test_auto_builds_in_the_background_and_uses_the_tables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planner, "MIH_MIN_ITEMS", 1000)
    monkeypatch.setattr(planner, "_BUDGET_DIVISOR", 1)  # a small shard: let probes run to the end
    index, _, _ = filled_index(64, 20_000, "trained", 5, threads=2, spare=50)
    queries = trained_like(np.random.default_rng(5), 8, 64)
    expect = index.search(queries, 10, strategy="scan")
    assert index.search(queries, 10) == expect  # starts the build, scans meanwhile
    deadline = time.monotonic() + 60
    while index._planner.tables is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert index._planner.tables is not None
    calls: list[int] = []
    real = mih.probe_many

    def spy(*args):  # type: ignore[no-untyped-def]
        calls.append(args[3].shape[0])
        return real(*args)

    monkeypatch.setattr(mih, "probe_many", spy)
    assert index.search(queries, 10) == expect
    assert index.search(queries[:1], 10) == expect[:1]
    assert sum(calls) == 9  # every query went through the tables
    assert index._planner.skip == 0
    assert index.search(queries, 10, label=1) == index.search(queries, 10, label=1, strategy="scan")


def test_auto_falls_back_to_the_scan_when_a_probe_gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planner, "MIH_MIN_ITEMS", 1000)
    monkeypatch.setattr(planner, "_BUDGET_DIVISOR", 10**9)  # budget: 1024 units of work
    index, _, rng = filled_index(64, 30_000, "random", 8, threads=2, spare=50)
    index.build_multi_index()
    queries = random_codes(rng, 5, 64)
    expect = index.search(queries, 200, strategy="scan")
    assert index.search(queries, 200) == expect  # uniform codes, large k: every probe gives up
    assert index._planner.skip > 0  # and auto mode now scans for a while before trying again
    assert index.search(queries, 200) == expect
