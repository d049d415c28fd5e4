"""The ``orbithash`` command: demo, up, down, token, train, evaluate; ingest, search, get, delete, info, loadtest."""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

DEFAULT_REPO = Path("model_repository")
DEFAULT_WORK = Path("runs") / "cluster"
DEFAULT_CHECKPOINTS = Path("runs") / "checkpoints"
DEFAULT_EVAL = Path("runs") / "evaluate"
DEFAULT_TOKENS = DEFAULT_WORK / "secrets" / "tokens.json"  # what `orbithash up --tls` writes
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
DESCRIPTION = ("OrbitHash: deep-hashing retrieval of remote-sensing scenes on a gRPC cluster. Run the cluster: up, "
               "down, token, demo; the model: train, evaluate; talk to a running cluster: ingest, search, get, "
               "delete, info, loadtest. `orbithash COMMAND --help` for each; README.md and docs/ground-station.md "
               "walk through them.")


def _demo(args: argparse.Namespace) -> int:
    from orbithash_local.demo import run_demo

    report = run_demo(args.data, args.model_repository, bits=args.bits, shards=args.shards,
                      use_triton=not args.embedded, retrain=args.retrain, max_queries=args.queries, tls=args.tls)
    print(f"dataset {report.dataset}: {report.database} database images, {report.queries} queries, "
          f"{report.bits} bits")
    print(f"mAP {report.map:.4f}  accuracy {report.accuracy:.4f}  "
          f"latency p50 {report.p50_ms:.1f} ms  p99 {report.p99_ms:.1f} ms")
    print(report.json_line())
    return 0


def exposure_warning(host: str, port: int | str, tls: bool = False) -> str | None:
    """What to tell the operator when the gateway serves beyond loopback without TLS and tokens, or
    None (loopback, or ``--tls``)."""
    if tls:
        return None
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to anything
        loopback = False
    if loopback:
        return None
    where = "every interface" if host in ("0.0.0.0", "") else host
    return (f"WARNING: the gateway listens on {where} (port {port}) WITHOUT TLS and WITHOUT client tokens: "
            "anyone who can reach that port can search, ingest and delete items, and sees the traffic in the "
            "clear. Start it with `orbithash up --tls` (TLS on every hop, tokens with roles), or use it only on "
            "a trusted network.")


def _up(args: argparse.Namespace) -> int:
    from orbithash.model_facts import ModelFactsError
    from orbithash_local.cluster import Cluster, ClusterConfig

    config = ClusterConfig(model_repository=args.model_repository, work_dir=args.work_dir, shards=args.shards,
                           use_triton=not args.embedded, gateway_port=args.port, gateway_host=args.host,
                           supervise=True, metrics_port=args.metrics_port, tls=args.tls)
    try:
        cluster = Cluster(config)  # reads the exported model's facts; starts nothing yet
    except ModelFactsError as exc:
        print(f"orbithash up: no usable exported model in {args.model_repository} ({exc}). Give "
              "--model-repository the repository's model_repository/ folder, or make one with `orbithash train`",
              file=sys.stderr)
        return 2
    (args.work_dir / "logs").mkdir(parents=True, exist_ok=True)
    launcher_log = logging.FileHandler(args.work_dir / "logs" / "launcher.log")
    launcher_log.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.getLogger().addHandler(launcher_log)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with cluster:
        endpoints = cluster.endpoints()
        print(json.dumps(endpoints, indent=2))
        warning = exposure_warning(args.host, str(endpoints["gateway"]).rsplit(":", 1)[1], args.tls)
        if warning:
            logging.getLogger("orbithash.cluster").warning(warning)
            print(warning, file=sys.stderr, flush=True)
        print(f"OrbitHash is up: gateway on {endpoints.get('gateway_bind', endpoints['gateway'])}"
              + (" (NO TLS, NO TOKENS: see the warning above)" if warning else "")
              + (f". TLS on every hop; CA {cluster.security.ca}, tokens in {cluster.security.tokens_file.parent}"
                 if cluster.security else "")
              + ". Ctrl-C or `orbithash down` stops it.", flush=True)
        stop.wait()
        print("stopping…", flush=True)
    return 0


