"""numba's on-disk cache of the index kernels, valid for the package's sources as a whole.

numba checks a cached kernel only against the file that defines it, so a kernel of ``hamming``
that compiled ``scan``'s loops into itself is loaded unchanged after ``scan.py`` changes (a pull,
an upgrade in place): the shard would run the old code. A digest of every module of this package,
kept beside the cache, drops all of the package's cached kernels when any module changed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
STAMP_NAME = "orbithash-index-sources.sha256"


def sources_digest(package_dir: Path = PACKAGE_DIR) -> str:
    """SHA-256 over the names and bytes of the package's modules, in name order."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.glob("*.py")):
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def drop_stale(cache_dir: Path, digest: str) -> bool:
    """Delete the cached kernels (``*.nbi``, ``*.nbc``) in ``cache_dir`` unless its stamp says they
    were built from sources with ``digest``; then stamp it. True when anything was dropped.

    A directory that cannot be written is left as it is: numba cannot fill it either."""
    stamp = cache_dir / STAMP_NAME
    try:
        if stamp.read_text() == digest:
            return False
    except OSError:
        pass  # no stamp yet: a cache of unknown origin
    dropped = False
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        for path in [*cache_dir.glob("*.nbi"), *cache_dir.glob("*.nbc")]:
            path.unlink(missing_ok=True)
            dropped = True
        stamp.write_text(digest)
    except OSError:
        return dropped
    return dropped


def kernel_cache_dir(kernel: object) -> Path | None:
    """Where numba caches ``kernel`` (a ``cache=True`` dispatcher of this package), and so all of the
    package's kernels: ``__pycache__`` beside the sources, or a folder under ``NUMBA_CACHE_DIR``.
    None when numba keeps no cache for it."""
    path = getattr(getattr(kernel, "_cache", None), "_cache_path", None)
    return Path(path) if path else None
