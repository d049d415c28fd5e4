"""Splits from the real UC Merced zip and from small trees written on the fly."""

from __future__ import annotations

import io
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import SHARED_DATA

from orbithash import InvalidInput
from orbithash.data import load_split
from orbithash.images import decode_image

UCMERCED = SHARED_DATA / "ucmerced.zip"


def _png(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((4, 4, 3), value, np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _write_tree(root: Path, counts: dict[str, int], first_value: int = 0) -> dict[bytes, str]:
    """Class folders of distinct PNGs (pixel values from ``first_value``); returns {image bytes: class name}."""
    written = {}
    value = first_value
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            data = _png(value)
            value += 1
            (root / cls / f"img{i:02d}.png").write_bytes(data)
            written[data] = cls
    return written


def test_ucmerced_follows_the_dhcnn_protocol() -> None:
    split = load_split(UCMERCED)
    assert split.name == "ucmerced"
    assert len(split.class_names) == 21 and split.class_names[0] == "agricultural"
    assert (len(split.database), len(split.queries)) == (1680, 420)
    assert set(Counter(r.label for r in split.database).values()) == {80}
    assert set(Counter(r.label for r in split.queries).values()) == {20}
    assert [r.id for r in split.database[:2]] == ["db-000000", "db-000001"]
    assert split.database[-1].id == "db-001679" and split.queries[-1].id == "q-000419"
    labels = [r.label for r in split.database]
    assert labels == sorted(labels)  # class-major order
    assert not {r.data for r in split.database} & {r.data for r in split.queries}
    assert decode_image(split.queries[0].data).shape[2] == 3


def test_ucmerced_split_is_deterministic_and_seeded() -> None:
    a = load_split(UCMERCED, limit_per_class=10)
    b = load_split(UCMERCED, limit_per_class=10)
    c = load_split(UCMERCED, limit_per_class=10, seed=1)
    assert (len(a.database), len(a.queries)) == (168, 42)
    assert a == b
    assert [r.data for r in a.database] != [r.data for r in c.database]


def test_default_path_is_ucmerced_beside_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORBITHASH_DATA_DIR", str(UCMERCED.parent))
    split = load_split(None, limit_per_class=5)
    assert split.name == "ucmerced" and len(split.database) == 21 * 4


def test_image_folder_split_scales_per_class(tmp_path: Path) -> None:
    written = _write_tree(tmp_path / "tree", {"b": 10, "a": 5, "c": 3})
    (tmp_path / "tree" / "a" / "notes.txt").write_text("not an image")
    split = load_split(tmp_path / "tree")
    assert split.class_names == ("a", "b", "c")
    db, q = Counter(r.label for r in split.database), Counter(r.label for r in split.queries)
    assert [db[0], db[1], db[2]] == [4, 8, 2]  # round(0.8 n) for n = 5, 10, 3
    assert [q[0], q[1], q[2]] == [1, 2, 1]
    records = split.database + split.queries
    assert sorted(r.data for r in records) == sorted(written)  # every image exactly once
    assert all(split.class_names[r.label] == written[r.data] for r in records)
    assert [r.id for r in split.queries] == [f"q-{i:06d}" for i in range(4)]


def test_zip_and_folder_of_one_tree_give_one_split(tmp_path: Path) -> None:
    _write_tree(tmp_path / "Data" / "Images", {"x": 6, "y": 4})
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted((tmp_path / "Data").rglob("*.png")):
            z.write(p, p.relative_to(tmp_path).as_posix())
    from_dir = load_split(tmp_path / "Data", seed=3)
    from_zip = load_split(archive, seed=3)
    assert from_zip.database == from_dir.database and from_zip.queries == from_dir.queries
    assert from_zip.name == "data"


def test_train_test_layout_keeps_its_split_and_limits_both(tmp_path: Path) -> None:
    train = _write_tree(tmp_path / "cifar" / "train", {"cat": 6, "dog": 6})
    test = _write_tree(tmp_path / "cifar" / "test", {"cat": 3, "dog": 3})
    split = load_split(tmp_path / "cifar", limit_per_class=2)
    assert (len(split.database), len(split.queries)) == (4, 4)
    assert all(r.data in train for r in split.database)
    assert all(r.data in test for r in split.queries)


def test_one_class_or_a_bad_path_is_refused(tmp_path: Path) -> None:
    _write_tree(tmp_path / "one", {"only": 4})
    with pytest.raises(InvalidInput, match="class"):
        load_split(tmp_path / "one")
    with pytest.raises(InvalidInput, match="not a folder"):
        load_split(tmp_path / "missing.zip")


def test_digits_stand_in_when_no_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ORBITHASH_DATA_DIR", str(tmp_path))
    split = load_split(None, limit_per_class=10)
    assert split.name == "digits" and split.class_names == tuple(str(i) for i in range(10))
    assert (len(split.database), len(split.queries)) == (80, 20)
    image = decode_image(split.database[0].data)
    assert image.shape == (8, 8, 3) and image.max() == 255


def test_dpsh_protocol_draws_queries_and_a_separate_training_set_per_class(tmp_path: Path) -> None:
    from orbithash.data import sample_protocol

    written = _write_tree(tmp_path / "cifar" / "train", {"cat": 7, "dog": 8})
    written |= _write_tree(tmp_path / "cifar" / "test", {"cat": 3, "dog": 2}, first_value=100)
    split = sample_protocol(load_split(tmp_path / "cifar"), queries_per_class=2, train_per_class=3, seed=1)
    assert Counter(r.label for r in split.queries) == {0: 2, 1: 2}
    assert Counter(r.label for r in split.training) == {0: 3, 1: 3}
    assert Counter(r.label for r in split.database) == {0: 5, 1: 5}  # the rest of the 10 per class
    parts = [split.queries, split.training, split.database]
    images = [r.data for part in parts for r in part]
    assert sorted(images) == sorted(written) and len(set(images)) == len(images)  # every image once
    assert all(written[r.data] == split.class_names[r.label] for part in parts for r in part)
    assert [r.id for r in split.training] == [f"train-{i:06d}" for i in range(6)]
    assert split.labels("training").tolist() == [0, 0, 0, 1, 1, 1]
    again = sample_protocol(load_split(tmp_path / "cifar"), queries_per_class=2, train_per_class=3, seed=1)
    other = sample_protocol(load_split(tmp_path / "cifar"), queries_per_class=2, train_per_class=3, seed=2)
    assert again == split and other.queries != split.queries
    with pytest.raises(InvalidInput, match="'cat' has 10 images"):
        sample_protocol(split, queries_per_class=4, train_per_class=6)
