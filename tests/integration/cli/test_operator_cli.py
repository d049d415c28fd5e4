"""The operator commands as an operator runs them (subprocesses) against the real cluster.

Every test ingests under its own id prefix and deletes what it ingested, so the shared cluster is
left with the items it had (checked through Info's total).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import REPO, SHARED_DATA

from orbithash_cli.journal import read as read_journal
from orbithash_cli.mosaic import PLACEHOLDER, TILE_BACKGROUND, Geometry, picture
from orbithash_client import OrbitHashClient
from orbithash_local.cluster import Cluster
from orbithash_local.processes import free_port

CLI = [sys.executable, "-m", "orbithash_local.cli"]
CLASSES = ("agricultural", "beach", "forest", "harbor")
PER_CLASS = 5


@dataclass(frozen=True)
class Scenes:
    root: Path
    sidecar: Path
    rows: dict[str, dict[str, str]]  # path relative to root → its sidecar row
    run: str                         # the attribute every scene of this set carries (run=<run>)


def make_scenes(folder: Path, zip_path: Path = SHARED_DATA / "ucmerced.zip") -> Scenes:
    """20 UC Merced images in ImageFolder layout and a CSV sidecar: sensors, times and places differ."""
    run = uuid.uuid4().hex[:8]
    rows: dict[str, dict[str, str]] = {}
    with zipfile.ZipFile(zip_path) as archive:
        names = sorted(n for n in archive.namelist() if n.lower().endswith((".jpg", ".tif")))
        for c, cls in enumerate(CLASSES):
            members = [n for n in names if n.split("/")[-2] == cls][:PER_CLASS]
            assert len(members) == PER_CLASS, f"{cls} not found in {zip_path}"
            for i, member in enumerate(members):
                rel = f"{cls}/{Path(member).name}"
                (folder / cls).mkdir(parents=True, exist_ok=True)
                (folder / rel).write_bytes(archive.read(member))
                west = -120.0 if i % 2 == 0 else 10.0  # even: California, odd: the Alps
                rows[rel] = {"path": rel, "acquired": f"{2023 + c % 2}-0{i + 1}-15T10:00:00Z",
                             "lon": str(west + 0.5 + i * 0.01), "lat": "35.5" if i % 2 == 0 else "46.5",
                             "sensor": "MSI" if c < 2 else "OLI", "platform": f"sat-{c}", "attr:run": run}
    sidecar = folder.parent / f"{folder.name}.csv"
    columns = ["path", "acquired", "lon", "lat", "sensor", "platform", "attr:run"]
    lines = [",".join(columns), *(",".join(r[k] for k in columns) for r in rows.values())]
    sidecar.write_text("\n".join(lines) + "\n")
    return Scenes(folder, sidecar, rows, run)


def cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)


def last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def address(cluster: Cluster) -> str:
    assert cluster.gateway is not None
    return cluster.gateway.address


@pytest.fixture(scope="module")
def client(address: str) -> Iterator[OrbitHashClient]:
    with OrbitHashClient(address, timeout=60) as c:
        yield c


def _cleanup(client: OrbitHashClient, ids: list[str], total_before: int) -> None:
    client.delete(ids)
    assert client.get(ids).items == ()
    assert client.info().total == total_before, "the cluster must be left with the items it had"


def test_a_killed_ingest_resumes_and_stores_every_image_exactly_once(client: OrbitHashClient, address: str,
                                                                      tmp_path: Path) -> None:
    scenes = make_scenes(tmp_path / "scenes")
    prefix = f"cli-kill-{scenes.run}/"
    ids = sorted(prefix + rel for rel in scenes.rows)
    before = client.info().total
    journal = tmp_path / "journal.jsonl"
    argv = ["ingest", str(scenes.root), "--gateway", address, "--metadata", str(scenes.sidecar), "--id-prefix",
            prefix, "--labels-from-folders", "--journal", str(journal), "--batch", "1", "--streams", "1", "--json"]
    try:
        process = subprocess.Popen([*CLI, *argv], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   start_new_session=True)
        deadline = time.monotonic() + 240
        while True:  # SIGKILL it as soon as the journal holds some acknowledged ids
            done = read_journal(journal)[0] if journal.exists() else set()
            if len(done) >= 3 or process.poll() is not None or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        _, err = process.communicate(timeout=60)
        assert process.returncode == -signal.SIGKILL, f"the ingest ended before it could be killed: {err[-2000:]}"
        journaled = read_journal(journal)[0]
        assert 3 <= len(journaled) < len(ids) and journaled <= set(ids)

        again = cli(*argv)
        assert again.returncode == 0, again.stderr[-3000:]
        summary = last_json(again.stdout)
        assert summary["skipped_journaled"] == len(journaled)
        assert summary["stored"] == len(ids) - len(journaled) and summary["failed"] == 0
        assert f"skipping {len(journaled)} image(s) already acknowledged" in again.stderr

        assert client.info().total == before + len(ids)  # every image once: no duplicate, none missing
        got = client.get(ids)
        assert got.missing == () and [i.id for i in got.items] == ids
        classes = client.info().model.class_names
        for item in got.items:
            rel = item.id.removeprefix(prefix)
            row = scenes.rows[rel]
            assert classes[item.label] == rel.split("/")[0]  # the folder's class
            assert item.metadata.sensor == row["sensor"] and item.metadata.attributes == {"run": scenes.run}
            assert item.metadata.acquired.isoformat().replace("+00:00", "Z") == row["acquired"]
            assert item.metadata.center.lon == pytest.approx(float(row["lon"]))
        assert read_journal(journal)[0] == set(ids)
        third = cli(*argv)  # everything is journaled now: nothing is sent
        assert third.returncode == 0 and last_json(third.stdout)["skipped_journaled"] == len(ids)
        assert client.info().total == before + len(ids)
    finally:
        _cleanup(client, ids, before)


@pytest.fixture(scope="module")
def ingested(client: OrbitHashClient, address: str, tmp_path_factory: pytest.TempPathFactory
             ) -> Iterator[tuple[Scenes, str]]:
    """The 20 scenes ingested through the CLI (default journal beside the folder), deleted afterwards."""
    scenes = make_scenes(tmp_path_factory.mktemp("ingested") / "scenes")
    prefix = f"cli-{scenes.run}/"
    before = client.info().total
    ids = sorted(prefix + rel for rel in scenes.rows)
    try:
        result = cli("ingest", str(scenes.root), "--gateway", address, "--metadata", str(scenes.sidecar),
                     "--id-prefix", prefix, "--labels-from-folders", "--json", "--quiet")
        assert result.returncode == 0, result.stderr[-3000:]
        assert last_json(result.stdout)["stored"] == len(ids)
        assert list((scenes.root.parent / ".orbithash-journal").glob("scenes-*.jsonl"))
        yield scenes, prefix
    finally:
        _cleanup(client, ids, before)


def _search(address: str, *args: str) -> dict:
    result = cli("search", "--gateway", address, "--json", *args)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_filters_through_the_whole_cluster(ingested: tuple[Scenes, str], address: str) -> None:
    scenes, prefix = ingested
    query = scenes.root / next(iter(scenes.rows))
    mine = ("--attr", f"run={scenes.run}", "-k", "100")

    def hits(*args: str) -> set[str]:
        document = _search(address, str(query), *mine, *args)
        return {h["id"].removeprefix(prefix) for h in document["results"][0]["hits"]}

    def expect(keep) -> set[str]:
        return {rel for rel, row in scenes.rows.items() if keep(row)}

    assert hits() == set(scenes.rows)
    assert hits("--sensor", "MSI") == expect(lambda r: r["sensor"] == "MSI")
    assert hits("--sensor", "MSI", "--sensor", "OLI") == set(scenes.rows)
    assert hits("--from", "2024-01-01", "--until", "2024-04-01") == expect(
        lambda r: "2024-01-01" <= r["acquired"] < "2024-04-01")
    assert hits("--within", "-125,30,-110,40") == expect(lambda r: float(r["lon"]) < 0)  # California only
    assert hits("--bbox", "9,45,12,48", "--sensor", "OLI") == expect(
        lambda r: float(r["lon"]) > 0 and r["sensor"] == "OLI")
    assert hits("--label", "beach") == expect(lambda r: r["path"].startswith("beach/"))
    assert hits("--attr", "run=someone-else") == set()
    document = _search(address, str(query), *mine, "-k", "3")
    first = document["results"][0]
    # the query's own scene comes first: distance 0, and the smallest id of this set wins any tie
    assert first["hits"][0]["id"] == prefix + next(iter(scenes.rows)) and first["hits"][0]["distance"] == 0
    assert first["predicted"]["class_name"] and 0 < first["predicted"]["probability"] <= 1
    assert first["hits"][0]["sensor"] == "MSI" and first["hits"][0]["acquired"].endswith("Z")


def test_the_table_names_class_time_and_place(ingested: tuple[Scenes, str], address: str) -> None:
    scenes, prefix = ingested
    rel = next(iter(scenes.rows))
    result = cli("search", "--gateway", address, "--id", prefix + rel, "--attr", f"run={scenes.run}", "-k", "2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"query {prefix + rel}"
    assert lines[1].split() == ["rank", "id", "distance", "class", "acquired", "place"]
    row = lines[3].split()
    assert row[:4] == ["1", prefix + rel, "0", rel.split("/")[0]]
    assert row[4] == scenes.rows[rel]["acquired"] and row[5].endswith("N") and row[6].endswith("W")


def test_the_mosaic_shows_each_query_beside_its_hits(ingested: tuple[Scenes, str], address: str,
                                                     tmp_path: Path) -> None:
    scenes, prefix = ingested
    rels = list(scenes.rows)
    queries = [scenes.root / rels[0], scenes.root / rels[-1]]
    out = tmp_path / "mosaic.png"
    document = _search(address, *map(str, queries), "--id", prefix + rels[7], "-k", "4", "--attr",
                       f"run={scenes.run}", "--mosaic", str(out), "--images-root", str(scenes.root),
                       "--id-prefix", prefix)
    g = Geometry()
    image = Image.open(out).convert("RGB")
    assert image.size == g.size(3, 5)  # three queries, each beside its 4 hits

    def tile(row: int, column: int) -> Image.Image:
        return image.crop(g.picture_box(row, column))

    def matches(drawn: Image.Image, data: bytes) -> bool:
        """The tile shows this image (scaled to fit it, centred): every pixel within a small tolerance."""
        scaled = picture(data, g.tile)
        assert scaled is not None and g.tile in scaled.size
        expected = Image.new("RGB", (g.tile, g.tile), TILE_BACKGROUND)
        expected.paste(scaled, ((g.tile - scaled.width) // 2, (g.tile - scaled.height) // 2))
        diffs = [abs(a - b) for p, q in zip(drawn.get_flattened_data(), expected.get_flattened_data(), strict=True)
                 for a, b in zip(p, q, strict=True)]
        return max(diffs) <= 2

    for row, result in enumerate(document["results"]):
        query_bytes = queries[row].read_bytes() if row < 2 else (scenes.root / rels[7]).read_bytes()
        assert matches(tile(row, 0), query_bytes)
        assert len(result["hits"]) == 4
        for column, hit in enumerate(result["hits"], 1):
            original = (scenes.root / hit["id"].removeprefix(prefix)).read_bytes()
            assert matches(tile(row, column), original), (row, column, hit["id"])
            assert tile(row, column).getpixel((2, 2)) != PLACEHOLDER
    assert prefix + rels[7] in {h["id"] for h in result["hits"] if h["distance"] == 0}  # nearest: itself

    # without originals the tiles are the thumbnails the launcher's cluster stores (128 px JPEGs)
    small = tmp_path / "thumbnails.png"
    document = _search(address, str(queries[0]), "-k", "2", "--attr", f"run={scenes.run}", "--mosaic", str(small))
    drawn = Image.open(small).convert("RGB")
    for column, hit in enumerate(document["results"][0]["hits"], 1):
        shown = drawn.crop(g.picture_box(0, column))
        assert shown.getpixel((2, 2)) != PLACEHOLDER
        original = picture((scenes.root / hit["id"].removeprefix(prefix)).read_bytes(), g.tile)
        assert original is not None
        error = np.abs(np.asarray(shown, np.float64) - np.asarray(original.resize(shown.size), np.float64)).mean()
        assert error < 25, (column, error)  # the same scene, through a 224 px model input and a JPEG


def test_a_bad_image_is_named_and_skipped_the_rest_stored(client: OrbitHashClient, address: str,
                                                           tmp_path: Path) -> None:
    scenes = make_scenes(tmp_path / "scenes")
    broken = scenes.root / "beach" / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(2000))  # looks like a JPEG, does not decode
    prefix = f"cli-bad-{scenes.run}/"
    ids = [prefix + rel for rel in scenes.rows]
    before = client.info().total
    try:
        result = cli("ingest", str(scenes.root), "--gateway", address, "--id-prefix", prefix, "--json", "--quiet",
                     "--batch", "8")
        assert result.returncode == 1, result.stderr[-3000:]
        summary = last_json(result.stdout)
        assert summary["stored"] == len(ids) and summary["failed"] == 1
        assert summary["problems"][0]["file"] == str(broken)
        assert "refused by the gateway" in summary["problems"][0]["reason"]
        assert client.info().total == before + len(ids)
        assert client.get(prefix + "beach/broken.jpg").missing == (prefix + "beach/broken.jpg",)
    finally:
        _cleanup(client, ids, before)


def test_get_delete_and_info_as_an_operator_uses_them(client: OrbitHashClient, address: str, tmp_path: Path) -> None:
    scenes = make_scenes(tmp_path / "scenes")
    prefix = f"cli-admin-{scenes.run}/"
    rels = list(scenes.rows)[:2]
    before = client.info().total
    ids = [prefix + rel for rel in rels]
    try:
        assert cli("ingest", *(str(scenes.root / r) for r in rels), "--gateway", address, "--id-prefix",
                   prefix + "x/", "--quiet").returncode == 0
        ids = [prefix + "x/" + Path(r).name for r in rels]
        got = cli("get", *ids, "nope", "--gateway", address, "--json")
        assert got.returncode == 1
        document = json.loads(got.stdout)
        assert [i["id"] for i in document["items"]] == ids and document["missing"] == ["nope"]
        info = cli("info", "--gateway", address, "--json")
        assert info.returncode == 0
        state = json.loads(info.stdout)
        assert state["total"] == before + 2 and state["healthy"] and len(state["shards"]) == 2
        assert cli("delete", *ids, "--gateway", address).returncode == 2  # no terminal, no --yes: refused
        assert client.info().total == before + 2
        deleted = cli("delete", *ids, "--gateway", address, "--yes", "--json")
        assert deleted.returncode == 0 and json.loads(deleted.stdout) == {"deleted": 2, "missing": []}
    finally:
        _cleanup(client, ids, before)


def test_an_unreachable_gateway_exits_3() -> None:
    address = f"127.0.0.1:{free_port()}"
    for argv in (["info"], ["get", "a"], ["search", "--id", "a"]):
        result = cli(*argv, "--gateway", address, timeout=120)
        assert result.returncode == 3, result.stderr
        assert "cannot be reached" in result.stderr
