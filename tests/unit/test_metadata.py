"""Scene metadata: one rule per invalid value (the message names the item), an exact binary round
trip, and the columns' bookkeeping (replace, remove, grow, postings that change form)."""

from __future__ import annotations

import numpy as np
import pytest

from orbithash import InvalidInput, OrbitHashError
from orbithash.metadata import (
    MAX_ATTRIBUTES,
    MAX_TEXT_BYTES,
    MAX_THUMBNAIL_BYTES,
    Box,
    LonLat,
    MetadataColumns,
    SceneFilter,
    SceneMeta,
    check_filter,
    check_scene,
    check_thumbnail,
    decode,
    encode,
)

FULL = SceneMeta(acquired=1_684_000_000.123456, center=LonLat(179.99, -12.5),
                 footprint=Box(179.5, -13.0, -179.5, -12.0), sensor="MSI", platform="Sentinel-2A",
                 source_uri="s3://sentinel-s2-l1c/tiles/1/K/AB/2023/5/13/0/",
                 attributes={"cloud_cover": "12.5", "tile": "01KAB", "ünï": "ç🛰️"})


@pytest.mark.parametrize(("meta", "message"), [
    (SceneMeta(acquired=float("nan")), "acquired nan is not a time"),
    (SceneMeta(acquired=1e12), "acquired 1000000000000.0 is not a time"),
    (SceneMeta(acquired=True), "acquired True"),  # type: ignore[arg-type]
    (SceneMeta(center=LonLat(0.0, 91.0)), "center latitude 91.0 is outside -90..90"),
    (SceneMeta(center=LonLat(-180.5, 0.0)), "center longitude -180.5 is outside -180..180"),
    (SceneMeta(center=LonLat(float("inf"), 0.0)), "center longitude inf"),
    (SceneMeta(center=(1.0,)), "center must be"),  # type: ignore[arg-type]
    (SceneMeta(footprint=Box(0.0, 10.0, 1.0, 5.0)), "footprint south 10.0 is greater than its north 5.0"),
    (SceneMeta(footprint=Box(0.0, -91.0, 1.0, 5.0)), "footprint south latitude -91.0"),
    (SceneMeta(footprint=Box(200.0, 0.0, 1.0, 5.0)), "footprint west longitude 200.0"),
    (SceneMeta(footprint=[0, 0, 1, 1]), "footprint must be"),  # type: ignore[arg-type]
    (SceneMeta(sensor="x" * (MAX_TEXT_BYTES + 1)), f"sensor 'xxx.*has 257 bytes, at most {MAX_TEXT_BYTES}"),
    (SceneMeta(platform="é" * 129), "platform .* has 258 bytes"),
    (SceneMeta(source_uri="bad\ud800"), "source_uri is not valid UTF-8"),
    (SceneMeta(sensor=3), "sensor must be a string"),  # type: ignore[arg-type]
    (SceneMeta(attributes={str(i): "" for i in range(MAX_ATTRIBUTES + 1)}), "33 attributes, at most 32"),
    (SceneMeta(attributes={"": "v"}), "an attribute key is empty"),
    (SceneMeta(attributes={"k" * 300: "v"}), "attribute key 'kkk.*has 300 bytes"),
    (SceneMeta(attributes={"cloud": "v" * 257}), "attribute 'cloud' 'vvv.*has 257 bytes"),
    (SceneMeta(attributes={"cloud": 12.5}), "attribute 'cloud' must be a string"),  # type: ignore[dict-item]
    (SceneMeta(attributes=[("a", "b")]), "attributes must be a mapping"),  # type: ignore[arg-type]
])
def test_each_invalid_value_is_refused_naming_the_item(meta: SceneMeta, message: str) -> None:
    with pytest.raises(InvalidInput, match=f"^item 4 \\(id 'x'\\): .*{message}"):
        check_scene(meta, "item 4 (id 'x')")


