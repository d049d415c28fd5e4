"""The mosaic's layout, checked on its pixels: one row per query, a tile per hit, captions under tiles."""

from __future__ import annotations

from pathlib import Path

from PIL import Image
from unit.cli.cli_support import image_bytes

from orbithash_cli.mosaic import BACKGROUND, PLACEHOLDER, QUERY_FRAME, TILE_BACKGROUND, Geometry, Tile, write

RED, GREEN, BLUE, YELLOW = (220, 20, 20), (20, 200, 20), (20, 20, 220), (230, 230, 20)


def _dark_pixels(image: Image.Image, box: tuple[int, int, int, int]) -> int:
    return sum(1 for p in image.crop(box).get_flattened_data() if sum(p) < 3 * 110)


def _only(image: Image.Image, box: tuple[int, int, int, int], color: tuple[int, int, int]) -> bool:
    return set(image.crop(box).get_flattened_data()) == {color}


def test_rows_tiles_pictures_placeholders_and_captions(tmp_path: Path) -> None:
    g = Geometry(tile=96)
    rows = [
        [Tile(image_bytes(RED, size=40), ("query image", "q1.png", "predicted beach")),
         Tile(image_bytes(GREEN, size=300, kind="JPEG"), ("#1  d=0", "beach", "a.png")),
         Tile(None, ("#2  d=3", "forest", "b.png"), name="b.png"),
         Tile(b"not an image", ("#3  d=5", "forest", "c.png"), name="c.png")],
        [Tile(None, ("query id", "x", ""), name="x"),
         Tile(image_bytes(BLUE, size=64), ("#1  d=1", "airplane", "d.png"))],
    ]
    out = tmp_path / "m.png"
    assert write(rows, out, g) == g.size(2, 4)
    image = Image.open(out).convert("RGB")
    assert image.size == g.size(2, 4)

    def inner(box: tuple[int, int, int, int], margin: int = 20) -> tuple[int, int, int, int]:
        return (box[0] + margin, box[1] + margin, box[2] - margin, box[3] - margin)

    # pictures, scaled to the tile (a small one grows, a large one shrinks), fill it
    assert _only(image, inner(g.picture_box(0, 0), 2), RED)
    green = image.getpixel((g.x(1) + 48, g.y(0) + 48))
    assert abs(green[0] - GREEN[0]) < 12 and abs(green[1] - GREEN[1]) < 12  # JPEG: nearly
    assert image.getpixel((g.x(1) + 48, g.y(1) + 48)) == BLUE
    # no picture, or one that cannot be decoded: a grey tile with its name written on it
    for row, column in ((0, 2), (0, 3), (1, 0)):
        x0, y0, x1, y1 = g.picture_box(row, column)
        assert image.getpixel((x0 + 2, y0 + 2)) == PLACEHOLDER and image.getpixel((x1 - 3, y1 - 3)) == PLACEHOLDER
        assert _dark_pixels(image, (x0, y0, x1, y1)) > 5
    # each tile's caption has its three lines of text; the missing fourth tile of row 2 is blank
    for row, columns in ((0, 4), (1, 2)):
        for column in range(columns):
            x0, y0, x1, _ = g.caption_box(row, column)
            for line in range(3 if (row, column) != (1, 0) else 2):
                top = y0 + line * g.line_height
                assert _dark_pixels(image, (x0, top, x1, top + g.line_height)) > 5, (row, column, line)
    assert _only(image, (g.x(2), g.y(1), g.x(3) + g.tile, g.y(1) + g.cell_height), BACKGROUND)
    # the query is framed, its hits are not
    assert image.getpixel((g.x(0) - 2, g.y(0) + 10)) == QUERY_FRAME
    assert image.getpixel((g.x(1) - 2, g.y(0) + 10)) == BACKGROUND
    assert g.x(1) - (g.x(0) + g.tile) == g.pad + g.gap  # the gap that sets the query apart


def test_a_picture_keeps_its_aspect_and_is_centred(tmp_path: Path) -> None:
    wide = Image.new("RGB", (200, 100), YELLOW)
    wide.save(tmp_path / "wide.png")
    g = Geometry(tile=100)
    size = write([[Tile((tmp_path / "wide.png").read_bytes(), ("q",))]], tmp_path / "m.png", g)
    assert size == g.size(1, 1)
    drawn = Image.open(tmp_path / "m.png").convert("RGB")
    x0, y0, _, y1 = g.picture_box(0, 0)
    assert drawn.getpixel((x0 + 50, y0 + 50)) == YELLOW            # 100×50 in the middle
    assert drawn.getpixel((x0 + 50, y0 + 10)) == TILE_BACKGROUND   # above it: the tile's own background
    assert drawn.getpixel((x0 + 50, y1 - 10)) == TILE_BACKGROUND


def test_long_captions_lose_their_end_or_for_ids_their_start() -> None:
    from PIL import ImageDraw

    from orbithash_cli.mosaic import _fit, _font

    draw = ImageDraw.Draw(Image.new("RGB", (10, 10)))
    font = _font(12)
    long_id = "UCMerced_LandUse/Images/harbor/harbor00.jpg"
    assert _fit(draw, "short", 160, font) == "short"
    tail = _fit(draw, long_id, 160, font, from_left=True)
    head = _fit(draw, long_id, 160, font)
    assert tail.startswith("…") and tail.endswith("harbor/harbor00.jpg") and draw.textlength(tail, font=font) <= 160
    assert head.endswith("…") and head.startswith("UCMerced")
