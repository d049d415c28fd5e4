"""The latency-against-concurrency bench, as a user runs it against a running gateway."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image
from support import REPO


def test_latency_concurrency_measures_a_running_gateway_and_draws_it(cluster, tmp_path: Path) -> None:
    figure = tmp_path / "latency.png"
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "latency_concurrency.py"), "--target", cluster.gateway.address,
         "--concurrency", "1", "3", "--seconds", "1", "--warmup", "0.2", "--out", str(figure)],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(done.stdout.splitlines()[-1])
    rows = result["rows"]
    assert [r["concurrency"] for r in rows] == [1, 3]
    for row in rows:
        assert row["errors"] == {} and row["ok"] >= 3, row
        assert 0 < row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] < 30_000, row
        assert 0.5 * row["ok"] <= row["qps"] <= 1.5 * row["ok"], row  # queries/s over a 1 s measured window
    assert result["target"] == cluster.gateway.address and result["onnxruntime_batch32_img_s"] is None
    with Image.open(figure) as png:  # two panels, 10 x 4.2 inches at 120 dpi
        assert (png.format, png.size) == ("PNG", (1200, 504))
