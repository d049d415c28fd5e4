"""The ingest journal: acknowledged ids survive a crash; a torn last line is ignored and cut off."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from orbithash_cli import UsageError
from orbithash_cli.journal import JOURNAL_DIR, Journal, default_path, read

ABOUT = {"roots": ["/data/scenes"], "id_prefix": ""}


def test_recorded_ids_are_there_when_it_is_opened_again(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path, ABOUT) as journal:
        assert journal.done == set()
        journal.record(["a.png", "b/ü.png"])
        journal.record([])
        journal.record(['odd "id"\nwith a newline'])
    again = Journal.open(path, ABOUT)
    assert again.done == {"a.png", "b/ü.png", 'odd "id"\nwith a newline'}
    assert not again.torn
    assert again.header["format"] == "orbithash-ingest-journal" and again.header["roots"] == ["/data/scenes"]
    again.close()
    lines = path.read_text().splitlines()
    assert len(lines) == 4 and json.loads(lines[1]) == "a.png"  # the header, then one JSON string per id


def test_a_torn_last_line_is_ignored_cut_off_and_appending_goes_on(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path, ABOUT) as journal:
        journal.record(["a", "b"])
    with open(path, "ab") as f:
        f.write(b'"c-half-writ')  # the process died inside a write
    journal = Journal.open(path, ABOUT)
    assert journal.done == {"a", "b"} and journal.torn
    journal.record(["d"])
    journal.close()
    done, whole, torn, _ = read(path)
    assert done == {"a", "b", "d"} and not torn and whole == path.stat().st_size
    assert b"c-half" not in path.read_bytes()


def test_a_damaged_line_in_the_middle_costs_only_its_id(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path, ABOUT) as journal:
        journal.record(["a"])
    with open(path, "ab") as f:
        f.write(b'"b\n"c"\n')
    assert Journal.open(path, ABOUT).done == {"a", "c"}


def test_restart_forgets_and_a_torn_header_starts_afresh(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal.open(path, ABOUT) as journal:
        journal.record(["a"])
    assert Journal.open(path, ABOUT, restart=True).done == set()
    path.write_bytes(b'{"format": "orbithash-ingest-jour')
    fresh = Journal.open(path, ABOUT)
    assert fresh.done == set() and fresh.header["format"] == "orbithash-ingest-journal"


def test_something_else_is_not_taken_for_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text('{"hello": 1}\n"a"\n')
    with pytest.raises(UsageError, match="not an OrbitHash ingest journal"):
        Journal.open(path, ABOUT)
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(UsageError, match="--journal PATH"):
        Journal.open(blocked / "j.jsonl", ABOUT)  # its folder is a file


def test_the_default_journal_sits_beside_the_first_root_one_per_command(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    path = default_path([root], "")
    assert path.parent == tmp_path / JOURNAL_DIR and path.name.startswith("scenes-") and path.suffix == ".jsonl"
    assert default_path([root], "") == path
    assert default_path([root], "station-a/") != path
    assert default_path([root, tmp_path / "more"], "") != path


def test_a_journal_of_another_gateway_roots_or_prefix_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    mine = {**ABOUT, "gateway": "ground-a:50051"}
    with Journal.open(path, mine) as journal:
        journal.record(["a"])
    for key, other in (("gateway", "ground-b:50051"), ("roots", ["/data/other"]), ("id_prefix", "st-b/")):
        with pytest.raises(UsageError) as refused:
            Journal.open(path, {**mine, key: other})
        message = str(refused.value)
        for value in (mine[key], other):
            assert (value[0] if isinstance(value, list) else value) in message
        assert "--restart" in message
    assert Journal.open(path, mine).done == {"a"}
    assert Journal.open(path, {**mine, "gateway": "ground-b:50051"}, restart=True).done == set()


def test_a_file_without_a_newline_that_is_no_journal_is_not_overwritten(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("my field notes, no newline at the end")
    for restart in (False, True):
        with pytest.raises(UsageError, match="not an OrbitHash ingest journal"):
            Journal.open(notes, ABOUT, restart=restart)
    assert notes.read_text() == "my field notes, no newline at the end"
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert Journal.open(empty, ABOUT).done == set()  # an empty file becomes a journal
