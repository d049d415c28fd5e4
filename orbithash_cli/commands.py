"""The operator commands' arguments and their dispatch; standard library only.

``add_commands`` registers ``ingest``, ``search``, ``get``, ``delete``, ``info`` and ``loadtest`` on a subparsers
object (the ``orbithash`` command's, or ``python -m orbithash_cli``'s). Each command's module, and
with it the gRPC client, Pillow and tqdm, is imported only when that command runs.

The gateway is ``--gateway HOST:PORT``, else ``$ORBITHASH_GATEWAY``, else the gateway of the
cluster ``orbithash up`` runs from the current folder (``runs/cluster/cluster.json``). TLS and the
bearer token come the same way: ``--tls-ca``/``--token-file`` (and ``--tls-cert``/``--tls-key``),
else ``$ORBITHASH_TLS_CA``/``$ORBITHASH_TOKEN``/..., else that cluster's own CA and admin token.
A token is never taken from the command line itself (it would show in ``ps`` and shell history).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

from orbithash_cli import INTERRUPTED, OK, CliError, UsageError

GATEWAY_ENV = "ORBITHASH_GATEWAY"
TOKEN_ENV = "ORBITHASH_TOKEN"
TLS_ENV = {"tls_ca": "ORBITHASH_TLS_CA", "tls_cert": "ORBITHASH_TLS_CERT", "tls_key": "ORBITHASH_TLS_KEY"}
_NEGATIVE_NUMBERS = re.compile(r"^-\d*\.?\d+(,-?\d*\.?\d+)*$")  # -5, -0.5, -120,30,-110,40
CLUSTER_STATE = Path("runs") / "cluster" / "cluster.json"  # where `orbithash up` records its endpoints

EXIT_CODES = """exit codes: 0 everything done; 1 done except what was reported (files skipped, ids not
found, a partial answer, an unhealthy shard) or the gateway failed; 2 usage error: the command line or
an input file is wrong, or the gateway refused the request as it is (nothing changed); 3 the gateway
cannot be reached; 130 interrupted (Ctrl-C)"""


def resolve_gateway(given: str | None) -> str:
    if given:
        return given
    if os.environ.get(GATEWAY_ENV):
        return os.environ[GATEWAY_ENV]
    if CLUSTER_STATE.is_file():
        try:
            return str(json.loads(CLUSTER_STATE.read_text())["endpoints"]["gateway"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    raise UsageError(f"which gateway? give --gateway HOST:PORT or set ${GATEWAY_ENV} (no cluster recorded in "
                     f"{CLUSTER_STATE} under this folder: start one here with `orbithash up`, or run this command "
                     "from the folder where it runs)")


def _cluster_security() -> dict[str, str]:
    """The CA and admin token file `orbithash up --tls` recorded for this folder's cluster."""
    try:
        recorded = json.loads(CLUSTER_STATE.read_text()).get("security") or {}
    except (OSError, ValueError, AttributeError):
        return {}
    return {k: str(v) for k, v in recorded.items() if k in ("tls_ca", "token_file") and v}


def security_options(args: argparse.Namespace) -> dict[str, str | None]:
    """Keyword arguments of OrbitHashClient for TLS and the token: flags, then environment, then the
    local cluster's record (only when the gateway itself comes from there)."""
    from_cluster = (_cluster_security() if not getattr(args, "gateway", None) and not os.environ.get(GATEWAY_ENV)
                    else {})
    options: dict[str, str | None] = {}
    for name, env in TLS_ENV.items():
        options[name] = getattr(args, name, None) or os.environ.get(env) or from_cluster.get(name)
    token_file = getattr(args, "token_file", None) or (
        None if os.environ.get(TOKEN_ENV) else from_cluster.get("token_file"))
    if token_file:
        try:
            options["token"] = Path(token_file).read_text().strip()
        except OSError as exc:
            raise UsageError(f"cannot read the token file {token_file}: {exc.strerror}") from exc
    else:
        options["token"] = os.environ.get(TOKEN_ENV) or None
    return options


def connect(address: str | None, **security: str | None):  # -> orbithash_client.OrbitHashClient
    from orbithash_cli.remote import connect as remote_connect

    return remote_connect(resolve_gateway(address), **security)


def connector(args: argparse.Namespace) -> Callable[[str | None], object]:
    """``connect(address)`` for a command: a client of that gateway with this run's TLS and token."""
    return lambda address: connect(address, **security_options(args))