def _token(args: argparse.Namespace) -> int:
    """Create, list or revoke bearer tokens in a gateway's token file (it re-reads the file itself)."""
    import datetime as dt

    from orbithash_local.security import add_token, revoke_token
    from orbithash_serving.access import Role, parse_token_file

    path: Path = args.file
    if args.action in ("create", "revoke") and not args.name:
        print(f"orbithash token {args.action}: --name is required (who holds the token)", file=sys.stderr)
        return 2
    # A new file only where asked for by --file, in a folder that exists: the default is the one
    # `orbithash up --tls` made here, and a token in a file no gateway reads would do nothing.
    if not path.exists() and (args.action != "create" or path == DEFAULT_TOKENS or not path.parent.is_dir()):
        print(f"orbithash token {args.action}: no token file at {path}: `orbithash up --tls` makes one in its "
              "--work-dir (run this from the folder it runs in), or give --file the gateway's tokens_file",
              file=sys.stderr)
        return 2
    if args.action == "create":
        expires = (dt.datetime.now(dt.UTC) + dt.timedelta(days=args.expires_days)) if args.expires_days else None
        token = add_token(path, args.name, Role.parse(args.role), expires)
        print(token)
        print(f"token {args.name!r} ({args.role}) added to {path}; it is shown only now: store it safely",
              file=sys.stderr)
    elif args.action == "revoke":
        removed = revoke_token(path, args.name)
        print(f"revoked {removed} token(s) named {args.name!r}" if removed else f"no token named {args.name!r}")
        return 0 if removed else 1
    else:
        for entry in parse_token_file(path.read_text()).values():
            expires = entry.expires.isoformat() if entry.expires else "never"
            print(f"{entry.name}\t{entry.role.label}\texpires {expires}\tsha256 {entry.sha256[:12]}…")
    return 0


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def _stop_orphans(state: dict) -> list[str]:
    """Children a launcher that died without stopping them left behind: stop each one whose pid still
    runs the recorded command line (so a reused pid is never touched), whole process group."""
    stopped = []
    for name, service in reversed(list(state.get("services", {}).items())):
        pid = service["pid"]
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        except OSError:
            continue
        if [c.decode(errors="replace") for c in cmdline] == service["argv"] and _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            stopped.append(name)
    return stopped


def _down(args: argparse.Namespace) -> int:
    from orbithash_local.cluster import STATE_FILE

    state_path = args.work_dir / STATE_FILE
    if not state_path.exists():
        print(f"no running cluster recorded in {state_path}")
        return 1
    state = json.loads(state_path.read_text())
    pid = state["pid"]
    if not _pid_alive(pid):
        stopped = _stop_orphans(state)
        state_path.unlink(missing_ok=True)
        print(f"cluster process {pid} was already gone" + (f"; stopped what it left: {', '.join(stopped)}"
                                                          if stopped else ""))
        return 1
    os.kill(pid, signal.SIGTERM)
    print(f"asked cluster process {pid} to stop", flush=True)
    deadline = time.monotonic() + args.timeout
    while _pid_alive(pid):
        if time.monotonic() > deadline:
            print(f"cluster process {pid} still runs after {args.timeout:.0f} s; see {state.get('log')}")
            return 1
        time.sleep(0.1)
    print("stopped")
    return 0


def _run_config(args: argparse.Namespace):  # -> TrainConfig (imported lazily: torch is slow to load)
    from dataclasses import replace

    from orbithash.training.config import TrainConfig, load_config

    config = load_config(args.config) if args.config else TrainConfig()
    config = config.with_overrides(dataset=str(args.data) if args.data else None, bits=args.bits,
                                   seed=args.seed, method=args.method)
    if args.epochs is not None:
        config = replace(config, head=replace(config.head, epochs=args.epochs),
                         scratch=replace(config.scratch, epochs=args.epochs))
    return config


