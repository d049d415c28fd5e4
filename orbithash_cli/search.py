"""``orbithash search``: similar scenes for images, stored ids or codes, as a table, JSON or a mosaic.

All queries go through ``SearchMany`` (the client sends them in chunks) and share k, the radius,
the label and the filters. Hits carry their metadata, so the table shows when and where each
scene was taken. The mosaic's tiles come from the original files under ``--images-root`` when the
operator points at them (a folder or a zip; the id, less ``--id-prefix``, is the path inside it:
full detail), else from the server's thumbnails when it stores them, else a grey tile naming the id.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from orbithash_cli import INCOMPLETE, OK, UsageError
from orbithash_cli.mosaic import Tile, write
from orbithash_cli.scenes import ValueProblem, format_place, format_time, metadata_json, parse_box, parse_time
from orbithash_cli.table import format_table, printable
from orbithash_client import Filter, Info, OrbitHashClient, Query, SearchResult, StoredItem


@dataclass(frozen=True)
class Asked:
    """One query and how the operator named it (a file, an id, a code)."""

    name: str
    query: Query


def class_name(info: Info, label: int | None) -> str:
    names = info.model.class_names
    return names[label] if label is not None and 0 <= label < len(names) else ""


# -- reading the command line ----------------------------------------------------------------------

def parse_filter(args: argparse.Namespace) -> Filter | None:
    """The filter options as a client Filter; None when none is given."""
    try:
        attributes = {}
        for pair in args.attr or []:
            key, sep, value = pair.partition("=")
            if not sep or not key:
                raise ValueProblem(f"--attr {pair!r} is not key=value")
            attributes[key] = value
        given = Filter(
            acquired_from=parse_time(args.acquired_from) if args.acquired_from else None,
            acquired_until=parse_time(args.acquired_until) if args.acquired_until else None,
            intersects=parse_box(args.bbox) if args.bbox else None,
            center_within=parse_box(args.within) if args.within else None,
            sensors=tuple(args.sensor or ()),
            attributes=attributes,
        )
    except ValueProblem as exc:
        raise UsageError(str(exc)) from exc
    return None if given == Filter() else given


def read_queries(args: argparse.Namespace) -> list[Asked]:
    asked = []
    for name in args.images or []:
        try:
            asked.append(Asked(name, Query(image=Path(name).read_bytes())))
        except OSError as exc:
            raise UsageError(f"{name}: cannot read the query image ({exc.strerror or exc})") from exc
    asked += [Asked(item_id, Query(id=item_id)) for item_id in args.id or []]
    for text in args.code or []:
        try:
            code = bytes.fromhex(text.removeprefix("0x"))
        except ValueError as exc:
            raise UsageError(f"--code {text!r} is not hexadecimal") from exc
        asked.append(Asked(text, Query(code=code)))
    if not asked:
        raise UsageError("give query images, --id ID or --code HEX")
    return asked


def resolve_label(text: str | None, info: Info) -> int | None:
    """A class name of the served model, or its index."""
    if text is None:
        return None
    names = info.model.class_names
    if text in names:
        return names.index(text)
    try:
        index = int(text)  # "3", also "٣"; not "²", which isdigit() takes but int() does not
    except ValueError:
        index = -1
    if 0 <= index < len(names):
        return index
    raise UsageError(f"--label {text!r} is not a class of the served model; classes: {', '.join(names)}")


# -- output ----------------------------------------------------------------------------------------

def _predicted(result: SearchResult) -> tuple[str, float] | None:
    encoding = result.query
    if encoding is None:
        return None
    probabilities = encoding.probabilities
    return encoding.class_name, probabilities[encoding.label] if 0 <= encoding.label < len(probabilities) else 0.0


def result_json(asked: Asked, result: SearchResult, info: Info) -> dict:
    out: dict = {"query": asked.name, "partial": result.partial, "failed_shards": list(result.failed_shards)}
    if (predicted := _predicted(result)) is not None:
        out["predicted"] = {"label": result.query.label, "class_name": predicted[0],  # type: ignore[union-attr]
                            "probability": round(predicted[1], 6)}
    out["hits"] = [{"rank": rank, "id": hit.id, "distance": hit.distance, "score": hit.score, "label": hit.label,
                    "class_name": class_name(info, hit.label), "shard": hit.shard, **metadata_json(hit.metadata)}
                   for rank, hit in enumerate(result.hits, 1)]
    return out


def result_table(asked: Asked, result: SearchResult, info: Info, rerank: bool) -> str:
    head = f"query {printable(asked.name)}"
    if (predicted := _predicted(result)) is not None:
        head += f"  predicted {predicted[0]} ({predicted[1]:.2f})"
    if result.partial:
        head += f"  PARTIAL: shard(s) {', '.join(map(str, result.failed_shards))} did not answer"
    if not result.hits:
        return head + "\n  (no hits)"
    headers = ["rank", "id", "distance", *(["score"] if rerank else []), "class", "acquired", "place"]
    rows = [[rank, hit.id, hit.distance, *([f"{hit.score:.3f}" if hit.score is not None else ""] if rerank else []),
             class_name(info, hit.label), format_time(hit.metadata.acquired if hit.metadata else None),
             format_place(hit.metadata)]
            for rank, hit in enumerate(result.hits, 1)]
    return head + "\n" + format_table(headers, rows, right=("rank", "distance", "score"))


# -- mosaic ----------------------------------------------------------------------------------------

class ImageRoot:
    """Original images by id: ``root/<id less prefix>`` in a folder or a zip file (None: no originals)."""

    def __init__(self, root: Path | None, id_prefix: str = "") -> None:
        self.root = root
        self.id_prefix = id_prefix
        if root is not None and not root.exists():
            raise UsageError(f"--images-root {root}: no such folder or zip file")
        try:
            self._zip = zipfile.ZipFile(root) if root is not None and root.is_file() else None
        except (OSError, zipfile.BadZipFile) as exc:
            raise UsageError(f"--images-root {root}: neither a folder nor a readable zip file ({exc})") from exc

    def find(self, item_id: str) -> bytes | None:
        if self.root is None:
            return None
        rel = item_id.removeprefix(self.id_prefix)
        try:
            if self._zip is not None:
                return self._zip.read(rel)
            path = (self.root / rel).resolve()
            if self.root.resolve() not in path.parents:
                return None  # an id that climbs out of the root ("../…") finds nothing
            return path.read_bytes()
        except (OSError, KeyError):
            return None

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


def mosaic_rows(asked: Sequence[Asked], results: Sequence[SearchResult], info: Info, root: ImageRoot,
                stored: dict[str, StoredItem]) -> list[list[Tile]]:
    """Per query: its tile (the image sent; a stored item's original or thumbnail; grey for a code),
    then one tile per hit (the original under the root, else the server's thumbnail, else grey)."""
    rows = []
    for one, result in zip(asked, results, strict=True):
        predicted = _predicted(result)
        verdict = f"predicted {predicted[0]}" if predicted is not None else ""
        query = one.query
        if query.image is not None:
            picture, kind, name = query.image, "query image", Path(one.name).name
        elif query.id is not None:
            item = stored.get(query.id)
            picture = root.find(query.id) or (item.thumbnail if item is not None else None)
            kind, name = "query id", one.name
            verdict = verdict or (f"stored as {class_name(info, item.label)}" if item is not None else "")
        else:
            picture, kind, name = None, "query code", one.name
        row = [Tile(picture, (kind, name, verdict), name=one.name, cut_left=frozenset({1}))]
        for rank, hit in enumerate(result.hits, 1):
            row.append(Tile(root.find(hit.id) or hit.thumbnail,
                            (f"#{rank}  d={hit.distance}", class_name(info, hit.label) or "(no class)", hit.id),
                            name=hit.id))
        rows.append(row)
    return rows


def check_writable(path: Path) -> None:
    """Refuse a mosaic path that cannot be written before searching, not after the table is printed."""
    if path.is_dir():
        raise UsageError(f"--mosaic {path}: is a folder; give the PNG file to write")
    existing = path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent  # missing folders are created
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is not a folder" if not existing.is_dir() else "cannot be written"
        raise UsageError(f"--mosaic {path}: {existing} {why}")


# -- the command -----------------------------------------------------------------------------------

def command(args: argparse.Namespace, connect: Callable[[str | None], OrbitHashClient]) -> int:
    if args.k < 1:
        raise UsageError("-k must be at least 1")
    if args.radius is not None and args.radius < 0:
        raise UsageError("--radius must be at least 0")
    asked = read_queries(args)
    search_filter = parse_filter(args)
    if args.mosaic is not None:
        check_writable(Path(args.mosaic))
    root = ImageRoot(Path(args.images_root) if args.images_root else None, args.id_prefix or "")
    try:
        client = connect(args.gateway)
        try:
            info = client.info()
            results = client.search_many([a.query for a in asked], k=args.k, max_distance=args.radius,
                                         label=resolve_label(args.label, info), filter=search_filter,
                                         rerank=args.rerank, with_metadata=True,
                                         with_thumbnails=args.mosaic is not None)
            ids = [a.query.id for a in asked if a.query.id is not None]
            stored = client.get(ids, with_thumbnails=True).by_id() if args.mosaic is not None and ids else {}
        finally:
            client.close()
        if args.json:
            print(json.dumps({"model_version": results[0].model_version if results else info.model.version,
                              "results": [result_json(a, r, info) for a, r in zip(asked, results, strict=True)]},
                             indent=2))
        else:
            print("\n\n".join(result_table(a, r, info, args.rerank) for a, r in zip(asked, results, strict=True)))
        if args.mosaic is not None:
            rows = mosaic_rows(asked, results, info, root, stored)
            try:
                width, height = write(rows, Path(args.mosaic))
            except OSError as exc:
                raise UsageError(f"--mosaic {args.mosaic}: cannot be written ({exc.strerror or exc})") from exc
            print(f"mosaic {args.mosaic}: {len(rows)} row(s), {width}×{height} px", file=sys.stderr)
    finally:
        root.close()
    return INCOMPLETE if any(r.partial for r in results) else OK
