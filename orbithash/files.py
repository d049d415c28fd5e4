"""Writing files so that a reader sees the old content or the new, never a torn one."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, data: bytes | Callable[[Path], None], *, suffix: str = "") -> None:
    """Write ``data`` (bytes, or a writer called with a temporary path) beside ``path``, then rename.

    ``os.replace`` is atomic on POSIX, so a crash leaves the previous file whole. ``suffix`` ends
    the temporary name for writers that insist on one (``np.save`` appends ``.npy`` otherwise).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp{suffix}")
    if isinstance(data, bytes | bytearray):
        tmp.write_bytes(data)
    else:
        data(tmp)
    os.replace(tmp, path)