def _train(args: argparse.Namespace) -> int:
    config = _run_config(args)
    checkpoint = args.checkpoint or (DEFAULT_CHECKPOINTS / f"{config.model_name}-{config.backbone}-{config.method}-"
                                     f"{config.bits}b-{config.protocol}-seed{config.seed}.pt")
    split = config.load_split()
    from orbithash.training.finetune import train
    from orbithash.training.result import export_trained

    if config.from_scratch:
        from orbithash.training.scratch import train_scratch

        result = train_scratch(split, backbone=config.backbone, bits=config.bits, seed=config.seed,
                               config=config.scratch, loss=config.make_loss(), method=config.method,
                               checkpoint=checkpoint, name=config.model_name)
    else:
        result = train(split, bits=config.bits, seed=config.seed, config=config.head, method=config.method,
                       loss=config.make_loss(), checkpoint=checkpoint)
    # The export also builds the faster variants (graph-optimised, static INT8), scores each on the
    # split and serves the fastest within 0.003 mAP of FP32 (orbithash.export.quantize); --fp32 skips that.
    facts = export_trained(result, args.model_repository, config.model_name, split=split, fp32=args.fp32)
    metrics = result.metrics
    print(json.dumps({"name": facts.name, "version": facts.version, "bits": facts.bits,
                      "classes": len(facts.class_names), "method": facts.method, "backbone": facts.backbone,
                      "protocol": config.protocol, "database": len(split.database),
                      "queries": len(split.queries), "training": len(split.training), **metrics}))
    return 0


