"""The fuzzer's short version against the suite's running cluster, as a user runs it: one command,
a final JSON line, and the cluster left with the items it had."""

from __future__ import annotations

import json
import subprocess
import sys

from support import REPO

from orbithash_api.v1 import orbithash_pb2 as pb

METHODS = {"Gateway": len(pb.DESCRIPTOR.services_by_name["Gateway"].methods),
           "IndexShard": len(pb.DESCRIPTOR.services_by_name["IndexShard"].methods),
           "Encoder": len(pb.DESCRIPTOR.services_by_name["Encoder"].methods)}


def test_hostile_requests_to_every_method_get_precise_answers_and_change_nothing(cluster) -> None:
    shards = [arg for shard in cluster.shards for arg in ("--shard", shard.address)]
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "fuzz.py"), "--target", cluster.gateway.address, *shards,
         "--encoder", cluster.encoder.address, "--calls", "12", "--raw", "4", "--seed", "7"],
        capture_output=True, text=True, timeout=600, cwd=REPO)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-2000:] + done.stderr[-4000:]
    result = json.loads(lines[-1])
    assert result["violations"] == {}, result["examples"]  # statuses, messages, counts, hits, liveness, clean-up
    methods = METHODS["Gateway"] + len(cluster.shards) * METHODS["IndexShard"] + METHODS["Encoder"]
    assert len(result["by_method"]) == methods and result["calls"] == methods * 16
    statuses = {status for counts in result["by_method"].values() for status in counts}
    assert {"OK", "INVALID_ARGUMENT"} <= statuses, statuses  # valid calls got through, hostile ones were refused
    assert sum(counts.get("OK", 0) for counts in result["by_method"].values()) > methods  # past the first checks
    assert done.returncode == 0
