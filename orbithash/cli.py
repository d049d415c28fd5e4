"""The ``orbithash`` command: demo, up, down, train."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path

DEFAULT_REPO = Path("model_repository")
DEFAULT_WORK = Path("runs") / "cluster"


def _demo(args: argparse.Namespace) -> int:
    from orbithash.local.demo import run_demo

    report = run_demo(args.data, args.model_repository, bits=args.bits, shards=args.shards,
                      use_triton=not args.embedded, retrain=args.retrain, max_queries=args.queries)
    print(f"dataset {report.dataset}: {report.database} database images, {report.queries} queries, "
          f"{report.bits} bits")
    print(f"mAP {report.map:.4f}  accuracy {report.accuracy:.4f}  "
          f"latency p50 {report.p50_ms:.1f} ms  p99 {report.p99_ms:.1f} ms")
    print(report.json_line())
    return 0


def _up(args: argparse.Namespace) -> int:
    from orbithash.local.cluster import Cluster, ClusterConfig

    config = ClusterConfig(model_repository=args.model_repository, work_dir=args.work_dir, shards=args.shards,
                           use_triton=not args.embedded, gateway_port=args.port)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with Cluster(config) as cluster:
        print(json.dumps(cluster.endpoints(), indent=2))
        print(f"OrbitHash is up: gateway on {cluster.endpoints()['gateway']}. "
              "Ctrl-C or `orbithash down` stops it.", flush=True)
        stop.wait()
        print("stopping…", flush=True)
    return 0


def _down(args: argparse.Namespace) -> int:
    from orbithash.local.cluster import STATE_FILE

    state_path = args.work_dir / STATE_FILE
    if not state_path.exists():
        print(f"no running cluster recorded in {state_path}")
        return 1
    pid = json.loads(state_path.read_text())["pid"]
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        state_path.unlink()
        print(f"cluster process {pid} was already gone")
        return 1
    print(f"asked cluster process {pid} to stop")
    return 0


def _train(args: argparse.Namespace) -> int:
    from orbithash.data import load_split
    from orbithash.train import train_and_export

    split = load_split(args.data)
    facts = train_and_export(split, bits=args.bits, repo_dir=args.model_repository, seed=args.seed)
    print(json.dumps({"name": facts.name, "version": facts.version, "bits": facts.bits,
                      "classes": len(facts.class_names)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orbithash", description=__doc__)
    parser.add_argument("--log-level", default="INFO")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--model-repository", type=Path, default=DEFAULT_REPO)

    demo = sub.add_parser("demo", help="train or reuse a model, run the cluster, ingest, query, score")
    common(demo)
    demo.add_argument("--data", type=Path, default=None,
                      help="UC Merced (folder or zip), CIFAR-10 or any ImageFolder tree; "
                           "default: ../shared/data/ucmerced.zip, else scikit-learn digits")
    demo.add_argument("--bits", type=int, default=64)
    demo.add_argument("--shards", type=int, default=2)
    demo.add_argument("--queries", type=int, default=None, help="use only the first N queries")
    demo.add_argument("--embedded", action="store_true", help="in-process ONNX Runtime instead of Triton")
    demo.add_argument("--retrain", action="store_true", help="train even if a matching model is exported")
    demo.set_defaults(func=_demo)

    up = sub.add_parser("up", help="start the whole cluster on loopback until Ctrl-C")
    common(up)
    up.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    up.add_argument("--shards", type=int, default=2)
    up.add_argument("--port", type=int, default=0, help="gateway port (0: a free one)")
    up.add_argument("--embedded", action="store_true", help="in-process ONNX Runtime instead of Triton")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="stop a cluster started by `orbithash up`")
    down.add_argument("--work-dir", type=Path, default=DEFAULT_WORK)
    down.set_defaults(func=_down)

    train = sub.add_parser("train", help="train a model and export it to the model repository")
    common(train)
    train.add_argument("--data", type=Path, default=None)
    train.add_argument("--bits", type=int, default=64)
    train.add_argument("--seed", type=int, default=0)
    train.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s")
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
