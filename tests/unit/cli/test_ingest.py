"""`orbithash ingest` against a fake client: ids, labels, metadata, bad files, resume, exit codes."""

from __future__ import annotations

import json
import signal
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from unit.cli.cli_support import FakeClient, image_bytes, write_image

from orbithash_cli.journal import JOURNAL_DIR
from orbithash_client import BoundingBox, GeoPoint


def _summary(capsys: pytest.CaptureFixture) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _tree(root: Path, n: int = 5) -> list[str]:
    names = []
    for i in range(n):
        cls = ("beach", "forest")[i % 2]
        write_image(root / cls / f"{cls}{i:02d}.png", (i * 40, 100, 100))
        names.append(f"{cls}/{cls}{i:02d}.png")
    return sorted(names)


def _sent_ids(client: FakeClient) -> list[str]:
    return [i for name, ids in client.calls if name == "ingest" for i in ids]


def test_a_folder_is_stored_with_sidecar_metadata_and_a_rerun_skips_it(tmp_path: Path, client: FakeClient, run,
                                                                        capsys) -> None:
    root = tmp_path / "scenes"
    names = _tree(root)
    sidecar = tmp_path / "meta.csv"
    sidecar.write_text("path,acquired,lon,lat,sensor,attr:orbit\n"
                       f"{names[0]},2024-05-01T10:00:00Z,10.5,45.5,MSI,77\n")
    argv = ["ingest", str(root), "--metadata", str(sidecar), "--batch", "2", "--streams", "2", "--quiet", "--json"]
    assert run(*argv) == 0
    summary = _summary(capsys)
    assert summary["stored"] == 5 and summary["skipped_journaled"] == 0 and summary["failed"] == 0
    assert sorted(client.stored) == names
    first = client.stored[names[0]].metadata
    assert first.acquired == datetime(2024, 5, 1, 10, tzinfo=UTC) and first.center == GeoPoint(10.5, 45.5)
    assert first.sensor == "MSI" and first.attributes == {"orbit": "77"}
    assert client.stored[names[1]].metadata is None and client.stored[names[1]].label is None
    assert client.stored[names[0]].image == (root / names[0]).read_bytes()
    assert sorted(_sent_ids(client)) == names  # each once
    journal = next((tmp_path / JOURNAL_DIR).glob("scenes-*.jsonl"))
    assert summary["journal"] == str(journal)

    client.calls.clear()
    assert run(*argv) == 0
    again = _summary(capsys)
    assert again["skipped_journaled"] == 5 and again["stored"] == 0 and _sent_ids(client) == []


