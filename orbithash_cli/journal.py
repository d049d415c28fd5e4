"""The ingest journal: the ids the gateway acknowledged, so that a rerun sends only the rest.

One JSON value per line: a header object first (what was being ingested), then one JSON string
per acknowledged id. Ids are appended only after the gateway acknowledged them (it answers an
ingest once the shards' Redis fsynced the writes), each batch in one ``write`` followed by
``fsync``. A crash can tear only the last line; a torn or unreadable line is ignored when the
journal is read and cut off before the next append, so it never glues onto a later id. An id
acknowledged but not yet journaled when the process died is sent again by the rerun: ingest
replaces by id, so that creates no duplicate.

By default the journal lives in a ``.orbithash-journal/`` folder beside the first root, one file
per set of roots and id prefix (``<first-root-name>-<12 hex>.jsonl``): the same command resumes,
a different one starts its own journal. The header records the gateway, roots and id prefix; a
journal opened for another is refused (its ids say nothing about what that cluster holds), and a
file that is not a journal is never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from orbithash_cli import UsageError

JOURNAL_DIR = ".orbithash-journal"
FORMAT = "orbithash-ingest-journal"
VERSION = 1


def default_path(roots: list[Path], id_prefix: str) -> Path:
    """``<parent of the first root>/.orbithash-journal/<name>-<hash of roots and prefix>.jsonl``."""
    first = roots[0].resolve()
    key = json.dumps({"roots": [str(r.resolve()) for r in roots], "id_prefix": id_prefix}, sort_keys=True)
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", first.name or "root")
    return first.parent / JOURNAL_DIR / f"{name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.jsonl"


class Journal:
    """Open with :meth:`open`; :attr:`done` holds the acknowledged ids, :meth:`record` adds more."""

    def __init__(self, path: Path, header: dict, done: set[str], torn: bool) -> None:
        self.path = path
        self.header = header  # what the journal was started for (roots, id prefix, created)
        self.done = done
        self.torn = torn  # the last line was cut off by a crash (and has been removed)
        self._lock = threading.Lock()
        self._file = open(path, "ab")  # noqa: SIM115 - held open for appends until close()

    @classmethod
    def open(cls, path: Path, about: dict, restart: bool = False) -> Journal:
        """Read ``path`` (creating it and its folder when missing); ``restart`` empties it first.

        ``about`` says what this run is (gateway, roots, id prefix): a journal written for another
        is refused, since its ids say nothing about what that cluster holds. A file that is not a
        journal is never overwritten, even by ``restart``.
        """
        done: set[str] = set()
        keep, torn, header = 0, False, {}
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if path.exists() and not _may_be_journal(path):
                raise UsageError(f"{path} is not an OrbitHash ingest journal: it is left as it is; "
                                 "give another --journal PATH")
            if not restart and path.exists():
                done, keep, torn, header = read(path)
            if keep == 0:  # new, emptied (restart), or torn inside its header line
                header = {"format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                          **about}
                _replace(path, (json.dumps(header) + "\n").encode())
                return cls(path, header, set(), torn=False)
            if header.get("format") != FORMAT:
                raise UsageError(f"{path} is not an OrbitHash ingest journal")
            _check_same_run(path, header, about)
            if torn:
                with open(path, "r+b") as f:
                    f.truncate(keep)
                    f.flush()
                    os.fsync(f.fileno())
            return cls(path, header, done, torn)
        except OSError as exc:
            raise UsageError(f"cannot use the journal {path} ({exc.strerror or exc}); "
                             "choose another place with --journal PATH") from exc

    def record(self, ids: Iterable[str]) -> None:
        """Append acknowledged ids durably (one write, then fsync) before they count as done."""
        ids = list(ids)
        if not ids:
            return
        data = "".join(json.dumps(i, ensure_ascii=False) + "\n" for i in ids).encode("utf-8")
        with self._lock:
            self._file.write(data)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.done.update(ids)

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read(path: Path) -> tuple[set[str], int, bool, dict]:
    """(ids, bytes up to the last whole line, whether a torn line followed them, header)."""
    data = path.read_bytes()
    whole = data.rfind(b"\n") + 1  # bytes up to and including the last newline
    lines = data[:whole].split(b"\n")[:-1]
    header: dict = {}
    done: set[str] = set()
    for number, line in enumerate(lines):
        try:
            value = json.loads(line)
        except (json.JSONDecodeError, UnicodeDecodeError):
            continue  # a line damaged in the middle of the file: its id is simply sent again
        if number == 0 and isinstance(value, dict):
            header = value
        elif isinstance(value, str):
            done.add(value)
    return done, whole, whole < len(data), header


_HEADER_START = json.dumps({"format": FORMAT}).encode()[:-1]  # b'{"format": "orbithash-ingest-journal"'


def _may_be_journal(path: Path) -> bool:
    """Empty, or beginning like a journal's header (whole, or torn by a crash while it was written)."""
    with open(path, "rb") as f:
        start = f.read(len(_HEADER_START))
    return start == _HEADER_START or _HEADER_START.startswith(start)


def _check_same_run(path: Path, header: dict, about: dict) -> None:
    """Refuse a journal written for another gateway, other roots or another id prefix.

    A key the header lacks (a journal written before it was recorded) is not checked.
    """
    for key, ours in about.items():
        if key in header and header[key] != ours:
            raise UsageError(f"the journal {path} was written for {key} {_shown(header[key])}, this run's is "
                             f"{_shown(ours)}: add --restart to start it afresh (everything is sent again), "
                             "or give another --journal PATH")


def _shown(value: object) -> str:
    return ", ".join(map(str, value)) if isinstance(value, list) else repr(value)


def _replace(path: Path, data: bytes) -> None:
    """Write a new file whole (temporary file, fsync, rename, fsync of the folder)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
