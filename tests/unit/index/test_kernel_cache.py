"""Cached kernels are dropped when any module of the index package changed, not only their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from orbithash.index import hamming
from orbithash.index.kernel_cache import STAMP_NAME, drop_stale, kernel_cache_dir, sources_digest


def _fake_cache(directory: Path) -> list[Path]:
    files = [directory / "hamming._search_one-350.py311.nbi", directory / "hamming._search_one-350.py311.1.nbc",
             directory / "scan._fill1-154.py311.nbi"]
    for path in files:
        path.write_bytes(b"cached")
    (directory / "hamming.cpython-311.pyc").write_bytes(b"bytecode")  # not numba's: kept
    return files


def test_a_cache_without_a_stamp_or_with_another_is_dropped_and_a_matching_one_kept(tmp_path: Path) -> None:
    files = _fake_cache(tmp_path)
    assert drop_stale(tmp_path, "a" * 64)
    assert not any(p.exists() for p in files) and (tmp_path / "hamming.cpython-311.pyc").exists()
    assert (tmp_path / STAMP_NAME).read_text() == "a" * 64
    files = _fake_cache(tmp_path)  # filled again from the same sources
    assert not drop_stale(tmp_path, "a" * 64)
    assert all(p.exists() for p in files)
    assert drop_stale(tmp_path, "b" * 64)  # a module changed
    assert not any(p.exists() for p in files) and (tmp_path / STAMP_NAME).read_text() == "b" * 64


def test_the_digest_follows_every_module_of_the_package(tmp_path: Path) -> None:
    (tmp_path / "scan.py").write_text("x = 1\n")
    (tmp_path / "hamming.py").write_text("y = 2\n")
    first = sources_digest(tmp_path)
    assert sources_digest(tmp_path) == first
    (tmp_path / "scan.py").write_text("x = 3\n")  # only the module the cached kernel inlined
    assert sources_digest(tmp_path) != first
    assert sources_digest() == sources_digest(Path(hamming.__file__).parent)


def test_warm_up_drops_a_stale_cache_before_it_loads_a_kernel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert kernel_cache_dir(hamming._search_one) is not None  # the kernels are cached somewhere
    files = _fake_cache(tmp_path)
    (tmp_path / STAMP_NAME).write_text("built from older sources")
    monkeypatch.setattr(hamming, "kernel_cache_dir", lambda kernel: tmp_path)
    hamming.warm_up()
    assert not any(p.exists() for p in files)
    assert (tmp_path / STAMP_NAME).read_text() == sources_digest()
