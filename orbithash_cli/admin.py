"""``orbithash get | delete | info``: stored items by id, deleting them, and the cluster's state."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from orbithash_cli import INCOMPLETE, OK, UsageError
from orbithash_cli.scenes import format_place, format_time, metadata_json
from orbithash_cli.search import class_name
from orbithash_cli.table import format_table, printable
from orbithash_client import Info, OrbitHashClient, StoredItem

Connect = Callable[[str | None], OrbitHashClient]


def read_ids(args: argparse.Namespace) -> list[str]:
    """Ids from the command line, then from ``--ids-from FILE`` (one per line, ``-``: standard input)."""
    ids = list(args.ids or [])
    if args.ids_from:
        name = "standard input" if args.ids_from == "-" else args.ids_from
        try:
            data = sys.stdin.buffer.read() if args.ids_from == "-" else Path(args.ids_from).read_bytes()
            text = data.decode("utf-8")
        except OSError as exc:
            raise UsageError(f"--ids-from {name}: {exc.strerror or exc}") from exc
        except UnicodeDecodeError as exc:
            line = data[:exc.start].count(b"\n") + 1
            raise UsageError(f"--ids-from {name}: line {line} is not UTF-8 (byte {data[exc.start]:#04x}); "
                             "ids are UTF-8 text, one per line") from exc
        ids += [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise UsageError("give at least one id")
    return list(dict.fromkeys(ids))  # once each, first order kept


def item_json(item: StoredItem, info: Info) -> dict:
    return {"id": item.id, "label": item.label, "class_name": class_name(info, item.label) or None,
            "shard": item.shard, "code": item.code.hex(), **metadata_json(item.metadata)}


def get_command(args: argparse.Namespace, connect: Connect) -> int:
    ids = read_ids(args)
    client = connect(args.gateway)
    try:
        info = client.info()
        result = client.get(ids)
    finally:
        client.close()
    missing = list(result.missing)
    if args.json:
        print(json.dumps({"items": [item_json(i, info) for i in result.items], "missing": missing}, indent=2))
    else:
        rows = [[i.id, i.shard, class_name(info, i.label) or "(none)",
                 format_time(i.metadata.acquired if i.metadata else None), format_place(i.metadata),
                 (i.metadata.sensor or "") if i.metadata else "", (i.metadata.platform or "") if i.metadata else "",
                 ", ".join(f"{k}={v}" for k, v in sorted(i.metadata.attributes.items())) if i.metadata else ""]
                for i in result.items]
        if rows:
            print(format_table(["id", "shard", "class", "acquired", "place", "sensor", "platform", "attributes"],
                               rows, right=("shard",)))
        for item_id in missing:
            print(f"not stored: {printable(item_id)}", file=sys.stderr)
    return INCOMPLETE if missing else OK


def delete_command(args: argparse.Namespace, connect: Connect) -> int:
    ids = read_ids(args)
    if not args.yes and (not sys.stdin.isatty() or args.ids_from == "-"):
        raise UsageError(f"refusing to delete {len(ids)} item(s) without a terminal to confirm: add --yes")
    client = connect(args.gateway)
    try:
        if not args.yes:
            shown = ", ".join(map(printable, ids[:5])) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
            try:
                answer = input(f"delete {len(ids)} item(s) ({shown}) from {client.target}? [y/N] ")
            except EOFError:  # Ctrl-D: no answer is a no
                answer = ""
                print(file=sys.stderr)
            if answer.strip().lower() not in ("y", "yes"):
                print("nothing deleted", file=sys.stderr)
                return INCOMPLETE
        result = client.delete(ids)
    finally:
        client.close()
    deleted, missing = result.deleted, list(result.missing)
    if args.json:
        print(json.dumps({"deleted": deleted, "missing": missing}))
    else:
        print(f"deleted {deleted} item(s)" + (f"; {len(missing)} not stored: {', '.join(map(printable, missing[:10]))}"
                                                + (" …" if len(missing) > 10 else "") if missing else ""))
    return INCOMPLETE if missing else OK


def info_json(info: Info, address: str) -> dict:
    model = info.model
    return {"gateway": address,
            "model": {"name": model.name, "version": model.version, "bits": model.bits, "method": model.method,
                      "backbone": model.backbone, "input_size": model.input_size,
                      "class_names": list(model.class_names)},
            "shards": [{"shard": s.shard, "address": s.address, "count": s.count, "healthy": s.healthy}
                       for s in info.shards],
            "total": info.total, "healthy": all(s.healthy for s in info.shards)}


def info_command(args: argparse.Namespace, connect: Connect) -> int:
    client = connect(args.gateway)
    try:
        info = client.info()
        address = client.target
    finally:
        client.close()
    healthy = all(s.healthy for s in info.shards)
    if args.json:
        print(json.dumps(info_json(info, address), indent=2))
    else:
        print(f"gateway  {address}")
        model = info.model
        print(f"model    {model.name} version {model.version}, {model.bits} bits"
              + (f", {model.method}" if model.method else "") + (f" on {model.backbone}" if model.backbone else ""))
        print(f"classes  {len(model.class_names)}: {printable(', '.join(model.class_names))}")
        print(f"items    {info.total} in {len(info.shards)} shard(s)" + ("" if healthy else "  (NOT ALL HEALTHY)"))
        print(format_table(["shard", "address", "items", "health"],
                           [[s.shard, s.address, s.count, "ok" if s.healthy else "UNHEALTHY"] for s in info.shards],
                           right=("shard", "items")))
    return OK if healthy else INCOMPLETE
