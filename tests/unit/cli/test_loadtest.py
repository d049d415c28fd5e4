"""``orbithash loadtest``: the mix, the percentile math, the report, and a run against a fake client."""

from __future__ import annotations

import json
import threading
from collections import Counter
from types import SimpleNamespace

import grpc
import pytest

from orbithash_cli import UsageError
from orbithash_cli.loadtest import (
    KindStats,
    Plan,
    format_report,
    parse_mix,
    percentile,
    run_load,
    summarize,
)
from orbithash_client import DeadlineExceeded

# -- the mix ------------------------------------------------------------------------------------------

def test_a_mix_names_kinds_with_weights() -> None:
    assert parse_mix("search-image=6,search-id=2,search-code=1,ingest=1") == {
        "search-image": 6, "search-id": 2, "search-code": 1, "ingest": 1}


def test_a_kind_without_a_weight_weighs_one_and_spaces_and_zero_weights_are_dropped() -> None:
    assert parse_mix(" search-image , ingest=0, search-code = 3 ,") == {"search-image": 1, "search-code": 3}


@pytest.mark.parametrize(("text", "says"), [
    ("search-images=1", "unknown request kind"),
    ("search-image=1,search-image=2", "given twice"),
    ("ingest=x", "whole number"),
    ("ingest=1.5", "whole number"),
    ("ingest=-1", "negative"),
    ("ingest=0", "no request kind"),
    ("", "no request kind"),
])
def test_a_wrong_mix_is_a_usage_error(text: str, says: str) -> None:
    with pytest.raises(UsageError, match=says):
        parse_mix(text)


# -- percentiles --------------------------------------------------------------------------------------

def test_percentiles_interpolate_between_order_statistics_like_numpy() -> None:
    values = [15.0, 20.0, 35.0, 40.0, 50.0]  # unsorted input is sorted first
    assert percentile(list(reversed(values)), 0) == 15.0
    assert percentile(values, 100) == 50.0
    assert percentile(values, 50) == 35.0
    assert percentile(values, 40) == pytest.approx(29.0)   # rank 1.6: 20 + 0.6 × 15
    assert percentile(values, 90) == pytest.approx(46.0)   # rank 3.6: 40 + 0.6 × 10
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_a_percentile_of_one_value_is_that_value_and_of_none_is_none() -> None:
    assert percentile([7.5], 99) == 7.5
    assert percentile([], 50) is None
    with pytest.raises(ValueError, match=r"percentile 101 is not within 0\.\.100"):
        percentile([1.0], 101)


# -- the report ---------------------------------------------------------------------------------------

def _stats() -> dict[str, KindStats]:
    return {"search-image": KindStats([10.0, 20.0, 30.0, 40.0], Counter({"DEADLINE_EXCEEDED": 1})),
            "ingest": KindStats([], Counter({"UNAVAILABLE": 2}))}


def test_the_summary_counts_requests_qps_percentiles_and_errors_per_kind_and_in_total() -> None:
    summary = summarize(_stats(), elapsed_s=2.0)
    image = summary["kinds"]["search-image"]
    assert image["requests"] == 5 and image["ok"] == 4 and image["qps"] == 2.5
    assert image["p50_ms"] == 25.0 and image["p90_ms"] == 37.0 and image["p99_ms"] == pytest.approx(39.7)
    assert image["mean_ms"] == 25.0 and image["max_ms"] == 40.0
    assert image["errors"] == {"DEADLINE_EXCEEDED": 1}
    ingest = summary["kinds"]["ingest"]
    assert ingest["requests"] == 2 and ingest["ok"] == 0 and ingest["p50_ms"] is None
    total = summary["total"]
    assert total["requests"] == 7 and total["qps"] == 3.5
    assert total["errors"] == {"DEADLINE_EXCEEDED": 1, "UNAVAILABLE": 2}
    json.dumps(summary)  # the JSON line is made of it