def _runner(module: str, function: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        command = getattr(importlib.import_module(f"orbithash_cli.{module}"), function)
        from orbithash_cli.remote import cli_error
        from orbithash_cli.table import printable
        from orbithash_client import OrbitHashClientError

        try:
            return int(command(args, connector(args)))
        except (CliError, OrbitHashClientError) as exc:
            error = cli_error(exc)
            shown = "\n".join(map(printable, str(error).split("\n")))  # a file's or id's escapes, not its bytes
            print(f"orbithash {args.command}: {shown}", file=sys.stderr)
            return error.exit_code
        except KeyboardInterrupt:
            print(f"orbithash {args.command}: interrupted", file=sys.stderr)
            return INTERRUPTED
        except BrokenPipeError:  # `orbithash search … | head`: the reader has what it wanted
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return OK

    return run


def _gateway_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gateway", metavar="HOST:PORT", default=None,
                   help=f"the gateway (default: ${GATEWAY_ENV}, else the one `orbithash up` runs from here)")
    _security_options(p)


class _NoTokenOnTheCommandLine(argparse.Action):
    def __call__(self, parser: argparse.ArgumentParser, namespace: object, values: object,
                 option_string: str | None = None) -> None:
        parser.error(f"a token is not taken on the command line (it would show in ps and shell history): "
                     f"put it in a file for --token-file, or in ${TOKEN_ENV}")


def _security_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tls-ca", metavar="PEM", default=None,
                   help=f"TLS: verify the gateway with this CA bundle (default ${TLS_ENV['tls_ca']})")
    p.add_argument("--tls-cert", metavar="PEM", default=None, help="client certificate, if the gateway asks for one")
    p.add_argument("--tls-key", metavar="PEM", default=None, help="key of --tls-cert")
    p.add_argument("--token-file", metavar="FILE", default=None,
                   help=f"file holding the bearer token (default: the token itself in ${TOKEN_ENV}, else the "
                        "admin token of the `orbithash up --tls` run from here)")
    p.add_argument("--token", action=_NoTokenOnTheCommandLine, help=argparse.SUPPRESS)


def _ids_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("ids", nargs="*", metavar="ID")
    p.add_argument("--ids-from", metavar="FILE", default=None, help="more ids, one per line ('-': standard input)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _gateway_option(p)


def add_commands(sub) -> None:  # sub: argparse._SubParsersAction
    formatter = argparse.RawDescriptionHelpFormatter

    ingest = sub.add_parser(
        "ingest", help="send images (folders, zip files, globs) to the gateway, resumably",
        formatter_class=formatter, epilog=EXIT_CODES + "\n\nids are paths relative to the root given (a folder, a "
        "zip file, or a glob's fixed part); see docs/ground-station.md")
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="folder (recursive), zip file, image, or glob pattern")
    _gateway_option(ingest)
    ingest.add_argument("--id-prefix", default="", help="put this before every id (e.g. 'station-a/')")
    ingest.add_argument("--labels-from-folders", action="store_true",
                        help="ImageFolder layout: an image's class is its folder's name, which must be a class of "
                             "the served model")
    ingest.add_argument("--metadata", action="append", type=Path, metavar="FILE",
                        help="scene metadata sidecar, .csv or .geojson (repeatable)")
    ingest.add_argument("--streams", type=int, default=4, help="concurrent ingest calls (default 4)")
    ingest.add_argument("--batch", type=int, default=16,
                        help="images per ingest call (default 16; fewer when they would exceed --batch-mb)")
    ingest.add_argument("--batch-mb", type=float, default=64.0,
                        help="megabytes of image files per ingest call (default 64; a larger file goes alone)")
    ingest.add_argument("--journal", type=Path, default=None,
                        help="journal of acknowledged ids (default: .orbithash-journal/ beside the first PATH)")
    ingest.add_argument("--restart", action="store_true", help="forget the journal and send everything again")
    ingest.add_argument("--on-error", choices=("skip", "fail"), default="skip",
                        help="a bad file: report it and go on (skip, default) or stop the run (fail)")
    ingest.add_argument("--retry-s", type=float, default=30.0,
                        help="keep retrying an unreachable gateway this many seconds (default 30)")
    ingest.add_argument("--timeout", type=float, default=120.0,
                        help="deadline of one ingest call, seconds (default 120)")
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.add_argument("--json", action="store_true", help="end with a JSON summary on standard output")
    ingest.set_defaults(func=_runner("ingest", "command"))

    search = sub.add_parser(
        "search", help="similar scenes for images, stored ids or codes; a table, JSON or a mosaic PNG",
        formatter_class=formatter, epilog=EXIT_CODES)
    search.add_argument("images", nargs="*", metavar="IMAGE", help="query images (JPEG, PNG, TIFF)")
    search.add_argument("--id", action="append", metavar="ID", help="query with a stored item's code (repeatable)")
    search.add_argument("--code", action="append", metavar="HEX", help="query with a packed code (repeatable)")
    search.add_argument("-k", type=int, default=10, help="hits per query (default 10)")
    search.add_argument("--radius", type=int, default=None, help="only hits within this Hamming distance")
    search.add_argument("--label", default=None, help="only hits of this class (name or index)")
    search.add_argument("--rerank", action="store_true", help="re-rank image queries by their real-valued output")
    search.add_argument("--from", dest="acquired_from", metavar="TIME", help="acquired at or after (ISO-8601)")
    search.add_argument("--until", dest="acquired_until", metavar="TIME", help="acquired before (ISO-8601)")
    search.add_argument("--bbox", metavar="W,S,E,N", help="footprint intersects this box (degrees)")
    search.add_argument("--within", metavar="W,S,E,N", help="centre inside this box (degrees)")
    search.add_argument("--sensor", action="append", help="sensor is one of these (repeatable)")
    search.add_argument("--attr", action="append", metavar="KEY=VALUE", help="attribute equals (repeatable)")
    search.add_argument("--json", action="store_true", help="print JSON instead of tables")
    search.add_argument("--mosaic", metavar="OUT.png", default=None,
                        help="also write a PNG: each query beside its hits, captioned")
    search.add_argument("--images-root", metavar="DIR|ZIP", default=None,
                        help="originals for the mosaic where the server stores no thumbnail (path = id)")
    search.add_argument("--id-prefix", default="", help="the --id-prefix the images were ingested with")
    _gateway_option(search)
    # West and south are negative: let "--bbox -120,30,-110,40" read "-120,…" as the value, not as an
    # option (argparse does that only for plain negative numbers; "--bbox=-120,…" always works).
    if hasattr(search, "_negative_number_matcher"):
        search._negative_number_matcher = _NEGATIVE_NUMBERS
    search.set_defaults(func=_runner("search", "command"))

    get = sub.add_parser("get", help="stored items by id: class, shard, metadata", epilog=EXIT_CODES)
    _ids_options(get)
    get.set_defaults(func=_runner("admin", "get_command"))

    delete = sub.add_parser("delete", help="delete stored items by id (asks first unless --yes)", epilog=EXIT_CODES)
    _ids_options(delete)
    delete.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    delete.set_defaults(func=_runner("admin", "delete_command"))

    info = sub.add_parser("info", help="the served model, shards, item counts and health", epilog=EXIT_CODES)
    info.add_argument("--json", action="store_true", help="print JSON")
    _gateway_option(info)
    info.set_defaults(func=_runner("admin", "info_command"))

    _add_loadtest(sub, formatter)


