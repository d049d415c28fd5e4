"""`orbithash ingest` meets malformed and hostile files: each is named and skipped, the rest is stored."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest
from unit.cli.cli_support import FakeClient, image_bytes, write_image
from unit.cli.test_geotags import WGS84, tiff_with


def _jpeg_with_exif(when: str, offset: str) -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif.get_ifd(0x8769).update({36867: when, 36881: offset})
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="JPEG", exif=exif)
    return buffer.getvalue()


def _zip_with_bad_members(path: Path) -> None:
    """good.png, crc.png (a byte flipped: bad CRC) and locked.png (marked encrypted)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name in ("crc.png", "good.png", "locked.png"):
            z.writestr(name, image_bytes())
    data = bytearray(path.read_bytes())
    data[data.find(b"IHDR") + 20] ^= 0xFF  # inside crc.png, the first member
    for signature, flags_at in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        at = -1
        for _ in range(3):  # the third local header and the third central entry: locked.png
            at = data.find(signature, at + 1)
        data[at + flags_at] |= 0x01
    path.write_bytes(bytes(data))


def test_each_hostile_image_is_named_and_skipped_and_a_rerun_finishes(tmp_path: Path, client: FakeClient, run,
                                                                      capsys: pytest.CaptureFixture,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import Image

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 300)  # 16×16 passes; 32×32 is over twice that: a "bomb"
    root = tmp_path / "scenes"
    for n in range(3):
        write_image(root / f"ok{n}.png", (n * 50, 9, 9))
    (root / "tiepoint.tif").write_bytes(tiff_with([(33922, "d", 3, (0.0, 0.0, 0.0), True),  # 3 values, not 6
                                                    (33550, "d", 3, (0.01, 0.01, 0), True),
                                                    (34735, "H", len(WGS84), WGS84, True)]))
    (root / "bomb.png").write_bytes(image_bytes(size=32))
    (root / "year1.jpg").write_bytes(_jpeg_with_exif("0001:01:01 00:00:00", "+01:00"))
    archive = tmp_path / "more.zip"
    _zip_with_bad_members(archive)
    argv = ["ingest", str(root), str(archive), "--batch", "2", "--streams", "1", "--quiet", "--json"]
    assert run(*argv) == 1
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    reasons = {p["file"].rsplit("/", 1)[-1]: p["reason"] for p in summary["problems"]}
    assert reasons.keys() == {"bomb.png", "more.zip:crc.png", "more.zip:locked.png"}
    assert "decompression bomb" in reasons["bomb.png"]
    assert "CRC" in reasons["more.zip:crc.png"] and "encrypted" in reasons["more.zip:locked.png"]
    assert sorted(client.stored) == ["good.png", "ok0.png", "ok1.png", "ok2.png", "tiepoint.tif", "year1.jpg"]
    assert client.stored["year1.jpg"].metadata is None  # its impossible time is left out, the image sent
    assert summary["stopped"] == "" and summary["not_sent"] == 0

    client.calls.clear()
    assert run(*argv) == 1  # the rerun sends only the bad ones again and finishes too
    again = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert again["skipped_journaled"] == 6 and again["failed"] == 3 and again["stopped"] == ""


def test_a_file_name_that_is_not_utf8_is_shown_escaped_on_a_strict_terminal(tmp_path: Path, client: FakeClient,
                                                                            run,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import sys

    root = tmp_path / "scenes"
    write_image(root / "ok.png")
    write_image(root / os.fsdecode(b"bad-\xff\x1b[2J.png"))  # its name cannot be an id: reported
    streams = {name: io.TextIOWrapper(io.BytesIO(), encoding="utf-8", errors="strict", write_through=True)
               for name in ("stdout", "stderr")}  # PYTHONIOENCODING=utf-8:strict
    for name, stream in streams.items():
        monkeypatch.setattr(sys, name, stream)
    assert run("ingest", str(root)) == 1
    shown = {name: stream.buffer.getvalue().decode() for name, stream in streams.items()}
    assert "bad-\\udcff\\x1b[2J.png: the id is not valid UTF-8" in shown["stdout"]
    assert "\x1b" not in shown["stdout"] + shown["stderr"]
    assert sorted(client.stored) == ["ok.png"]