def test_the_table_has_a_row_per_kind_and_one_for_all() -> None:
    table = format_report(summarize(_stats(), elapsed_s=2.0)).splitlines()
    assert table[0].split() == ["kind", "requests", "QPS", "p50", "ms", "p90", "ms", "p99", "ms", "errors"]
    assert table[2].split()[:6] == ["search-image", "5", "2.5", "25.0", "37.0", "39.7"]
    assert table[2].endswith("DEADLINE_EXCEEDED 1")
    assert table[3].split()[:6] == ["ingest", "2", "1.0", "-", "-", "-"]
    assert table[4].split()[0:2] == ["all", "7"]


# -- a run against a fake client ----------------------------------------------------------------------

class FakeLoadClient:
    """Answers searches at once; every third search by code fails with DEADLINE_EXCEEDED."""

    def __init__(self, store: dict[str, bytes], lock: threading.Lock) -> None:
        self.store, self.lock, self.calls = store, lock, Counter()

    def ingest(self, items, *, batch_size, timeout):
        with self.lock:
            for item in items:
                self.store[item.id] = bytes(8)
        return SimpleNamespace(ingested=len(items))

    def get(self, ids, *, timeout=None):
        with self.lock:
            return SimpleNamespace(items=[SimpleNamespace(id=i, code=self.store[i]) for i in ids if i in self.store])

    def search(self, *, image=None, code=None, id=None, k, timeout):
        self.calls["code" if code is not None else "id" if id is not None else "image"] += 1
        if code is not None and self.calls["code"] % 3 == 0:
            raise DeadlineExceeded("too slow", code=grpc.StatusCode.DEADLINE_EXCEEDED)
        if id is not None:
            assert id in self.store
        return SimpleNamespace(hits=())

    def close(self) -> None:
        pass


def test_a_run_sends_every_kind_records_errors_by_code_and_reports_what_it_stored() -> None:
    store: dict[str, bytes] = {}
    lock = threading.Lock()
    plan = Plan(mix=parse_mix("search-image=2,search-id=1,search-code=1,ingest=1"), concurrency=3, duration_s=None,
                requests=400, warmup_s=0.0, id_prefix="t/")
    ingested: list[str] = []
    result = run_load(lambda: FakeLoadClient(store, lock), plan, [b"a", b"b"], ingested=ingested)
    kinds = result.summary["kinds"]
    assert result.summary["total"]["requests"] == 400
    assert all(kinds[k]["requests"] > 0 for k in plan.mix)
    assert set(kinds["search-code"]["errors"]) == {"DEADLINE_EXCEEDED"}
    assert not kinds["search-image"]["errors"] and not kinds["ingest"]["errors"]
    assert sorted(result.ingested) == sorted(store) == sorted(ingested)  # seeds and ingests: all to delete
    assert {"t/seed-0", "t/seed-1"} <= set(store) and all(i.startswith("t/") for i in store)


def test_an_image_that_cannot_be_read_is_a_usage_error_naming_it(tmp_path) -> None:
    import zipfile

    from unit.cli.cli_support import image_bytes, write_image

    from orbithash_cli.loadtest import load_images

    write_image(tmp_path / "d" / "a.png")
    assert load_images([str(tmp_path / "d")]) == [(tmp_path / "d" / "a.png").read_bytes()]
    (tmp_path / "d" / "gone.png").symlink_to(tmp_path / "nowhere.png")  # vanished before it is read
    with pytest.raises(UsageError, match=r"gone\.png: cannot be read"):
        load_images([str(tmp_path / "d")])
    archive = tmp_path / "z.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as z:
        z.writestr("m.png", image_bytes())
    data = bytearray(archive.read_bytes())
    data[data.find(b"IHDR") + 20] ^= 0xFF  # a bad CRC
    archive.write_bytes(bytes(data))
    with pytest.raises(UsageError, match=r"z\.zip:m\.png: cannot be read .*CRC"):
        load_images([str(archive)])