def test_ids_of_zips_globs_and_a_prefix(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    archive = tmp_path / "ucm.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("Images/farm/f01.jpg", image_bytes(kind="JPEG"))
    write_image(tmp_path / "d" / "x" / "a.png")
    assert run("ingest", str(archive), str(tmp_path / "d" / "*" / "*.png"), "--id-prefix", "gs1/", "--quiet") == 0
    assert sorted(client.stored) == ["gs1/Images/farm/f01.jpg", "gs1/x/a.png"]


def test_labels_from_folders_use_the_served_class_names(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    root = tmp_path / "scenes"
    _tree(root, 2)
    write_image(root / "volcano" / "v.png")
    write_image(root / "loose.png")
    assert run("ingest", str(root), "--labels-from-folders", "--quiet", "--json") == 1
    summary = _summary(capsys)
    assert {i: item.label for i, item in client.stored.items()} == {"beach/beach00.png": 1, "forest/forest01.png": 2}
    reasons = {Path(p["file"]).name: p["reason"] for p in summary["problems"]}
    assert "class folder 'volcano' is not a class of the served model" in reasons["v.png"]
    assert "not inside a class folder" in reasons["loose.png"]


def test_bad_files_are_reported_by_name_and_the_rest_is_stored(tmp_path: Path, client: FakeClient, run,
                                                                capsys) -> None:
    root = tmp_path / "scenes"
    names = _tree(root, 6)
    (root / "beach" / "broken.png").write_bytes(b"\x89PNG but not really")  # not a PNG signature
    (root / "beach" / "empty.png").write_bytes(b"")
    client.refuse = {names[3]}  # the gateway cannot decode this one
    assert run("ingest", str(root), "--batch", "8", "--streams", "1", "--quiet", "--json") == 1
    summary = _summary(capsys)
    assert sorted(client.stored) == sorted(set(names) - {names[3]})
    reasons = {Path(p["file"]).name: p["reason"] for p in summary["problems"]}
    assert reasons.keys() == {"broken.png", "empty.png", Path(names[3]).name}
    assert "not a JPEG, PNG or TIFF" in reasons["broken.png"] and "is empty" in reasons["empty.png"]
    assert "refused by the gateway: item" in reasons[Path(names[3]).name]
    assert summary["stored"] == 5 and summary["failed"] == 3 and summary["exit_code"] == 1
    batches = [ids for name, ids in client.calls if name == "ingest"]
    assert len(batches[0]) == 6 and [names[3]] in batches  # the refused batch was halved down to the bad image

    client.calls.clear()
    assert run("ingest", str(root), "--quiet", "--json") == 1  # the rerun sends only what failed
    assert sorted(_sent_ids(client)) == [names[3]]


def test_on_error_fail(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    root = tmp_path / "scenes"
    names = _tree(root, 4)
    write_image(root / "volcano" / "v.png")
    assert run("ingest", str(root), "--labels-from-folders", "--on-error", "fail", "--quiet") == 1
    assert client.stored == {} and "nothing was sent" in capsys.readouterr().out  # known before sending
    client.refuse = {names[0]}
    (root / "volcano" / "v.png").unlink()
    assert run("ingest", str(root), "--on-error", "fail", "--batch", "1", "--streams", "1", "--quiet") == 1
    out = capsys.readouterr().out
    assert "stopped at the first bad file" in out and names[0] in out
    assert names[0] not in client.stored


def test_usage_errors_exit_2_and_send_nothing(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    assert run("ingest", str(tmp_path / "missing")) == 2
    (tmp_path / "bad.csv").write_text("id,acquired\na,not-a-time\n")
    write_image(tmp_path / "d" / "a.png")
    assert run("ingest", str(tmp_path / "d"), "--metadata", str(tmp_path / "bad.csv")) == 2
    assert "line 2" in capsys.readouterr().err
    assert run("ingest", str(tmp_path / "d"), "--streams", "0") == 2
    with pytest.raises(SystemExit) as exited:
        run("ingest")  # argparse: no PATH
    assert exited.value.code == 2
    assert client.calls == []


def test_paths_holding_no_image_are_a_usage_error_that_says_why(tmp_path: Path, client: FakeClient, run,
                                                                capsys) -> None:
    """A mistyped folder or glob, or zips walked past, used to end 'no images found' with exit 0 (and,
    with --json, no summary): a script could not tell it from success."""
    (tmp_path / "empty").mkdir()
    assert run("ingest", str(tmp_path / "empty"), "--json") == 2
    err = capsys.readouterr().err
    assert "no JPEG, PNG or TIFF image" in err and str(tmp_path / "empty") in err
    drop = tmp_path / "drop"
    drop.mkdir()
    with zipfile.ZipFile(drop / "pass-1.zip", "w") as z:
        z.writestr("a.jpg", image_bytes(kind="JPEG"))
    (drop / "notes.txt").write_text("x")
    assert run("ingest", str(drop)) == 2
    err = capsys.readouterr().err
    assert "2 other file(s) left alone" in err and "1 zip file(s)" in err and "drop/*.zip" in err
    assert run("ingest", str(tmp_path / "nothing-*.tif")) == 2
    assert "nothing-*.tif" in capsys.readouterr().err
    assert client.calls == []


def test_zips_walked_past_are_named_beside_the_images_sent(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    _tree(tmp_path / "scenes", 1)
    with zipfile.ZipFile(tmp_path / "scenes" / "more.zip", "w") as z:
        z.writestr("a.jpg", image_bytes(kind="JPEG"))
    assert run("ingest", str(tmp_path / "scenes"), "--quiet") == 0
    assert "1 zip file(s)" in capsys.readouterr().err and len(client.stored) == 1


def test_an_unreachable_gateway_exits_3_and_the_rerun_resumes(tmp_path: Path, client: FakeClient, run,
                                                               capsys) -> None:
    root = tmp_path / "scenes"
    names = _tree(root, 6)
    client.unreachable = True
    assert run("ingest", str(root), "--quiet") == 3
    assert "cannot be reached" in capsys.readouterr().err
    client.unreachable, client.fail_after = False, 1  # the network goes away after the first batch
    assert run("ingest", str(root), "--batch", "2", "--streams", "1", "--retry-s", "0", "--quiet", "--json") == 3
    summary = _summary(capsys)
    assert summary["stored"] == 2 and summary["not_sent"] == 4 and "stopped answering" in summary["stopped"]
    assert sorted(client.stored) == names[:2]
    client.fail_after = None
    client.calls.clear()
    assert run("ingest", str(root), "--batch", "2", "--quiet", "--json") == 0
    summary = _summary(capsys)
    assert summary["skipped_journaled"] == 2 and summary["stored"] == 4
    assert sorted(_sent_ids(client)) == names[2:]  # nothing acknowledged is sent twice


def test_a_short_outage_is_retried(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    root = tmp_path / "scenes"
    names = _tree(root, 2)
    client.fail_after = 0

    def heal(items, **kw):
        client.fail_after = None  # the gateway is back for the second attempt
        return original(items, **kw)

    original = FakeClient.ingest.__get__(client)
    attempts = iter([lambda items, **kw: original(items, **kw), heal])
    client.ingest = lambda items, **kw: next(attempts)(items, **kw)  # type: ignore[method-assign]
    assert run("ingest", str(root), "--batch", "2", "--quiet") == 0
    assert sorted(client.stored) == names and "retrying" in capsys.readouterr().err


def test_a_torn_journal_line_sends_only_that_id_again(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    root = tmp_path / "scenes"
    names = _tree(root, 3)
    journal = tmp_path / "j.jsonl"
    assert run("ingest", str(root), "--journal", str(journal), "--batch", "1", "--streams", "1", "--quiet") == 0
    data = journal.read_bytes()
    journal.write_bytes(data[:-4])  # the last id's line torn by a crash
    client.calls.clear()
    assert run("ingest", str(root), "--journal", str(journal), "--quiet", "--json") == 0
    out, err = capsys.readouterr()
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["skipped_journaled"] == 2 and len(_sent_ids(client)) == 1
    assert "cut off by a crash" in err and "skipping 2 image(s) already acknowledged" in err
    assert sorted(client.stored) == names


def test_exif_time_and_geotiff_place_merge_under_the_sidecar(tmp_path: Path, client: FakeClient, run,
                                                               capsys) -> None:
    from unit.cli.test_geotags import WGS84, geotiff

    root = tmp_path / "scenes"
    write_image(root / "cam.jpg", exif_time="2022:02:02 02:02:02")
    (root / "geo.tif").write_bytes(geotiff(WGS84))
    (root / "utm.tif").write_bytes(geotiff([1, 1, 0, 1, 3072, 0, 1, 32633], scale=(10, 10, 0)))
    sidecar = tmp_path / "meta.csv"
    sidecar.write_text("path,acquired,sensor\ncam.jpg,,CAM\ngeo.tif,2023-03-03T03:03:03Z,\n")
    assert run("ingest", str(root), "--metadata", str(sidecar), "--quiet", "--json") == 0
    summary = _summary(capsys)
    cam, geo = client.stored["cam.jpg"].metadata, client.stored["geo.tif"].metadata
    assert cam.acquired == datetime(2022, 2, 2, 2, 2, 2, tzinfo=UTC) and cam.sensor == "CAM"
    assert geo.acquired == datetime(2023, 3, 3, 3, 3, 3, tzinfo=UTC)
    assert tuple(geo.footprint) == pytest.approx(tuple(BoundingBox(10.0, 45.0, 11.0, 46.0)))
    assert client.stored["utm.tif"].metadata is None
    assert any("utm.tif" in n and "projected EPSG:32633" in n for n in summary["notes"])


def test_ctrl_c_stops_after_the_batches_in_flight(tmp_path: Path, client: FakeClient, run, capsys,
                                                  request: pytest.FixtureRequest) -> None:
    # A test run started in the background (nohup, `cmd &`) inherits SIGINT ignored; an operator's
    # Ctrl-C reaches the CLI with Python's handler, which is what this test is about.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    root = tmp_path / "scenes"
    names = _tree(root, 8)
    original = FakeClient.ingest.__get__(client)

    def interrupting(items, **kw):
        done = original(items, **kw)
        signal.raise_signal(signal.SIGINT)  # the operator presses Ctrl-C while this batch is acknowledged
        time.sleep(0.5)  # the main thread handles the signal before this batch returns, even on a busy machine
        return done

    client.ingest = interrupting  # type: ignore[method-assign]
    assert run("ingest", str(root), "--batch", "2", "--streams", "1", "--quiet", "--json") == 130
    summary = _summary(capsys)
    assert 2 <= summary["stored"] < 8 and summary["exit_code"] == 130
    client.ingest = original  # type: ignore[method-assign]
    client.calls.clear()
    assert run("ingest", str(root), "--quiet", "--json") == 0
    assert _summary(capsys)["skipped_journaled"] == summary["stored"]
    assert sorted(client.stored) == names


def test_batches_close_at_a_count_or_a_byte_budget(tmp_path: Path) -> None:
    from orbithash_cli.ingest import Planned, batches
    from orbithash_cli.sources import Source

    sizes = [10, 10, 50, 200, 10, 10, 10]
    items = []
    for i, size in enumerate(sizes):
        (tmp_path / f"{i}.png").write_bytes(b"x" * size)
        items.append(Planned(Source(f"{i}.png", str(tmp_path), path=tmp_path / f"{i}.png"), f"{i}.png", None, None))
    grouped = [[int(p.id.split(".")[0]) for p in b] for b in batches(items, count=3, size=100)]
    assert grouped == [[0, 1, 2], [3], [4, 5, 6]]  # 200 bytes go alone; 3 items at most
    assert [len(b) for b in batches(items, count=2, size=10_000)] == [2, 2, 2, 1]


def test_what_was_not_sent_is_counted_apart_from_what_failed(tmp_path: Path, client: FakeClient, run,
                                                              capsys) -> None:
    root = tmp_path / "scenes"
    _tree(root, 6)
    write_image(root / "loose.png")
    (root / "beach" / "empty.png").write_bytes(b"")
    client.fail_after = 1
    assert run("ingest", str(root), "--labels-from-folders", "--batch", "2", "--streams", "1", "--retry-s", "0",
               "--quiet", "--json") == 3
    summary = _summary(capsys)
    # 8 found: loose.png refused before sending, 7 sent for; empty.png fails while sending
    assert summary["found"] == 8 and summary["sent"] == 7 and summary["failed"] == 2
    assert summary["stored"] + summary["not_sent"] + 1 == 7


def test_an_ingest_the_gateway_denies_exits_2_without_rerun_advice(tmp_path: Path, client: FakeClient, run,
                                                                   capsys) -> None:
    import grpc

    from orbithash_client import PermissionDenied

    root = tmp_path / "scenes"
    _tree(root, 3)

    def deny(items, **kw):
        raise PermissionDenied("the role 'reader' may not call Ingest", grpc.StatusCode.PERMISSION_DENIED)

    client.ingest = deny  # type: ignore[method-assign]
    assert run("ingest", str(root), "--quiet", "--json") == 2
    out = capsys.readouterr().out
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["exit_code"] == 2 and "PERMISSION_DENIED" in summary["stopped"]
    assert "rerun the same command" not in out


def test_a_batch_past_its_deadline_is_reported_as_such_not_retried_as_an_outage(tmp_path: Path, client: FakeClient,
                                                                                run, capsys) -> None:
    import grpc

    from orbithash_client import DeadlineExceeded

    root = tmp_path / "scenes"
    _tree(root, 2)
    attempts = []

    def slow(items, **kw):
        attempts.append(kw.get("timeout"))
        raise DeadlineExceeded("Deadline Exceeded", grpc.StatusCode.DEADLINE_EXCEEDED)

    client.ingest = slow  # type: ignore[method-assign]
    started = time.monotonic()
    assert run("ingest", str(root), "--timeout", "7", "--retry-s", "30", "--quiet", "--json") == 3
    summary = _summary(capsys)
    assert attempts == [7] and time.monotonic() - started < 5
    assert "7 s" in summary["stopped"] and "--timeout" in summary["stopped"]
    assert "stopped answering" not in summary["stopped"]


def test_the_same_command_against_another_cluster_is_refused_not_skipped(tmp_path: Path, client: FakeClient, run,
                                                                          capsys) -> None:
    root = tmp_path / "scenes"
    names = _tree(root, 2)
    assert run("ingest", str(root), "--quiet") == 0
    client.target, client.stored = "ground-b:50051", {}  # another cluster, empty
    client.calls.clear()
    assert run("ingest", str(root), "--quiet") == 2
    err = capsys.readouterr().err
    assert "'fake:1'" in err and "'ground-b:50051'" in err and "--restart" in err
    assert _sent_ids(client) == []
    assert run("ingest", str(root), "--quiet", "--restart") == 0
    assert sorted(client.stored) == names
