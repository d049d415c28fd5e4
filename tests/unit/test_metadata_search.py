"""Filtered search against a brute-force oracle: ``MetadataColumns.mask`` against a scalar per-item
reading of each condition, and ``HammingIndex.search(allowed=...)`` against the reference over the
matching items only, with label and radius filters, for the scan and for MIH.

The metadata is random: absent fields, footprints without centres and the reverse, boxes that
cross the antimeridian, longitudes of exactly ±180, times on a filter's bounds. The oracle reads
coordinates at float32 precision, as the columns do, and decides box overlap by splitting each
box at the antimeridian (the library uses another rule: one arc holds the other's west edge).
"""

from __future__ import annotations

import numpy as np
import pytest
from support.codes import Items, random_codes, reference, shuffled_ids, trained_like

from orbithash.index import HammingIndex, mih, planner
from orbithash.metadata import Box, LonLat, MetadataColumns, SceneFilter, SceneMeta

T0 = 1.6e9  # seconds: the items' times lie in [T0, T0 + 1e7)
SENSORS = ["", "MSI", "OLI", "SAR", "TIRS", "HRV"]  # more than 4: the mask's table path too


def random_box(rng: np.random.Generator, half_width: float) -> Box:
    """A box around a random point; one whose west edge wraps past -180 crosses the antimeridian."""
    lon, lat = rng.uniform(-180, 180), rng.uniform(-80, 80)
    west, east = lon - half_width * rng.random(), lon + half_width * rng.random()
    if west < -180:
        west += 360  # now west > east: the box crosses the antimeridian
    east = min(east, 180.0)
    south, north = max(lat - half_width / 2, -90.0), min(lat + half_width / 2, 90.0)
    return Box(float(west), float(south), float(east), float(north))


def random_meta(rng: np.random.Generator, i: int) -> SceneMeta:
    acquired = None if rng.random() < 0.2 else float(T0 + rng.integers(0, 10_000_000))
    center = None
    if rng.random() < 0.75:
        lon = float(rng.choice([-180.0, 180.0])) if rng.random() < 0.05 else float(rng.uniform(-180, 180))
        center = LonLat(lon, float(rng.uniform(-90, 90)))
    footprint = random_box(rng, 15.0) if rng.random() < 0.6 else None
    attributes = {}
    if rng.random() < 0.8:
        attributes["level"] = str(rng.choice(["L1C", "L2A"]))  # common values: bitmap postings
    if rng.random() < 0.5:
        attributes["tile"] = f"T{rng.integers(0, 40)}"  # tens of slots each: set postings
    if rng.random() < 0.3:
        attributes["product"] = f"P{i}"  # unique: single-slot postings
    return SceneMeta(acquired, center, footprint, str(rng.choice(SENSORS)), "Sentinel-2A", f"s3://b/{i}",
                     attributes)


# -- the oracle ---------------------------------------------------------------------------------------


def f32(x: float) -> float:
    return float(np.float32(x))


def lon_ranges(west: float, east: float) -> list[tuple[float, float]]:
    """A box's longitudes as plain intervals: two when it crosses the antimeridian."""
    return [(west, east)] if west <= east else [(west, 180.0), (-180.0, east)]


def point_in(point: tuple[float, float], box: Box) -> bool:
    lon, lat = f32(point[0]), f32(point[1])
    w, s, e, n = map(f32, box)
    return s <= lat <= n and any(a <= lon <= b for a, b in lon_ranges(w, e))


def boxes_meet(a: Box, b: Box) -> bool:
    aw, as_, ae, an = map(f32, a)
    bw, bs, be, bn = map(f32, b)
    if as_ > bn or an < bs:
        return False
    return any(x0 <= y1 and y0 <= x1 for x0, x1 in lon_ranges(aw, ae) for y0, y1 in lon_ranges(bw, be))


def matches(meta: SceneMeta, f: SceneFilter) -> bool:
    t = meta.acquired
    if f.acquired_from is not None and (t is None or t < f.acquired_from):
        return False
    if f.acquired_until is not None and (t is None or t >= f.acquired_until):
        return False
    if f.center_within is not None and (meta.center is None or not point_in(meta.center, f.center_within)):
        return False
    if f.intersects is not None:
        if meta.footprint is not None:
            if not boxes_meet(meta.footprint, f.intersects):
                return False
        elif meta.center is None or not point_in(meta.center, f.intersects):
            return False
    if f.sensors and meta.sensor not in f.sensors:
        return False
    return all(meta.attributes.get(k) == v for k, v in f.attributes.items())