def describe_commands(sub) -> None:  # sub: argparse._SubParsersAction
    """Each command's one-line summary (its ``help`` in the list of commands) also heads its own ``--help``."""
    for summary in sub._choices_actions:
        command = sub.choices[summary.dest]
        command.description = command.description or summary.help


def _add_loadtest(sub, formatter) -> None:  # sub: argparse._SubParsersAction
    loadtest = sub.add_parser(
        "loadtest", help="a closed-loop load of searches and ingests: QPS, p50/p90/p99, errors by code",
        formatter_class=formatter, epilog="exit codes: 0 no request failed; 1 some failed (counted by status "
        "code); 2 usage error; 3 the gateway cannot be reached; 130 interrupted. See docs/end-to-end.md")
    loadtest.add_argument("--target", "--gateway", dest="gateway", metavar="HOST:PORT", default=None,
                          help=f"the gateway (default: ${GATEWAY_ENV}, else the one `orbithash up` runs from here)")
    _security_options(loadtest)
    loadtest.add_argument("--images", nargs="+", required=True, metavar="PATH",
                          help="query and ingest images: files, folders, zip files or globs (up to 256 are used)")
    loadtest.add_argument("--concurrency", "-c", type=int, default=4, help="worker threads, one client each (4)")
    length = loadtest.add_mutually_exclusive_group()
    length.add_argument("--duration", type=float, default=None, help="measured seconds (default 10)")
    length.add_argument("--requests", "-n", type=int, default=None, help="measured requests in all")
    loadtest.add_argument("--mix", default="search-image=6,search-id=2,search-code=1,ingest=1",
                          help="request kinds and weights: search-image, search-id, search-code, ingest "
                               "(default search-image=6,search-id=2,search-code=1,ingest=1)")
    loadtest.add_argument("--warmup", type=float, default=1.0, help="seconds of load sent but not recorded (1)")
    loadtest.add_argument("--timeout", type=float, default=10.0, help="deadline of each request, seconds (10)")
    loadtest.add_argument("--retries", type=int, default=0, help="client retries after UNAVAILABLE (0: count them)")
    loadtest.add_argument("-k", type=int, default=10, help="hits per search (10)")
    loadtest.add_argument("--ingest-batch", type=int, default=1, help="images per ingest request (1)")
    loadtest.add_argument("--id-prefix", default=None,
                          help="ids of what the run stores (default loadtest-<random>/)")
    loadtest.add_argument("--keep", action="store_true", help="do not delete what the run stored")
    loadtest.add_argument("--seed", type=int, default=0, help="seed of the request choices")
    loadtest.set_defaults(func=_runner("loadtest", "command"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m orbithash_cli",
                                     description="OrbitHash operator commands (docs/ground-station.md)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub)
    describe_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))
