"""The on-disk cache of what training derives from images (backbone features, decoded pixels).

An entry is named by a hash of every image it was derived from (id, label, bytes) plus how it
was derived, so a changed dataset, seed, subset or split never reads stale arrays; entries are
written atomically, so an interrupted extraction never leaves a torn one.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

from orbithash.data import ImageRecord

CACHE_DIR_ENV = "ORBITHASH_CACHE_DIR"


def default_cache_dir() -> Path:
    """``$ORBITHASH_CACHE_DIR`` or ``cache/`` at the repository root (git ignores it)."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "cache"


def records_key(how: object, *parts: Sequence[ImageRecord]) -> str:
    """A short hash of ``repr(how)`` and every record of every part (id, label, bytes), in order."""
    h = hashlib.sha256(repr(how).encode())
    for part in parts:
        h.update(b"|part|")
        for r in part:
            h.update(f"{r.id}:{r.label}:{len(r.data)}:".encode())
            h.update(hashlib.sha256(r.data).digest())
    return h.hexdigest()[:16]