def filters(rng: np.random.Generator, metas: list[SceneMeta]) -> list[SceneFilter]:
    """Filters from matching almost nothing to almost everything, one condition and several."""
    times = sorted(m.acquired for m in metas if m.acquired is not None)
    on = times[len(times) // 3]  # a bound equal to an item's time: inclusive from, exclusive until
    world = Box(-180.0, -90.0, 180.0, 90.0)
    out = [
        SceneFilter(acquired_from=on),
        SceneFilter(acquired_until=on),
        SceneFilter(acquired_from=on, acquired_until=on + 1),  # about one item
        SceneFilter(acquired_from=T0 - 1),  # every item with a time
        SceneFilter(intersects=world),
        SceneFilter(center_within=world),
        SceneFilter(intersects=Box(170.0, -60.0, -170.0, 60.0)),  # across the antimeridian
        SceneFilter(center_within=Box(160.0, -90.0, -160.0, 90.0)),
        SceneFilter(intersects=Box(180.0, -90.0, 180.0, 90.0)),  # the antimeridian itself, as lon 180
        SceneFilter(center_within=Box(-180.0, -90.0, -180.0, 90.0)),
        SceneFilter(sensors=frozenset({"MSI"})),
        SceneFilter(sensors=frozenset({"", "SAR", "nope"})),
        SceneFilter(sensors=frozenset({"nope"})),  # nothing
        SceneFilter(sensors=frozenset(SENSORS)),  # everything: "" stands for items without a sensor
        SceneFilter(sensors=frozenset(SENSORS[1:])),  # all but a sixth
        SceneFilter(attributes={"level": "L1C"}),
        SceneFilter(attributes={"level": "L2A", "tile": "T3"}),
        SceneFilter(attributes={"product": "P7"}),  # one item at most
        SceneFilter(attributes={"level": "L9"}),  # nothing
        SceneFilter(attributes={"level": "L1C"}, sensors=frozenset({"MSI", "OLI"}), acquired_from=on,
                    intersects=Box(-120.0, -70.0, 150.0, 80.0)),
    ]
    for _ in range(12):
        out.append(SceneFilter(intersects=random_box(rng, float(rng.choice([2.0, 40.0, 150.0])))))
        out.append(SceneFilter(center_within=random_box(rng, float(rng.choice([5.0, 90.0])))))
    return out


def filled(n: int, seed: int, bits: int, kind: str = "random"
           ) -> tuple[HammingIndex, MetadataColumns, Items, dict[str, SceneMeta], np.ndarray, np.random.Generator]:
    """An index and its columns over n items at sparse slots; a tenth of the items have no metadata
    and were never put in the columns, half of them at slots past the columns' end."""
    rng = np.random.default_rng(seed)
    codes = random_codes(rng, n, bits) if kind == "random" else trained_like(rng, n, bits)
    ids = shuffled_ids(rng, n)
    labels = rng.integers(-1, 3, n).astype(np.int32)
    slots = rng.permutation(n + 40)[:n]
    top = np.quantile(slots, 0.95)  # the items at the highest slots have none: past the columns' end
    metas = [SceneMeta() if rng.random() < 0.05 or slots[i] > top else random_meta(rng, i) for i in range(n)]
    index = HammingIndex(bits, capacity=64, threads=2)
    index.put(slots, ids, codes, labels)
    columns = MetadataColumns(capacity=16)
    described = [j for j, m in enumerate(metas) if not m.is_empty]  # as a shard loads: items without none
    columns.put(slots[described], [metas[j] for j in described])
    items = {i: (c, int(lab)) for i, c, lab in zip(ids, codes, labels, strict=True)}
    return index, columns, items, dict(zip(ids, metas, strict=True)), slots, rng


def test_mask_equals_the_scalar_oracle() -> None:
    index, columns, _, meta_of, slots, rng = filled(3000, 1, 64)
    ids = list(meta_of)
    for f in filters(rng, list(meta_of.values())):
        mask = columns.mask(f, index.capacity)
        assert mask.shape == (index.capacity,)
        got = {ids[j] for j, s in enumerate(slots) if mask[s]}
        assert got == {i for i, m in meta_of.items() if matches(m, f)}, f
    # Slots that never held metadata (and those past the columns' end) never match a condition.
    assert not columns.mask(SceneFilter(acquired_from=0.0), 10**5)[len(slots) + 40:].any()


@pytest.mark.parametrize("strategy", ["scan", "mih"])
@pytest.mark.parametrize(("bits", "kind"), [(64, "random"), (48, "trained"), (100, "random")])
def test_filtered_search_equals_brute_force(strategy: str, bits: int, kind: str) -> None:
    n = 2000
    index, columns, items, meta_of, _, rng = filled(n, bits, bits, kind)
    queries = np.concatenate([random_codes(rng, 2, bits), items[next(iter(items))][0][None]])
    sizes = []
    for f in filters(rng, list(meta_of.values())):
        allowed = columns.mask(f, index.capacity)
        kept = {i: items[i] for i, m in meta_of.items() if matches(m, f)}
        sizes.append(len(kept))
        for k, radius, label in ((10, None, None), (n, None, None), (25, bits // 3, None), (15, None, 1),
                                 (40, bits // 2, 2)):
            got = index.search(queries, k, radius, label, strategy=strategy, allowed=allowed)  # type: ignore[arg-type]
            assert got == [reference(kept, q, bits, k, radius, label) for q in queries], (f, k, radius, label)
    assert min(sizes) <= 1 and max(sizes) == n  # nearly nothing and nearly everything were asked for


def test_k_beyond_the_matches_returns_every_match() -> None:
    index, columns, _, meta_of, _, rng = filled(500, 3, 32)
    times = sorted(m.acquired for m in meta_of.values() if m.acquired is not None)
    f = SceneFilter(acquired_from=times[-5])  # the five latest items
    allowed = columns.mask(f, index.capacity)
    expected = {i for i, m in meta_of.items() if matches(m, f)}
    assert len(expected) == 5
    for strategy in ("scan", "mih"):
        hits = index.search(random_codes(rng, 1, 32), 100, strategy=strategy, allowed=allowed)[0]  # type: ignore[arg-type]
        assert {i for i, _, _ in hits} == expected


def test_changes_to_the_columns_change_the_mask() -> None:
    """Replacing a slot's metadata moves it between postings; removing it drops it from every condition."""
    index, columns, _, meta_of, slots, rng = filled(1200, 5, 64)
    ids = list(meta_of)
    slot_of = dict(zip(ids, slots.tolist(), strict=True))
    f = SceneFilter(attributes={"level": "L1C"}, sensors=frozenset({"MSI"}))
    changed = ids[:400]
    for j, i in enumerate(changed):
        meta_of[i] = SceneMeta(sensor="MSI", attributes={"level": "L1C" if j % 2 else "L2A"})
    columns.put([slot_of[i] for i in changed], [meta_of[i] for i in changed])
    gone = ids[400:900]
    columns.remove([slot_of[i] for i in gone])
    for i in gone:
        meta_of[i] = SceneMeta()
    for g in [f, *filters(rng, [m for m in meta_of.values() if not m.is_empty])]:
        mask = columns.mask(g, index.capacity)
        assert {i for i in ids if mask[slot_of[i]]} == {i for i, m in meta_of.items() if matches(m, g)}, g


def test_auto_mode_probes_the_tables_with_a_wide_mask_and_scans_a_narrow_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The planner counts only allowed items: a mask passing most of a large shard may use MIH
    (same answer as the scan), one passing few is scanned."""
    monkeypatch.setattr(planner, "MIH_MIN_ITEMS", 1000)
    monkeypatch.setattr(planner, "_BUDGET_DIVISOR", 1)  # a small shard: let probes run to the end
    index, columns, items, meta_of, _, _ = filled(3000, 9, 64, "trained")
    index.build_multi_index()
    probes: list[int] = []
    real_probe = mih.probe
    monkeypatch.setattr(mih, "probe", lambda *a, **kw: probes.append(1) or real_probe(*a, **kw))
    queries = trained_like(np.random.default_rng(9), 4, 64)
    wide, narrow = SceneFilter(sensors=frozenset(SENSORS)), SceneFilter(sensors=frozenset({"SAR"}))
    for f, probed in ((wide, True), (narrow, False)):
        probes.clear()
        allowed = columns.mask(f, index.capacity)
        kept = {i: items[i] for i, m in meta_of.items() if matches(m, f)}
        got = index.search(queries, 10, allowed=allowed)
        assert got == [reference(kept, q, 64, 10) for q in queries]
        assert bool(probes) == probed, f
