"""Helpers shared by tests (importable as ``support``: pytest puts ``tests/`` on the path)."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = REPO.parent / "shared" / "data"
