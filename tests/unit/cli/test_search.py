"""`orbithash search` against a fake client: queries, filters, table, JSON, mosaic, exit codes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from PIL import Image
from unit.cli.cli_support import FakeClient, image_bytes, write_image

from orbithash_cli.mosaic import PLACEHOLDER, Geometry
from orbithash_client import BoundingBox, Filter, Hit, Item, Metadata, Query, SearchResult

RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)


def _stock(client: FakeClient) -> None:
    client.stored = {
        "a.png": Item("a.png", b"", 0, Metadata(acquired=datetime(2024, 5, 1, 10, tzinfo=UTC),
                                                center=(-118.25, 34.05))),
        "b.png": Item("b.png", b"", 1),
        "c.png": Item("c.png", b"", None),
    }


def test_an_image_query_prints_a_table_with_time_place_and_class(tmp_path: Path, client: FakeClient, run,
                                                                  capsys) -> None:
    query = write_image(tmp_path / "q.png")
    client.results = [SearchResult((Hit("a.png", 0, 0, 0, metadata=Metadata(
        acquired=datetime(2024, 5, 1, 10, tzinfo=UTC), center=(-118.25, 34.05))), Hit("b.png", 3, 1, 1),
        Hit("c.png", 7, None, 0)), FakeClient().search_many([Query(image=b"x")], k=1)[0].query, "v1")]
    assert run("search", str(query), "-k", "3") == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"query {query}  predicted beach (0.80)"
    assert lines[1].split() == ["rank", "id", "distance", "class", "acquired", "place"]
    assert lines[3].split() == ["1", "a.png", "0", "airplane", "2024-05-01T10:00:00Z", "34.0500N", "118.2500W"]
    assert lines[4].split() == ["2", "b.png", "3", "beach"] and lines[5].split() == ["3", "c.png", "7"]
    (queries, options), = [c[1] for c in client.calls if c[0] == "search_many"]
    assert queries == [Query(image=query.read_bytes())]
    assert options["k"] == 3 and options["with_metadata"] and not options["with_thumbnails"]
    assert options["filter"] is None and options["label"] is None


def test_filters_label_radius_and_json(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    _stock(client)
    assert run("search", "--id", "a.png", "--code", "0x00ff00ff", "-k", "2", "--radius", "4", "--label", "beach",
               "--from", "2024-01-01", "--until", "2024-06-01T00:00:00+02:00", "--bbox", "-120,30,-110,40",
               "--within", "170,-10,-170,10", "--sensor", "MSI", "--sensor", "OLI", "--attr", "orbit=12",
               "--rerank", "--json") == 0
    (queries, options), = [c[1] for c in client.calls if c[0] == "search_many"]
    assert queries == [Query(id="a.png"), Query(code=bytes.fromhex("00ff00ff"))]
    assert options["max_distance"] == 4 and options["label"] == 1 and options["rerank"]
    assert options["filter"] == Filter(acquired_from=datetime(2024, 1, 1, tzinfo=UTC),
                                       acquired_until=datetime(2024, 5, 31, 22, tzinfo=UTC),
                                       intersects=BoundingBox(-120, 30, -110, 40),
                                       center_within=BoundingBox(170, -10, -170, 10), sensors=("MSI", "OLI"),
                                       attributes={"orbit": "12"})
    document = json.loads(capsys.readouterr().out)
    first = document["results"][0]
    assert first["query"] == "a.png" and "predicted" not in first and not first["partial"]
    assert [h["id"] for h in first["hits"]] == ["a.png", "b.png"] and first["hits"][0]["class_name"] == "airplane"
    assert first["hits"][0]["acquired"] == "2024-05-01T10:00:00Z" and first["hits"][0]["center"] == [-118.25, 34.05]
    assert document["results"][1]["query"] == "0x00ff00ff"


def test_usage_errors(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    assert run("search") == 2
    assert run("search", "--id", "a", "--bbox", "1,2,3") == 2
    assert "not a box W,S,E,N" in capsys.readouterr().err
    assert run("search", "--id", "a", "--from", "last tuesday") == 2
    assert run("search", "--code", "xyz") == 2
    assert run("search", "--id", "a", "--attr", "novalue") == 2
    assert run("search", str(tmp_path / "missing.png")) == 2
    assert run("search", "--id", "a", "-k", "0") == 2
    assert run("search", "--id", "a", "--label", "volcano") == 2
    assert "classes: airplane, beach, forest" in capsys.readouterr().err
    assert [c for c in client.calls if c[0] == "search_many"] == []


def test_a_partial_answer_exits_1_and_says_so(tmp_path: Path, client: FakeClient, run, capsys) -> None:
    client.results = [SearchResult((Hit("a.png", 1, 0, 0),), None, "v1", partial=True, failed_shards=(1,))]
    assert run("search", "--id", "a.png") == 1
    assert "PARTIAL: shard(s) 1 did not answer" in capsys.readouterr().out
    client.unreachable = True
    assert run("search", "--id", "a.png") == 3


def test_the_mosaic_takes_thumbnails_then_originals_then_grey_tiles(tmp_path: Path, client: FakeClient, run,
                                                                     capsys) -> None:
    _stock(client)
    client.thumbnails = {"a.png": image_bytes(GREEN, size=32, kind="JPEG")}
    originals = tmp_path / "originals"
    write_image(originals / "b.png", BLUE)  # c.png has neither a thumbnail nor an original
    query = write_image(tmp_path / "q.png", RED)
    out = tmp_path / "out" / "m.png"
    assert run("search", str(query), "--id", "b.png", "-k", "3", "--mosaic", str(out), "--images-root",
               str(originals), "--id-prefix", "") == 0
    (_, options), = [c[1] for c in client.calls if c[0] == "search_many"]
    assert options["with_thumbnails"]
    g = Geometry()
    image = Image.open(out).convert("RGB")
    assert image.size == g.size(2, 4)  # two queries, each with 3 hits

    def middle(row: int, column: int) -> tuple[int, int, int]:
        x0, y0, x1, y1 = g.picture_box(row, column)
        return image.getpixel(((x0 + x1) // 2, (y0 + y1) // 2))

    def near(color, want) -> bool:
        return all(abs(a - b) < 16 for a, b in zip(color, want, strict=True))

    for row in (0, 1):
        assert near(middle(row, 1), GREEN)      # a.png: the server's thumbnail
        assert middle(row, 2) == BLUE           # b.png: the original under --images-root
        assert middle(row, 3) == PLACEHOLDER or sum(middle(row, 3)) < 3 * 150  # c.png: grey, its id written
        x0, y0, _, _ = g.picture_box(row, 3)
        assert image.getpixel((x0 + 2, y0 + 2)) == PLACEHOLDER
    assert middle(0, 0) == RED                  # the query image itself
    assert middle(1, 0) == BLUE                 # the query by id: its original
    assert "mosaic" in capsys.readouterr().err


def test_an_images_root_can_be_a_zip_and_ids_cannot_climb_out(tmp_path: Path) -> None:
    import zipfile

    from orbithash_cli.search import ImageRoot

    archive = tmp_path / "o.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("farm/f.png", b"png")
    root = ImageRoot(archive, "gs1/")
    assert root.find("gs1/farm/f.png") == b"png" and root.find("gs1/none.png") is None
    root.close()
    (tmp_path / "secret.png").write_bytes(b"s")
    (tmp_path / "r").mkdir()
    assert ImageRoot(tmp_path / "r").find("../secret.png") is None
    assert ImageRoot(None).find("a") is None


def test_a_time_filter_outside_the_calendar_is_a_usage_error(client: FakeClient, run, capsys) -> None:
    assert run("search", "--id", "a", "--from", "0001-01-01T00:30:00+01:00") == 2
    assert "outside the years 1..9999" in capsys.readouterr().err


def test_a_label_of_digits_int_cannot_read_is_a_usage_error(client: FakeClient, run, capsys) -> None:
    assert run("search", "--id", "a", "--label", "²") == 2
    assert "classes: airplane" in capsys.readouterr().err
    client.stored = {"a": Item("a", b"", 0)}
    assert run("search", "--id", "a", "--label", "١") == 0  # an Arabic-Indic 1: the class index 1
    (_, options), = [c[1] for c in client.calls if c[0] == "search_many"]
    assert options["label"] == 1


def test_a_mosaic_that_cannot_be_written_is_refused_before_searching(tmp_path: Path, client: FakeClient, run,
                                                                    capsys) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert run("search", "--id", "a", "--mosaic", str(blocker / "dir" / "out.png")) == 2
    assert f"--mosaic {blocker / 'dir' / 'out.png'}" in capsys.readouterr().err
    assert run("search", "--id", "a", "--mosaic", str(tmp_path)) == 2  # a folder, not a file
    assert [c for c in client.calls if c[0] == "search_many"] == []
