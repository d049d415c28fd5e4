"""What reaches the terminal: ids with control characters are shown escaped; columns line up by width."""

from __future__ import annotations

import json
import unicodedata

import pytest
from unit.cli.cli_support import FakeClient

from orbithash_cli.table import display_width, format_table, printable
from orbithash_client import Item

HOSTILE = ["tab\there", "cr\rEVIL", "\u202eevil.gpj", "esc\x1b[2Jclear", "nl\nx", "bell\x07"]


def _controls(text: str) -> list[str]:
    return [c for c in text if c != "\n" and unicodedata.category(c).startswith("C")]


def test_printable_escapes_every_control_and_format_character() -> None:
    assert printable("tab\there") == "tab\\there" and printable("esc\x1b[2J") == "esc\\x1b[2J"
    assert printable("\u202eevil") == "\\u202eevil" and printable("nl\ncr\r") == "nl\\ncr\\r"
    assert printable("bad-\udcff.png") == "bad-\\udcff.png"  # a file name that was not UTF-8
    assert printable("东京港 café") == "东京港 café"
    assert all(not _controls(printable(h)) for h in HOSTILE)


def test_a_table_escapes_ids_and_pads_by_display_width() -> None:
    rows = [["plain", 0], *([h, 1] for h in HOSTILE), ["东京港", 1]]
    table = format_table(["id", "shard"], rows, right=("shard",))
    assert not _controls(table)
    lines = table.splitlines()
    assert len(lines) == 2 + len(rows)
    assert len({display_width(line) for line in lines}) == 1  # every line as wide: the columns line up


def test_get_delete_and_search_escape_ids_but_json_keeps_them(client: FakeClient, run, capsys,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    evil = "esc\x1b[2Jclear"
    client.stored = {evil: Item(evil, b"", 0)}
    assert run("get", evil, "gone\x1b]0;title\x07") == 1
    out, err = capsys.readouterr()
    assert not _controls(out) and not _controls(err) and "gone\\x1b]0;title\\x07" in err
    assert run("get", evil, "--json") == 0
    assert json.loads(capsys.readouterr().out)["items"][0]["id"] == evil  # --json stays exact
    assert run("search", "--id", evil) == 0
    out = capsys.readouterr().out
    assert not _controls(out) and "query esc\\x1b[2Jclear" in out
    prompts = []
    monkeypatch.setattr("sys.stdin.isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: prompts.append(prompt) or "y")
    assert run("delete", evil, "gone\x1b[1m") == 1
    out, err = capsys.readouterr()
    assert not _controls(prompts[0]) and not _controls(out) and "gone\\x1b[1m" in out


def test_an_error_naming_a_hostile_file_is_shown_escaped(tmp_path, client: FakeClient, run, capsys) -> None:
    import os

    missing = tmp_path / os.fsdecode(b"ids-\xff\x1b[2J.txt")
    assert run("get", "--ids-from", str(missing)) == 2
    err = capsys.readouterr().err
    assert "ids-\\udcff\\x1b[2J.txt" in err and not _controls(err)
