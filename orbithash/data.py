"""Labelled image splits read from the official dataset layouts, deterministically.

A split is a retrieval database plus a query set of encoded image bytes. Bytes (not decoded
arrays) are kept so that training decodes them with the same ``orbithash.images`` functions the
encoder service uses: a served code then equals the code evaluated at training time.

Layouts understood, as a zip (read in place) or a folder:

- class folders at any depth, ``.../<class>/<image>`` (UC Merced's ``Images/<class>/<class>NN.tif``
  or any ImageFolder tree): per class, files sorted by name, shuffled with ``seed``, the first
  ``round(n * train / (train + query))`` go to the database, the rest are queries;
- CIFAR-10 style ``.../train/<class>/<image>`` and ``.../test/<class>/<image>``: database = train,
  queries = test.

Either protocol trains on the database. ``sample_protocol`` re-splits any split's pooled images
into queries, a separate training set and the database (DPSH's CIFAR-10 protocol: 100 queries and
500 training images per class, the other 5 400 per class the database).

Database ids are ``db-NNNNNN`` and query ids ``q-NNNNNN`` in class-major order; the database order
is stable because evaluation and the demo break Hamming ties by it.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image

from orbithash import InvalidInput

IMAGE_SUFFIXES = (".tif", ".tiff", ".jpg", ".jpeg", ".png")
PRESPLIT_DIRS = ("train", "test")
DATA_DIR_ENV = "ORBITHASH_DATA_DIR"


class DatasetError(InvalidInput):
    """A dataset path or layout cannot be turned into a split."""


@dataclass(frozen=True)
class ImageRecord:
    id: str
    label: int
    data: bytes


@dataclass(frozen=True)
class Split:
    """A retrieval split: database, queries and, when it is not the database, a training set."""

    name: str
    class_names: tuple[str, ...]
    database: list[ImageRecord]
    queries: list[ImageRecord]
    train: list[ImageRecord] | None = None  # None: the database is the training set (DHCNN, DSH)

    @property
    def training(self) -> list[ImageRecord]:
        return self.database if self.train is None else self.train

    def labels(self, part: str) -> np.ndarray:
        """Labels of ``"database"``, ``"queries"`` or ``"training"`` as an int64 array, in record order."""
        return np.asarray([r.label for r in getattr(self, part)], np.int64)


def sample_protocol(split: Split, *, queries_per_class: int, train_per_class: int, seed: int = 0) -> Split:
    """Pool the split's images and draw, per class, queries, then training images; the rest is the database.

    DPSH's CIFAR-10 protocol is ``queries_per_class=100, train_per_class=500``: 1 000 queries,
    5 000 training images and a 54 000-image database that does not contain them. Pooled
    images are taken in (database, queries) order and shuffled per class with ``seed``; ids are
    renumbered ``db-``/``q-``/``train-`` in class-major order.
    """
    if queries_per_class < 1 or train_per_class < 1:
        raise DatasetError("queries_per_class and train_per_class must be >= 1")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[ImageRecord]] = {"q": [], "train": [], "db": []}
    pooled = split.database + split.queries + (split.train or [])
    for label in range(len(split.class_names)):
        members = [r for r in pooled if r.label == label]
        if len(members) < queries_per_class + train_per_class + 1:
            raise DatasetError(f"class {split.class_names[label]!r} has {len(members)} images, need more than "
                               f"{queries_per_class + train_per_class}")
        members = [members[i] for i in rng.permutation(len(members))]
        cut = queries_per_class + train_per_class
        for prefix, chosen in (("q", members[:queries_per_class]), ("train", members[queries_per_class:cut]),
                               ("db", members[cut:])):
            parts[prefix] += [replace(r, id=f"{prefix}-{len(parts[prefix]) + i:06d}") for i, r in enumerate(chosen)]
    return Split(split.name, split.class_names, parts["db"], parts["q"], parts["train"])


def default_data_dir() -> Path:
    """``$ORBITHASH_DATA_DIR`` or the ``shared/data`` folder beside the repository checkout."""
    env = os.environ.get(DATA_DIR_ENV)
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "data"


def load_split(
    path: Path | None,
    *,
    per_class_train: int = 80,
    per_class_query: int = 20,
    seed: int = 0,
    limit_per_class: int | None = None,
) -> Split:
    """Load a split; ``path=None`` means UC Merced from the data dir, else scikit-learn's digits.

    ``per_class_train``/``per_class_query`` set the database:query ratio (exact counts for
    classes of ``train + query`` images, UC Merced's 80/20). ``limit_per_class`` keeps the first
    images of each class's shuffled order (for both parts of a pre-split dataset).
    """
    if per_class_train < 1 or per_class_query < 0:
        raise DatasetError("per_class_train must be >= 1 and per_class_query >= 0")
    if limit_per_class is not None and limit_per_class < 1:
        raise DatasetError(f"limit_per_class must be >= 1, got {limit_per_class}")
    fraction = per_class_train / (per_class_train + per_class_query)
    if path is None:
        default = default_data_dir() / "ucmerced.zip"
        if not default.exists():
            return _digits_split(fraction, seed, limit_per_class)
        path = default
    path = Path(path)
    name = path.stem.lower() if path.is_file() else path.name.lower()
    with _open_source(path) as (files, read):
        tree = _class_tree(files)
        rng = np.random.default_rng(seed)
        if set(tree) == set(PRESPLIT_DIRS):
            classes = sorted(set(tree["train"]) | set(tree["test"]))
            db_files = {c: _shuffled(tree["train"].get(c, []), rng, limit_per_class) for c in classes}
            q_files = {c: _shuffled(tree["test"].get(c, []), rng, limit_per_class) for c in classes}
        else:
            merged = _merge_roots(tree)
            classes = sorted(merged)
            db_files, q_files = {}, {}
            for c in classes:
                order = _shuffled(merged[c], rng, limit_per_class)
                n_db = _database_count(len(order), fraction)
                db_files[c], q_files[c] = order[:n_db], order[n_db:]
        if len(classes) < 2:
            raise DatasetError(f"{path}: found {len(classes)} class folder(s) with images, need >= 2")
        return Split(
            name=name,
            class_names=tuple(classes),
            database=_records("db", classes, db_files, read),
            queries=_records("q", classes, q_files, read),
        )


def _database_count(n: int, fraction: float) -> int:
    """round(n * fraction), but one query is kept whenever a class has two or more images."""
    n_db = round(n * fraction)
    if fraction < 1 and n >= 2:
        n_db = min(n_db, n - 1)
    return max(1, n_db) if n else 0


@contextmanager
def _open_source(path: Path) -> Iterator[tuple[list[str], Callable[[str], bytes]]]:
    """Image file names (posix, relative, sorted) and a reader, for a zip or a folder."""
    if path.is_dir():
        names = sorted(
            p.relative_to(path).as_posix() for p in path.rglob("*") if p.is_file() and _is_image(p.name)
        )
        yield names, lambda n: (path / n).read_bytes()
    elif path.is_file() and zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = sorted(
                i.filename for i in archive.infolist()
                if not i.is_dir() and _is_image(i.filename) and not i.filename.startswith("__MACOSX/")
            )
            yield names, archive.read
    else:
        raise DatasetError(f"{path}: not a folder or a zip archive")


def _is_image(name: str) -> bool:
    base = PurePosixPath(name).name
    return not base.startswith(".") and base.lower().endswith(IMAGE_SUFFIXES)


def _class_tree(files: Iterable[str]) -> dict[str, dict[str, list[str]]]:
    """{grandparent folder name: {class folder name: [files]}}; a file's class is its folder."""
    tree: dict[str, dict[str, list[str]]] = {}
    for name in files:
        parts = PurePosixPath(name).parts
        if len(parts) < 2:
            continue  # loose files beside the class folders have no label
        root = parts[-3] if len(parts) >= 3 else ""
        tree.setdefault(root, {}).setdefault(parts[-2], []).append(name)
    return tree


def _merge_roots(tree: dict[str, dict[str, list[str]]]) -> dict[str, list[str]]:
    merged: dict[str, list[str]] = {}
    for classes in tree.values():
        for c, names in classes.items():
            merged.setdefault(c, []).extend(names)
    return merged


def _shuffled(names: list[str], rng: np.random.Generator, limit: int | None) -> list[str]:
    order = sorted(names)
    order = [order[i] for i in rng.permutation(len(order))]
    return order[:limit] if limit is not None else order


def _records(prefix: str, classes: list[str], files: dict[str, list[str]],
             read: Callable[[str], bytes]) -> list[ImageRecord]:
    records: list[ImageRecord] = []
    for label, c in enumerate(classes):
        for name in files[c]:
            records.append(ImageRecord(id=f"{prefix}-{len(records):06d}", label=label, data=read(name)))
    return records


def _digits_split(fraction: float, seed: int, limit: int | None) -> Split:
    """scikit-learn's bundled 8×8 digits as PNG bytes (0..16 scaled to 0..255): works offline."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    classes = [str(c) for c in range(10)]
    db: dict[str, list[str]] = {}
    q: dict[str, list[str]] = {}
    for c in range(10):
        idx = np.flatnonzero(digits.target == c)  # dataset order plays the role of name order
        idx = idx[rng.permutation(len(idx))][:limit]
        n_db = _database_count(len(idx), fraction)
        db[str(c)], q[str(c)] = [str(i) for i in idx[:n_db]], [str(i) for i in idx[n_db:]]

    def png(key: str) -> bytes:
        pixels = np.clip(np.rint(digits.images[int(key)] * (255.0 / 16.0)), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        return buf.getvalue()

    return Split("digits", tuple(classes), _records("db", classes, db, png), _records("q", classes, q, png))
