"""Retrieval quality: DHCNN, DPSH, DSH heads and the ITQ, LSH baselines on the same features, plus CIFAR-10.

    python bench/retrieval_quality.py --quick   # everything on small subsets / few epochs (minutes)
    python bench/retrieval_quality.py           # full protocols (hours on a 2-core CPU; figures in docs/results.md)

CIFAR-10 parts: the DSH network trained from scratch on the DSH protocol (50 000 training
images = database, 10 000 test queries) at 12/24/32/48 bits, with OrbitHash's DHCNN loss
(``cifar_dsh_map_<bits>``) and, at 12 and 48 bits, DSH's own loss (``cifar_dsh_dshloss_map_<bits>``);
EfficientNet-Lite0 fine-tuned on the DPSH protocol (1 000 queries, 5 000 training images, 54 000
database) at 48 bits (``cifar_dpsh_map_48``). In ``--quick`` mode these run on per-class subsets
for a few epochs: the figures show the pipeline works, not the protocol's result.

Every method is fitted on the database (training) images only and scored on the queries: mAP
over the whole database, Hamming ranking, ties broken by database order (the tie-aware mAP is in
the JSON report beside it). Features: frozen EfficientNet-Lite0 (ImageNet, from PyPI), pooled,
cached under cache/. Prints the method × bits tables, then one JSON line of named figures
(``ucm_map_64`` / ``ucm_acc_64`` = the DHCNN config's 64-bit model as train_and_export builds it,
last block + conv head fine-tuned; ``ucm_<method>_map_<bits>`` for the frozen-backbone table).
Reports and plots go to runs/bench/retrieval_quality/<dataset>/.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import zipfile
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from orbithash.data import Split, default_data_dir, load_split, sample_protocol
from orbithash.evaluation.evaluate import format_table, sweep, write_report
from orbithash.training.cache import default_cache_dir
from orbithash.training.config import HeadConfig, load_config
from orbithash.training.features import backbone_facts, cached_features
from orbithash.training.finetune import train
from orbithash.training.scratch import train_scratch

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "runs" / "bench" / "retrieval_quality"
METHODS = ("dhcnn", "dpsh", "dsh", "itq", "lsh")
BITS = (16, 32, 48, 64)
TARGETS = {"ucm_map_64": 0.985, "ucm_acc_64": 0.975, "cifar_dsh_map_12": 0.6157, "cifar_dsh_map_48": 0.6755,
           "cifar_dpsh_map_48": 0.907}
CIFAR_DSH_BITS = (12, 24, 32, 48)


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def table(split: Split, tag: str, head: HeadConfig, figures: dict[str, float], seed: int) -> None:
    start = time.perf_counter()
    feats = cached_features(split, backbone_facts(split, 64), head.views, progress=True)
    results = sweep(feats, split.labels("database"), split.labels("queries"), len(split.class_names),
                    METHODS, BITS, head_config=head, seed=seed)
    write_report(results, OUT / tag, {"dataset": split.name, "database": len(split.database),
                                      "queries": len(split.queries), "views": list(head.views),
                                      "epochs": head.epochs, "seed": seed, "commit": commit()})
    print(f"\n{tag}: {split.name}, {len(split.database)} database / {len(split.queries)} queries, "
          f"{time.perf_counter() - start:.0f} s")
    print(format_table(results))
    print(format_table(results, "map_tie_aware"))
    for r in results:
        figures[f"{tag}_{r['method']}_map_{r['bits']}"] = round(r["map"], 4)
        if "accuracy" in r:
            figures[f"{tag}_{r['method']}_acc_{r['bits']}"] = round(r["accuracy"], 4)


def cifar_test_imagefolder(per_class: int) -> Path:
    """CIFAR-10's test images as a plain ImageFolder tree <class>/<file> under cache/ (git-ignored)."""
    root = default_cache_dir() / f"cifar10-test-imagefolder-{per_class}"
    if not root.exists():
        tmp = root.with_name(root.name + ".tmp")
        counts: dict[str, int] = {}
        with zipfile.ZipFile(default_data_dir() / "cifar10.zip") as archive:
            for name in sorted(archive.namelist()):
                parts = name.split("/")
                if len(parts) < 3 or parts[-3] != "test" or not name.endswith(".jpg"):
                    continue
                if counts.get(parts[-2], 0) >= per_class:
                    continue
                counts[parts[-2]] = counts.get(parts[-2], 0) + 1
                (tmp / parts[-2]).mkdir(parents=True, exist_ok=True)
                (tmp / parts[-2] / parts[-1]).write_bytes(archive.read(name))
        tmp.rename(root)
    return root


