"""A picture of search answers: one row per query, the query's tile first, then its hits in rank order.

Each tile is the image scaled to fill a square (aspect kept, centred), or a grey square naming the
item when there is no picture; under it a caption of up to three lines (rank and distance, class
name, id). A gap and a coloured frame set the query apart from its hits. Pillow only.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

BACKGROUND = (255, 255, 255)
PLACEHOLDER = (150, 150, 150)
TEXT = (20, 20, 20)
QUERY_FRAME = (30, 90, 200)
TILE_BACKGROUND = (235, 235, 235)


@dataclass(frozen=True)
class Tile:
    picture: bytes | None   # image bytes (JPEG, PNG, TIFF); None: a grey tile
    caption: tuple[str, ...]
    name: str = ""          # written on the grey tile
    cut_left: frozenset[int] = frozenset({2})  # caption lines too long lose their start (ids, paths), not their end


@dataclass(frozen=True)
class Geometry:
    tile: int = 160
    pad: int = 8
    gap: int = 16           # extra space between the query and its first hit
    line_height: int = 15
    caption_lines: int = 3
    frame: int = 3

    @property
    def cell_height(self) -> int:
        return self.tile + self.frame + 2 + self.caption_lines * self.line_height

    def x(self, column: int) -> int:
        return self.pad + column * (self.tile + self.pad) + (self.gap if column else 0)

    def y(self, row: int) -> int:
        return self.pad + row * (self.cell_height + self.pad)

    def picture_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        x, y = self.x(column), self.y(row)
        return (x, y, x + self.tile, y + self.tile)

    def caption_box(self, row: int, column: int) -> tuple[int, int, int, int]:
        x, y = self.x(column), self.y(row) + self.tile + self.frame + 2
        return (x, y, x + self.tile, y + self.caption_lines * self.line_height)

    def size(self, rows: int, columns: int) -> tuple[int, int]:
        return (self.x(columns - 1) + self.tile + self.pad, self.y(rows))


@cache
def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow without FreeType: the fixed bitmap font
        return ImageFont.load_default()


def picture(data: bytes | None, side: int) -> Image.Image | None:
    """The image scaled up or down to fit ``side``×``side`` (aspect kept), or None when it cannot be decoded."""
    if not data:
        return None
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (side, side))
            image = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError):
        return None
    scale = side / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC)


def _fit(draw: ImageDraw.ImageDraw, text: str, width: int, font, from_left: bool = False) -> str:
    """``text`` shortened with an ellipsis to fit ``width``: its end is cut, or its start (``from_left``)."""
    if draw.textlength(text, font=font) <= width:
        return text
    if from_left:
        while text and draw.textlength("…" + text, font=font) > width:
            text = text[1:]
        return "…" + text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


def _wrap(draw: ImageDraw.ImageDraw, text: str, width: int, font, lines: int) -> list[str]:
    out, line = [], ""
    for char in text:
        if draw.textlength(line + char, font=font) > width:
            out.append(line)
            line = ""
        line += char
    out.append(line)
    return out[:lines]


def render(rows: Sequence[Sequence[Tile]], geometry: Geometry = Geometry()) -> Image.Image:
    """The mosaic: ``rows[i][0]`` is query i, ``rows[i][1:]`` its hits."""
    columns = max((len(r) for r in rows), default=1)
    canvas = Image.new("RGB", geometry.size(max(len(rows), 1), max(columns, 1)), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font(12)
    g = geometry
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            x0, y0, x1, y1 = g.picture_box(r, c)
            image = picture(tile.picture, g.tile)
            if image is None:
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=PLACEHOLDER)
                lines = _wrap(draw, tile.name or "(no picture)", g.tile - 12, font, 6)
                top = y0 + (g.tile - len(lines) * g.line_height) // 2
                for i, text in enumerate(lines):
                    draw.text((x0 + 6, top + i * g.line_height), text, fill=TEXT, font=font)
            else:
                draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=TILE_BACKGROUND)
                canvas.paste(image, (x0 + (g.tile - image.width) // 2, y0 + (g.tile - image.height) // 2))
            if c == 0:
                draw.rectangle((x0 - g.frame, y0 - g.frame, x1 - 1 + g.frame, y1 - 1 + g.frame),
                               outline=QUERY_FRAME, width=g.frame)
            cx0, cy0, _, _ = g.caption_box(r, c)
            for i, text in enumerate(tile.caption[:g.caption_lines]):
                draw.text((cx0, cy0 + i * g.line_height), _fit(draw, text, g.tile, font, i in tile.cut_left),
                          fill=TEXT, font=font)
    return canvas


def write(rows: Sequence[Sequence[Tile]], path: Path, geometry: Geometry = Geometry()) -> tuple[int, int]:
    """Render and save as PNG; the picture's size."""
    image = render(rows, geometry)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, format="PNG")
    return image.size
