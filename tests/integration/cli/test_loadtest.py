"""``orbithash loadtest`` as an operator runs it (a subprocess) against the real cluster, for ~5 s."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
import zipfile
from pathlib import Path

from support import REPO, SHARED_DATA

from orbithash_cli.loadtest import KINDS
from orbithash_client import OrbitHashClient
from orbithash_local.cluster import Cluster

CLI = [sys.executable, "-m", "orbithash_local.cli"]
EXPECTED_ERRORS = {"DEADLINE_EXCEEDED"}  # a shared CI machine may be slow; nothing else may fail


def _images(folder: Path, count: int = 6) -> Path:
    folder.mkdir()
    with zipfile.ZipFile(SHARED_DATA / "ucmerced.zip") as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith((".jpg", ".tif")))
        for name in names[:: len(names) // count][:count]:
            (folder / Path(name).name).write_bytes(archive.read(name))
    return folder


def test_a_short_loadtest_sends_every_kind_of_its_mix_and_leaves_the_cluster_as_it_was(cluster: Cluster,
                                                                                      tmp_path: Path) -> None:
    assert cluster.gateway is not None
    address = cluster.gateway.address
    with OrbitHashClient(address, timeout=60) as client:
        before = client.info().total
        prefix = f"loadtest-it-{uuid.uuid4().hex[:8]}/"
        result = subprocess.run(
            [*CLI, "loadtest", "--target", address, "--images", str(_images(tmp_path / "images")), "--duration", "5",
             "--warmup", "0.5", "--concurrency", "2", "--timeout", "20", "--id-prefix", prefix,
             "--mix", "search-image=3,search-id=2,search-code=2,ingest=2"],
            cwd=REPO, capture_output=True, text=True, timeout=120)
        assert result.returncode in (0, 1), result.stderr[-3000:]
        line = json.loads(result.stdout.strip().splitlines()[-1])
        assert set(line["kinds"]) == set(KINDS)
        for kind in KINDS:
            assert line["kinds"][kind]["requests"] > 0, kind
            assert line["kinds"][kind]["ok"] > 0, kind
        assert set(line["errors"]) <= EXPECTED_ERRORS, line["errors"]
        assert (result.returncode == 0) == (not line["errors"])
        assert 5 <= line["elapsed_s"] < 30 and line["requests"] == sum(k["requests"] for k in line["kinds"].values())
        assert "search-image" in result.stdout and "p99 ms" in result.stdout  # the table
        assert line["ingested_ids"] > 0
        assert line["deleted"] == line["ingested_ids"] or line["errors"]  # an ingest past its deadline may not store
        assert client.info().total == before, "the cluster must be left with the items it had"
