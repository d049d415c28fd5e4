"""Secrets on disk (keys, passwords, tokens, token hashes): readable by their owner only from the
first byte, and replaced at once, so a reader (the gateway re-reading its token file, a service its
certificate) never sees half of one."""

from __future__ import annotations

import os
from pathlib import Path


def write_private(path: Path, data: bytes | str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data.encode() if isinstance(data, str) else data)
    os.replace(tmp, path)
