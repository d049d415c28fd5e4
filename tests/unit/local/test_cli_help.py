"""The `orbithash` command as a newcomer meets it: every option says what it does, every
`orbithash <command> --flag` the README and docs/ show exists in the real parser, and the first
mistake (`orbithash up` away from the model repository) says what to do."""

from __future__ import annotations

import argparse
import re
import shlex

import pytest
from support import REPO

from orbithash_local.cli import build_parser, main

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
_FENCE = re.compile(r"```([a-z]*)\n(.*?)```", re.S)
_INLINE = re.compile(r"`(orbithash [^`]+)`")
_INVOCATION = re.compile(r"(?:^|[\s;&|(])(?:\S*/)?orbithash(?![\w.-])((?:\s+[^;&|#\n]*)?)")


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def _options(parser: argparse.ArgumentParser) -> set[str]:
    return {flag for action in parser._actions for flag in action.option_strings}


def test_every_option_of_every_command_has_help() -> None:
    parser = build_parser()
    missing = [f"orbithash {'' if p is parser else name + ' '}{action.option_strings[0]}"
               for name, p in [("", parser), *_subcommands(parser).items()]
               for action in p._actions
               if action.option_strings and action.help is None]
    assert missing == []


def test_every_command_says_what_it_does_atop_its_own_help() -> None:
    for name, command in _subcommands(build_parser()).items():
        assert command.description, f"`orbithash {name} --help` starts with no description"
    from orbithash_cli.commands import build_parser as operator_parser

    assert all(c.description for c in _subcommands(operator_parser()).values())


def test_the_top_help_names_every_command() -> None:
    parser = build_parser()
    assert all(name in parser.description for name in _subcommands(parser)) and "``" not in parser.description


def _mentions() -> list[tuple[str, str]]:
    """(file, the words after `orbithash`) for each invocation in a code block or inline code."""
    found = []
    for doc in DOCS:
        text = doc.read_text()
        # Shell blocks are commands; in a block of output only the lines after a `$ ` prompt are.
        snippets = [(lang in ("bash", "sh", "console"), body) for lang, body in _FENCE.findall(text)]
        for is_shell, snippet in [*snippets, *((True, s) for s in _INLINE.findall(text))]:
            for line in snippet.splitlines():
                if not is_shell and not line.startswith("$ "):
                    continue
                found += [(doc.name, m.group(1).strip()) for m in _INVOCATION.finditer(line)]
    return found


def test_the_docs_show_invocations() -> None:
    mentions = _mentions()
    assert len(mentions) > 30 and {"up", "ingest", "search", "token"} <= {m.split()[0] for _, m in mentions if m}


@pytest.mark.parametrize(("doc", "words"), _mentions())
def test_every_documented_flag_exists(doc: str, words: str) -> None:
    parser = build_parser()
    try:
        tokens = shlex.split(words.replace("…", "x"))
    except ValueError:  # an unbalanced quote in prose: its words are still checked one by one
        tokens = words.split()
    commands = _subcommands(parser)
    if not tokens or tokens[0] not in commands:
        assert not tokens or tokens[0].startswith("-") or tokens[0] in {"command", "CLI"} or tokens[0] in commands, (
            f"{doc}: `orbithash {words}`: no command {tokens[0]!r}")
        return
    known = _options(commands[tokens[0]])
    unknown = [t.split("=")[0] for t in (t.strip("[]") for t in tokens[1:]) if t.startswith("-") and len(t) > 1
               and not re.fullmatch(r"-[\d.,-]+", t) and t.split("=")[0] not in known]
    assert unknown == [], f"{doc}: `orbithash {words}`: {tokens[0]} has no {unknown}"


def test_up_without_an_exported_model_says_where_it_looked_and_what_to_do(tmp_path, capsys) -> None:
    """It ended in a traceback (ModelFactsError) when run outside the repository without --model-repository."""
    assert main(["up", "--model-repository", str(tmp_path / "none"), "--work-dir", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(tmp_path / "none") in err
    assert "--model-repository" in err and "orbithash train" in err


def test_token_create_without_a_secure_cluster_here_says_so(tmp_path, capsys, monkeypatch) -> None:
    """It ended in a FileNotFoundError traceback (runs/cluster/secrets/ does not exist without `up --tls`)."""
    monkeypatch.chdir(tmp_path)
    assert main(["token", "create", "--name", "station-a"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "orbithash up --tls" in err and "--file" in err
    assert not (tmp_path / "runs").exists()
    assert main(["token", "create", "--name", "a", "--file", str(tmp_path / "no" / "tokens.json")]) == 2
    assert main(["token", "create", "--name", "a", "--file", str(tmp_path / "tokens.json")]) == 0  # a new file
