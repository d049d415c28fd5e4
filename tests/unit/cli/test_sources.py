"""Finding images: folders (recursive), zip files, globs, single files; ids relative to the root."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from unit.cli.cli_support import image_bytes, write_image

from orbithash_cli import UsageError
from orbithash_cli.sources import check_id, discover, glob_root, image_type


def _ids(found) -> list[str]:
    return [s.rel for s in found.sources]


def test_a_folder_is_walked_recursively_with_ids_relative_to_it(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    write_image(root / "forest" / "f1.png")
    write_image(root / "forest" / "deep" / "f2.JPG")
    write_image(root / "beach" / "b1.tif")
    write_image(root / "top.jpeg")
    (root / "notes.txt").write_text("not an image")
    write_image(root / ".hidden" / "h.png")
    write_image(root / ".h.png")
    found = discover([str(root)])
    assert _ids(found) == ["beach/b1.tif", "forest/deep/f2.JPG", "forest/f1.png", "top.jpeg"]
    assert found.ignored == 1 and not found.problems
    assert found.roots == [root]
    assert [s.folder for s in found.sources] == ["beach", "deep", "forest", None]
    assert found.sources[0].read() == (root / "beach" / "b1.tif").read_bytes()


def test_a_zip_file_gives_its_members_and_reads_them(tmp_path: Path) -> None:
    archive = tmp_path / "ucm.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("Images/farm/f01.jpg", image_bytes(kind="JPEG"))
        z.writestr("Images/farm/readme.txt", "x")
        z.writestr("__MACOSX/Images/farm/._f01.jpg", "junk")
        z.writestr("Images/port/p01.png", image_bytes())
    found = discover([str(archive)])
    try:
        assert _ids(found) == ["Images/farm/f01.jpg", "Images/port/p01.png"]
        assert found.sources[0].folder == "farm"
        assert found.sources[1].read() == image_bytes()
        assert found.sources[0].origin.endswith("ucm.zip:Images/farm/f01.jpg")
        assert found.roots == [archive]
    finally:
        found.close()


def test_a_glob_takes_its_fixed_part_as_the_root(tmp_path: Path) -> None:
    write_image(tmp_path / "d" / "2024-01" / "a1.png")
    write_image(tmp_path / "d" / "2024-02" / "a2.png")
    write_image(tmp_path / "d" / "2024-02" / "b1.png")
    write_image(tmp_path / "d" / "2023-12" / "a0.png")
    found = discover([str(tmp_path / "d" / "2024-*" / "a*.png")])
    assert _ids(found) == ["2024-01/a1.png", "2024-02/a2.png"]
    assert found.roots == [tmp_path / "d"]
    assert glob_root("x/y/*/z.tif") == Path("x/y") and glob_root("*.tif") == Path(".")
    folders = discover([str(tmp_path / "d" / "2024-*")])  # matched folders are walked under the pattern's root
    assert _ids(folders) == ["2024-01/a1.png", "2024-02/a2.png", "2024-02/b1.png"]
    assert discover([str(tmp_path / "nothing-*.png")]).sources == []


def test_a_single_file_is_its_name_and_other_files_are_problems(tmp_path: Path) -> None:
    image = write_image(tmp_path / "one.png")
    (tmp_path / "table.csv").write_text("id\n")
    found = discover([str(image), str(tmp_path / "table.csv")])
    assert _ids(found) == ["one.png"]
    assert [p.origin for p in found.problems] == [str(tmp_path / "table.csv")]
    assert "not a JPEG, PNG or TIFF" in found.problems[0].reason


def test_a_path_that_does_not_exist_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file or folder"):
        discover([str(tmp_path / "missing")])


def test_image_types_are_told_by_their_first_bytes() -> None:
    assert image_type(image_bytes(kind="PNG")) == "PNG"
    assert image_type(image_bytes(kind="JPEG")) == "JPEG"
    assert image_type(image_bytes(kind="TIFF")) == "TIFF"
    assert image_type(b"GIF89a....") is None and image_type(b"") is None


def test_ids_are_checked_as_the_gateway_would() -> None:
    assert check_id("a/b.png") is None
    assert "empty" in check_id("")
    assert "257 bytes" in check_id("x" * 257)
    assert check_id("é" * 128) is None and "258 bytes" in check_id("é" * 129)


def _discover_within(arguments: list[str], seconds: float = 10.0):
    """discover(), failing the test instead of hanging when a walk does not end."""
    import threading

    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(found=discover(arguments)), daemon=True)
    worker.start()
    worker.join(seconds)
    assert not worker.is_alive(), f"walking {arguments} did not end within {seconds} s"
    return out["found"]


def test_a_symbolic_link_loop_is_reported_and_not_followed(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    write_image(root / "loop" / "x.png")
    (root / "loop" / "again").symlink_to(".")  # loop/again/again/... is loop itself
    found = _discover_within([str(root)])
    assert _ids(found) == ["loop/x.png"]
    assert [p.origin for p in found.problems] == [str(root / "loop" / "again")]
    assert "loop" in found.problems[0].reason and "not followed" in found.problems[0].reason


def test_two_links_to_their_own_folder_end_too(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    write_image(root / "x.png")
    (root / "l1").symlink_to(".")
    (root / "l2").symlink_to(".")
    found = _discover_within([str(root)])
    assert _ids(found) == ["x.png"]
    assert sorted(p.origin for p in found.problems) == [str(root / "l1"), str(root / "l2")]


def test_a_folder_linked_twice_gives_its_images_once(tmp_path: Path) -> None:
    root = tmp_path / "scenes"
    write_image(root / "a" / "x.png")
    (root / "b").symlink_to("a")
    (root / "y.png").symlink_to(root / "a" / "x.png")
    found = _discover_within([str(root)])
    assert _ids(found) == ["a/x.png"] and not found.problems


def test_an_unreadable_subfolder_is_a_problem_naming_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    root = tmp_path / "scenes"
    write_image(root / "ok" / "a.png")
    write_image(root / "locked" / "b.png")
    real_scandir = os.scandir

    def scandir(path):  # as root, chmod 000 does not stop reading: the refusal is simulated
        if Path(path) == root / "locked":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    found = discover([str(root)])
    assert _ids(found) == ["ok/a.png"]
    assert [p.origin for p in found.problems] == [str(root / "locked")]
    assert "Permission denied" in found.problems[0].reason


def test_a_recursive_glob_takes_each_file_once(tmp_path: Path) -> None:
    write_image(tmp_path / "scenes" / "top.png")
    write_image(tmp_path / "scenes" / "2024" / "a.png")
    write_image(tmp_path / "scenes" / "2024" / "deep" / "b.png")
    found = discover([str(tmp_path / "scenes" / "**")])
    assert _ids(found) == ["2024/a.png", "2024/deep/b.png", "top.png"] and not found.problems
    archive = tmp_path / "z.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("m.png", image_bytes())
    twice = discover([str(archive), str(archive)])
    assert _ids(twice) == ["m.png"] and not twice.problems
    twice.close()