def test_valid_metadata_passes_unchanged() -> None:
    edge = SceneMeta(acquired=-62_135_596_800.0, center=LonLat(-180.0, 90.0),
                     footprint=Box(180.0, -90.0, -180.0, 90.0), sensor="s" * MAX_TEXT_BYTES,
                     attributes={f"k{i}": "v" * MAX_TEXT_BYTES for i in range(MAX_ATTRIBUTES)})
    for meta in (SceneMeta(), FULL, edge, SceneMeta(acquired=0)):
        assert check_scene(meta, "item 0") is meta


def test_filters_follow_the_same_rules() -> None:
    check_filter(SceneFilter(acquired_from=0.0, acquired_until=1.0, intersects=Box(170.0, -1.0, -170.0, 1.0),
                             sensors=frozenset({"", "MSI"}), attributes={"a": "b"}))
    for f, message in [
        (SceneFilter(acquired_until=float("inf")), "acquired_until inf"),
        (SceneFilter(intersects=Box(0.0, 5.0, 1.0, 4.0)), "intersects south 5.0"),
        (SceneFilter(center_within=Box(0.0, 0.0, 181.0, 4.0)), "center_within east longitude 181.0"),
        (SceneFilter(sensors=frozenset({"x" * 300})), "sensor 'xxx"),
        (SceneFilter(sensors=frozenset(str(i) for i in range(300))), "300 sensors"),
        (SceneFilter(attributes={"": "b"}), "attribute key is empty"),
    ]:
        with pytest.raises(InvalidInput, match=f"^filter: .*{message}"):
            check_filter(f)


def test_thumbnails_are_bytes_of_bounded_size() -> None:
    assert check_thumbnail(bytearray(b"jpg"), "item 0") == b"jpg"
    assert check_thumbnail(b"", "item 0") == b""
    with pytest.raises(InvalidInput, match=f"item 2: the thumbnail has {MAX_THUMBNAIL_BYTES + 1} bytes"):
        check_thumbnail(bytes(MAX_THUMBNAIL_BYTES + 1), "item 2")
    with pytest.raises(InvalidInput, match="must be bytes"):
        check_thumbnail("jpg", "item 2")


def test_encode_decode_round_trip_is_exact() -> None:
    rng = np.random.default_rng(0)
    cases = [SceneMeta(), FULL, SceneMeta(acquired=0.0), SceneMeta(center=LonLat(-180.0, -90.0)),
             SceneMeta(footprint=Box(1.0, 2.0, 3.0, 4.0)), SceneMeta(attributes={"k": ""}),
             SceneMeta(sensor="s" * MAX_TEXT_BYTES, attributes={f"k{i}": "é" * 128 for i in range(MAX_ATTRIBUTES)})]
    for _ in range(200):
        cases.append(SceneMeta(
            acquired=float(rng.uniform(-6e10, 2.5e11)) if rng.random() < 0.5 else None,
            center=LonLat(float(rng.uniform(-180, 180)), float(rng.uniform(-90, 90))) if rng.random() < 0.5 else None,
            footprint=Box(*map(float, rng.uniform(-90, 90, 4))) if rng.random() < 0.5 else None,
            sensor=str(rng.choice(["", "MSI", "ß"])), platform="P" * int(rng.integers(0, 3)),
            attributes={f"k{j}": str(rng.random()) for j in range(int(rng.integers(0, 4)))}))
    for meta in cases:
        blob = encode(meta)
        assert decode(blob) == meta
        assert (blob == b"") == meta.is_empty
    assert encode(FULL)[0] == 1  # the format version leads


def test_damaged_or_unknown_blobs_are_refused() -> None:
    blob = encode(FULL)
    for bad in (blob[:-1], blob + b"x", blob[:5], bytes([9]) + blob[1:], blob[:2], blob[:1] + b"\x0f" + blob[2:]):
        with pytest.raises(OrbitHashError, match="metadata blob"):
            decode(bad)