def _evaluate_exported(args: argparse.Namespace) -> int:
    """Score the model that is exported (and served), encoding every image through it."""
    from orbithash.evaluation.evaluate import evaluate_exported, write_report
    from orbithash.export.repository import model_path

    config = _run_config(args)
    split = config.load_split()
    result, meta = evaluate_exported(model_path(args.model_repository, config.model_name), split)
    paths = write_report([result], args.out, {**meta, "protocol": config.protocol, "seed": config.seed})
    summary = {k: result[k] for k in ("method", "bits", "map", "map_tie_aware", "accuracy", "precision_radius_2")}
    print(json.dumps({**summary, "dataset": split.name, **{k: str(v) for k, v in paths.items()}}))
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    if args.exported:
        return _evaluate_exported(args)
    from orbithash.evaluation.evaluate import format_table, sweep, write_report
    from orbithash.training.features import backbone_facts, cached_features

    config = _run_config(args)
    split = config.load_split()
    methods = args.methods.split(",")
    bits_list = [int(b) for b in args.bits_list.split(",")]
    feats = cached_features(split, backbone_facts(split, max(bits_list)), config.head.views)
    results = sweep(feats, split.labels("database"), split.labels("queries"), len(split.class_names), methods,
                    bits_list, head_config=config.head, loss_params={config.method: config.loss}, seed=config.seed,
                    train_labels=split.labels("training"))
    meta = {"dataset": split.name, "protocol": config.protocol, "database": len(split.database),
            "queries": len(split.queries), "seed": config.seed, "backbone": config.backbone,
            "head": asdict(config.head), "ties": "database order (stable sort)"}
    paths = write_report(results, args.out, meta)
    print(format_table(results))
    print(format_table(results, "map_tie_aware"))
    print(json.dumps({k: str(v) for k, v in paths.items()}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orbithash", description=DESCRIPTION)
    parser.add_argument("--log-level", default="INFO",
                        help="DEBUG, INFO, WARNING or ERROR: what the cluster commands log (default INFO)")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model-repository", type=Path, default=DEFAULT_REPO,
                       help=f"the exported model Triton serves (`orbithash train` writes it; default {DEFAULT_REPO})")

    demo = sub.add_parser("demo", help="train or reuse a model, run the cluster, ingest, query, score")
    common(demo)
    demo.add_argument("--data", type=Path, default=None,
                      help="UC Merced (folder or zip), CIFAR-10 or any ImageFolder tree; "
                           "default: ../shared/data/ucmerced.zip, else scikit-learn digits")
    demo.add_argument("--bits", type=int, default=64, help="code length of the model trained if none matches (64)")
    demo.add_argument("--shards", type=int, default=2, help="index shards (2)")
    demo.add_argument("--queries", type=int, default=None, help="use only the first N queries")
    demo.add_argument("--embedded", action="store_true", help="in-process ONNX Runtime instead of Triton")
    demo.add_argument("--retrain", action="store_true", help="train even if a matching model is exported")
    demo.add_argument("--tls", action="store_true", help="the secure cluster: TLS on every hop, bearer tokens")
    demo.set_defaults(func=_demo)

    up = sub.add_parser("up", help="start the whole cluster on loopback, restarting children that exit, "
                                   "until Ctrl-C or `orbithash down`")
    common(up)
    up.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                    help=f"state, logs and Redis data, kept across restarts (default {DEFAULT_WORK}; the operator "
                         "commands find the cluster there when run from this folder)")
    up.add_argument("--shards", type=int, default=2, help="index shards (2)")
    up.add_argument("--port", type=int, default=0, help="gateway port (0: a free one)")
    up.add_argument("--host", default="127.0.0.1",
                    help="address the gateway binds (default loopback; 0.0.0.0: every interface). The other "
                         "services stay on loopback. Beyond loopback without --tls a warning says the "
                         "gateway has neither TLS nor tokens")
    up.add_argument("--tls", action="store_true",
                    help="TLS on every hop (mutual TLS inside), bearer tokens with roles on the gateway, Redis over "
                         "TLS: a local CA and tokens are made in --work-dir (docs/security.md)")
    up.add_argument("--embedded", action="store_true", help="in-process ONNX Runtime instead of Triton")
    up.add_argument("--metrics-port", type=int, default=0,
                    help="the launcher's own /metrics (restarts, children up) on loopback (0: a free one)")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop a cluster started by `orbithash up` and wait until it stopped")
    down.add_argument("--work-dir", type=Path, default=DEFAULT_WORK,
                      help=f"the --work-dir the cluster was started with (default {DEFAULT_WORK})")
    down.add_argument("--timeout", type=float, default=90.0, help="seconds to wait for the cluster to stop")
    down.set_defaults(func=_down)

    token = sub.add_parser("token", help="create, list or revoke the gateway's bearer tokens (stored hashed)")
    token.add_argument("action", choices=("create", "list", "revoke"))
    token.add_argument("--file", type=Path, default=DEFAULT_TOKENS,
                       help="the gateway's token file (its tokens_file setting; default: the one `orbithash up "
                            "--tls` made here)")
    token.add_argument("--name", help="who holds it (create, revoke), e.g. station-a")
    token.add_argument("--role", choices=("reader", "writer", "admin"), default="reader", help="create: its role")
    token.add_argument("--expires-days", type=float, default=None, help="create: valid for this many days")
    token.set_defaults(func=_token)

    def run_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", type=Path, default=None, help="training config (.yaml/.toml, see configs/)")
        p.add_argument("--data", type=Path, default=None, help="dataset zip or folder (overrides the config)")
        p.add_argument("--seed", type=int, default=None, help="random seed (overrides the config)")
        p.add_argument("--method", default=None, help="loss: dhcnn, dpsh, dsh, aurora (overrides the config)")
        p.add_argument("--epochs", type=int, default=None, help="head epochs (overrides the config)")

    train = sub.add_parser("train", help="train a model and export it to the model repository")
    common(train)
    run_options(train)
    train.add_argument("--bits", type=int, default=None, help="code length (overrides the config)")
    train.add_argument("--checkpoint", type=Path, default=None,
                       help=f"head checkpoint, resumed when it matches (default under {DEFAULT_CHECKPOINTS})")
    train.add_argument("--fp32", action="store_true",
                       help="serve the FP32 export as it is (default: also build the graph-optimised and INT8 "
                            "variants and serve the fastest within 0.003 mAP of FP32; minutes more)")
    train.set_defaults(func=_train)

    evaluate = sub.add_parser("evaluate", help="score methods × code lengths on the config's dataset")
    common(evaluate)
    run_options(evaluate)
    evaluate.add_argument("--exported", action="store_true",
                          help="score the exported model in --model-repository (what the encoder serves)")
    evaluate.set_defaults(bits=None)
    evaluate.add_argument("--methods", default="dhcnn,dpsh,dsh,itq,lsh",
                          help="comma-separated methods to score (default dhcnn,dpsh,dsh,itq,lsh)")
    evaluate.add_argument("--bits-list", default="16,32,48,64", help="comma-separated code lengths (16,32,48,64)")
    evaluate.add_argument("--out", type=Path, default=DEFAULT_EVAL, help="report.json and PNG plots go here")
    evaluate.set_defaults(func=_evaluate)

    # Operator commands (ingest, search, get, delete, info): their module holds only argument
    # definitions; the client, Pillow and tqdm are imported when one of them runs.
    from orbithash_cli.commands import add_commands, describe_commands

    add_commands(sub)
    describe_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format=LOG_FORMAT)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
