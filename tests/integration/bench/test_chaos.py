"""The chaos suite's short version, run as a user runs it: one command, a final JSON line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import REPO


def test_quick_chaos_loses_nothing_and_recovers(trained_repo: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "chaos.py"), "--quick", "--model-repository", str(trained_repo),
         "--work-dir", str(tmp_path / "cluster")],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(lines[-1])
    assert (result["lost_acknowledged"], result["phantom_writes"], result["resurrected"],
            result["unflagged_partial"]) == (0, 0, 0, 0), result["examples"]
    assert result["other_violations"] == {}, result["examples"]
    assert result["bad_input_unexpected"] == [], result["bad_input"]  # each hostile input: its status, nothing stored
    assert set(result["recovery_s"]) == {"kill shard-1", "stop shard-0", "stop redis-server", "kill tritonserver",
                                         "kill gateway"}
    assert result["max_recovery_s"] < 30, result["recovery_s"]
    assert result["errors_by_code"].get("OK", 0) > 100
    assert result["items_by_state"].get("present", 0) > 10 and result["items_by_state"].get("deleted", 0) > 0
    assert result["partial_answers"] > 0  # the stopped and killed shards were noticed, and said so
    assert done.returncode == 0