def test_blobs_are_compact() -> None:
    """A typical scene (time, centre, footprint, 3 short strings, 2 attributes) in under 180 bytes."""
    typical = SceneMeta(1.684e9, LonLat(12.5, 41.9), Box(12.0, 41.4, 13.0, 42.4), "MSI", "Sentinel-2A",
                        "s3://sentinel-s2-l1c/tiles/33/T/TG/2023/5/13/0/", {"cloud_cover": "12.5", "tile": "33TTG"})
    assert len(encode(typical)) < 180
    assert len(encode(SceneMeta(sensor="MSI"))) == 2 + 5 + 2 + 2 + 1


def test_columns_replace_remove_and_get() -> None:
    columns = MetadataColumns(capacity=2)
    a, b = FULL, SceneMeta(acquired=5.0, sensor="OLI", attributes={"tile": "01KAB"})
    columns.put([0, 9], [a, b])
    assert columns.capacity >= 10
    assert columns.get(0) == a and columns.get(9) == b and columns.get(5) == SceneMeta()
    assert columns.get(10**6) == SceneMeta()
    tile = SceneFilter(attributes={"tile": "01KAB"})
    assert np.flatnonzero(columns.mask(tile, 12)).tolist() == [0, 9]
    columns.put([0], [SceneMeta(sensor="MSI")])  # replaced whole: its attributes and time are gone
    assert np.flatnonzero(columns.mask(tile, 12)).tolist() == [9]
    assert not columns.mask(SceneFilter(acquired_from=0.0), 12)[0]
    assert columns.mask(SceneFilter(sensors=frozenset({"MSI"})), 12)[0]
    columns.put([3, 3], [a, b])  # a repeated slot: the last wins
    assert columns.get(3) == b
    columns.remove([9, 3, 10**6])
    assert columns.get(9) == SceneMeta() and not columns.mask(tile, 12).any()
    columns.put([4], [SceneMeta()])  # nothing to store: the slot stays empty
    assert columns.get(4) == SceneMeta()
    assert columns.mask(SceneFilter(), 3).tolist() == [True] * 3  # no condition passes every slot
    # Slots past the columns' end hold no metadata: they pass a sensor filter admitting "", nothing else.
    beyond = columns.capacity + 5
    assert columns.mask(SceneFilter(sensors=frozenset({"", "MSI"})), beyond)[columns.capacity:].all()
    assert not columns.mask(SceneFilter(sensors=frozenset({"MSI"})), beyond)[columns.capacity:].any()
    assert not columns.mask(SceneFilter(sensors=frozenset({""}), acquired_until=9.0), beyond)[columns.capacity:].any()
    assert columns.mask(SceneFilter(sensors=frozenset({"MSI"})), 0).shape == (0,)
    with pytest.raises(InvalidInput, match="metadata for"):
        columns.put([1, 2], [a])
    with pytest.raises(InvalidInput, match="slots"):
        columns.put([-1], [a])


def test_postings_turn_into_bitmaps_and_back_exactly() -> None:
    """A common value becomes a bitmap over slots, which grows with the columns and turns back into a
    set (and then nothing) as its slots go; masks stay exact throughout."""
    columns = MetadataColumns(capacity=16)
    common = SceneMeta(attributes={"level": "L1C"})
    other = SceneMeta(attributes={"level": "L2A"})
    f = SceneFilter(attributes={"level": "L1C"})
    expected: set[int] = set()
    rng = np.random.default_rng(1)
    for slot in rng.permutation(3000).tolist():  # grows the columns many times while dense
        columns.put([slot], [common if slot % 3 else other])
        if slot % 3:
            expected.add(slot)
    assert type(columns._attributes._postings["level"]["L1C"]).__name__ == "_Dense"
    assert set(np.flatnonzero(columns.mask(f, 5000)).tolist()) == expected
    for slot in sorted(expected)[:-3]:
        columns.remove([slot])
        expected.discard(slot)
    assert isinstance(columns._attributes._postings["level"]["L1C"], set)
    assert set(np.flatnonzero(columns.mask(f, 5000)).tolist()) == expected
    columns.remove(sorted(expected)[:-1])
    assert isinstance(columns._attributes._postings["level"]["L1C"], int)
    columns.remove(sorted(expected)[-1:])
    assert "L1C" not in columns._attributes._postings["level"]
    assert not columns.mask(f, 5000).any()
