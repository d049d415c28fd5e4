"""Helpers for the operator commands' tests: a fake gateway client and small images
(importable as ``unit.cli.cli_support``: pytest puts ``tests/`` on the path)."""

from __future__ import annotations

import io
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from PIL import Image

from orbithash_client import (
    DeleteResult,
    Encoding,
    GetResult,
    Hit,
    Info,
    IngestSummary,
    InvalidArgument,
    Item,
    ModelInfo,
    Query,
    SearchResult,
    ShardInfo,
    StoredItem,
    Unavailable,
)

CLASSES = ("airplane", "beach", "forest")


def image_bytes(color: tuple[int, int, int] = (200, 30, 30), size: int = 16, kind: str = "PNG",
                exif_time: str | None = None) -> bytes:
    image = Image.new("RGB", (size, size), color)
    buffer = io.BytesIO()
    if exif_time is not None:
        exif = Image.Exif()
        exif.get_ifd(0x8769)[36867] = exif_time
        image.save(buffer, format=kind, exif=exif)
    else:
        image.save(buffer, format=kind)
    return buffer.getvalue()


def write_image(path: Path, color: tuple[int, int, int] = (200, 30, 30), kind: str | None = None, **kw) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    kinds = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
    kind = kind or kinds[path.suffix.lower()]
    path.write_bytes(image_bytes(color, kind=kind, **kw))
    return path


@dataclass
class FakeClient:
    """What the commands call on an OrbitHashClient, over a dict; failures on demand."""

    target: str = "fake:1"
    stored: dict[str, Item] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)      # ids whose images the "gateway" refuses
    unreachable: bool = False                          # every call fails with UNAVAILABLE
    fail_after: int | None = None                      # ingest calls that succeed before UNAVAILABLE
    results: list[SearchResult] | None = None          # what search_many answers
    calls: list[tuple[str, object]] = field(default_factory=list)
    thumbnails: dict[str, bytes] = field(default_factory=dict)
    closed: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def _check(self) -> None:
        if self.unreachable:
            raise Unavailable("failed to connect to all addresses", grpc.StatusCode.UNAVAILABLE)

    def info(self) -> Info:
        self._check()
        model = ModelInfo("orbithash", "v1", 32, CLASSES, 224, (0.0,) * 3, (1.0,) * 3, "dhcnn", "efficientnet-lite0")
        return Info(model, (ShardInfo(0, "s0", len(self.stored), True),), len(self.stored))

    def ingest(self, items: Iterable[Item], *, batch_size: int = 64, timeout: float | None = None) -> IngestSummary:
        items = list(items)
        with self._lock:
            self.calls.append(("ingest", [i.id for i in items]))
            self._check()
            if self.fail_after is not None:
                if self.fail_after <= 0:
                    raise Unavailable("connection reset", grpc.StatusCode.UNAVAILABLE)
                self.fail_after -= 1
            for position, item in enumerate(items):
                if item.id in self.refuse:
                    raise InvalidArgument(f"item {position} (id {item.id!r}): cannot decode the image",
                                          grpc.StatusCode.INVALID_ARGUMENT)
            replaced = sum(i.id in self.stored for i in items)
            self.stored.update({i.id: i for i in items})
        return IngestSummary(received=len(items), ingested=len(items), replaced=replaced, batches=1,
                             completed=len(items))

    def search_many(self, queries: Sequence[Query], **options) -> list[SearchResult]:
        self._check()
        self.calls.append(("search_many", (list(queries), options)))
        if self.results is not None:
            return self.results
        out = []
        for query in queries:
            encoding = Encoding(b"\0" * 4, (0.0,) * 32, (0.1, 0.8, 0.1), 1, "beach") if query.image else None
            hits = tuple(Hit(item_id, d, self.stored[item_id].label, 0,
                             metadata=self.stored[item_id].metadata if options.get("with_metadata") else None,
                             thumbnail=self.thumbnails.get(item_id) if options.get("with_thumbnails") else None)
                         for d, item_id in enumerate(sorted(self.stored)[:options["k"]]))
            out.append(SearchResult(hits, encoding, "v1"))
        return out

    def get(self, ids: Iterable[str], *, with_thumbnails: bool = False) -> GetResult:
        self._check()
        ids = list(ids)
        found = tuple(StoredItem(i, b"\xab" * 4, self.stored[i].label, 0, self.stored[i].metadata,
                                 self.thumbnails.get(i) if with_thumbnails else None) for i in ids if i in self.stored)
        return GetResult(found, tuple(i for i in ids if i not in self.stored))

    def delete(self, ids: Iterable[str]) -> DeleteResult:
        self._check()
        ids = list(ids)
        gone = [i for i in ids if self.stored.pop(i, None) is not None]
        return DeleteResult(len(gone), tuple(i for i in ids if i not in gone))

    def close(self) -> None:
        self.closed += 1