def cifar_dsh(figures: dict[str, float], quick: bool, seed: int) -> None:
    """The DSH network from scratch on the DSH protocol (quick: 500 + 500 images per class, 12 epochs)."""
    for name, key, bits_list in (("cifar10_dsh_net_dhcnn_12.yaml", "cifar_dsh", CIFAR_DSH_BITS),
                                 ("cifar10_dsh_net_12.yaml", "cifar_dsh_dshloss", (12, 48))):
        config = load_config(REPO / "configs" / name)
        if quick:
            config = replace(config, limit_per_class=500, scratch=replace(config.scratch, epochs=12))
        split = config.load_split()
        for bits in bits_list:
            start = time.perf_counter()
            result = train_scratch(split, backbone=config.backbone, bits=bits, seed=seed, config=config.scratch,
                                   loss=config.make_loss(), method=config.method)
            figures[f"{key}_map_{bits}"] = round(result.metrics["map"], 4)
            figures[f"{key}_acc_{bits}"] = round(result.metrics["accuracy"], 4)
            print(f"{key} {bits} bits: mAP {result.metrics['map']:.4f}, accuracy {result.metrics['accuracy']:.4f}, "
                  f"{time.perf_counter() - start:.0f} s")


def cifar_dpsh(figures: dict[str, float], quick: bool, seed: int) -> None:
    """Fine-tuned EfficientNet-Lite0 on the DPSH protocol (quick: 10 queries / 50 training / 140 database
    images per class, 2 epochs)."""
    config = load_config(REPO / "configs" / "cifar10_dpsh_protocol_48.yaml")
    split = config.load_split()
    head = config.head
    if quick:
        pooled = replace(config, protocol="presplit", limit_per_class=100).load_split()
        split = sample_protocol(pooled, queries_per_class=10, train_per_class=50, seed=seed)
        head = replace(head, tail_epochs=2)
    start = time.perf_counter()
    result = train(split, bits=config.bits, seed=seed, config=head, loss=config.make_loss(), method=config.method)
    figures[f"cifar_dpsh_map_{config.bits}"] = round(result.metrics["map"], 4)
    figures[f"cifar_dpsh_acc_{config.bits}"] = round(result.metrics["accuracy"], 4)
    print(f"cifar_dpsh {config.bits} bits: mAP {result.metrics['map']:.4f}, accuracy "
          f"{result.metrics['accuracy']:.4f}, {time.perf_counter() - start:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    start = time.perf_counter()
    figures: dict[str, float] = {}

    config = load_config(REPO / "configs" / "ucm_dhcnn_64.yaml")
    head = replace(config.head, epochs=30) if args.quick else config.head
    ucm = load_split(None)  # UC Merced, 80/20 per class (DHCNN protocol)
    table(ucm, "ucm", replace(head, tail_blocks=0), figures, args.seed)
    tuned = train(ucm, bits=config.bits, seed=args.seed, config=config.head, loss=config.make_loss())
    figures["ucm_map_64"] = round(tuned.metrics["map"], 4)
    figures["ucm_acc_64"] = round(tuned.metrics["accuracy"], 4)

    if not args.quick:
        folder = cifar_test_imagefolder(per_class=1000)
        cifar = load_split(folder, per_class_train=80, per_class_query=20, seed=args.seed)
        table(cifar, "cifar_test_if", replace(head, views=("orig", "hflip"), tail_blocks=0), figures, args.seed)

    cifar_dsh(figures, args.quick, args.seed)
    cifar_dpsh(figures, args.quick, args.seed)

    if args.quick:
        print("\nquick mode: the CIFAR-10 figures are from subsets and few epochs, not the protocols' targets")
    print("\ntargets:", ", ".join(f"{k} {figures[k]:.4f} (target ≥ {v})" for k, v in TARGETS.items()))
    figures["quick"] = bool(args.quick)
    figures["seconds"] = round(time.perf_counter() - start, 1)
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
