"""Plain-text tables for a terminal: one header row, columns padded to their widest cell.

Ids and file names come from outside (an image's name, a sidecar, another station's ingest): every
one shown to a person goes through :func:`printable`, so that a tab, a carriage return, an escape
sequence or a right-to-left override cannot rewrite the terminal or misalign the table. ``--json``
output keeps them exact instead.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

_MAX_CELL = 60
_ESCAPES = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def printable(value: object) -> str:
    """``value`` as text with every control, format or unassigned character (Unicode category C*)
    written as a visible escape (``\\x1b``, ``\\t``, ``\\u202e``, ``\\udcff`` for an undecodable byte)."""
    text = "" if value is None else str(value)
    if text.isprintable():
        return text
    return "".join(_escape(c) if unicodedata.category(c).startswith("C") else c for c in text)


def _escape(char: str) -> str:
    if char in _ESCAPES:
        return _ESCAPES[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def display_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters two, combining marks none."""
    return sum(0 if unicodedata.combining(c) else 2 if unicodedata.east_asian_width(c) in "WF" else 1 for c in text)


def _cell(value: object) -> str:
    text = printable(value)
    return text if len(text) <= _MAX_CELL else text[:_MAX_CELL - 1] + "…"


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * (width - display_width(text))
    return fill + text if right else text + fill


def format_table(headers: Sequence[str], rows: Sequence[Sequence[object]], right: Sequence[str] = ()) -> str:
    """Columns named in ``right`` (numbers) are right-aligned."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([display_width(h), *(display_width(r[i]) for r in cells)]) for i, h in enumerate(headers)]

    def line(values: Sequence[str]) -> str:
        parts = [_pad(v, w, h in right) for v, w, h in zip(values, widths, headers, strict=True)]
        return "  ".join(parts).rstrip()

    return "\n".join([line(list(headers)), line(["-" * w for w in widths]), *(line(r) for r in cells)])
