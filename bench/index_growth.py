"""Cost growth of one search with shard size: our scan, our auto mode (the planner) and FAISS.

    python bench/index_growth.py            # 10k, 100k, 1M, 10M items (a few minutes, ~2 GB)
    python bench/index_growth.py --quick    # 10k, 100k, 1M

64-bit codes clustered like a trained model's (21 class centres, each bit flipped with p = 0.08,
queries drawn the same way), one query, k=10, one thread each: the setting of the 10M row of
``index_search.py``. A shard of >= 2^18 items builds its MIH tables (as a shard does after a
load) before timing, so auto mode may probe them; below that auto mode is the scan. Each size
checks that auto, scan and FAISS give the same distances and ids (ties at the k-th distance
aside). Prints a table and one JSON line, and draws ``docs/figures/index_growth.png`` (log-log).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import faiss
import matplotlib
import numpy as np

matplotlib.use("Agg")  # no display: write the PNG only
import matplotlib.pyplot as plt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from index_search import load_index, median_ms, same_answer, trained_like

from orbithash.index import MIH_MIN_ITEMS

FIGURE = Path(__file__).resolve().parents[1] / "docs" / "figures" / "index_growth.png"
K, BITS, FLIP = 10, 64, 0.08
SERIES = {"scan": "our linear scan", "auto": "our auto mode (planner: MIH or scan)", "faiss": "FAISS IndexBinaryFlat"}


def measure(n: int, nq: int, rng: np.random.Generator, centres: np.ndarray) -> dict[str, float]:
    """Median ms per query of each series at ``n`` items, after checking they answer alike."""
    codes = trained_like(rng, n, centres, FLIP)
    queries = trained_like(rng, nq, centres, FLIP)
    index = load_index(codes, BITS, threads=1)
    if n >= MIH_MIN_ITEMS:
        index.build_multi_index()
    ref = faiss.IndexBinaryFlat(BITS)
    ref.add(codes)
    faiss.omp_set_num_threads(1)
    d_ref, i_ref = ref.search(queries, K)
    auto = index.search(queries, K)
    assert auto == index.search(queries, K, strategy="scan"), "auto mode differs from the scan"
    same_answer(auto, d_ref, i_ref)
    return {"scan": median_ms(lambda q: index.search(q, K, strategy="scan"), queries),
            "auto": median_ms(lambda q: index.search(q, K), queries),
            "faiss": median_ms(lambda q: ref.search(q, K), queries)}


def machine() -> str:
    """The CPU model and cores this process may use, for the figure's title."""
    model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
                 if line.startswith("model name")]
        model = names[0] if names else model
    return f"{model}, {len(os.sched_getaffinity(0))} shared cores"


def plot(sizes: list[int], times: dict[str, list[float]], path: Path) -> None:
    """One log-log figure: ms per query against items, a line per series."""
    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=120)
    for key, marker in (("scan", "o"), ("auto", "s"), ("faiss", "^")):
        ax.plot(sizes, times[key], marker=marker, label=SERIES[key])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("shard size (items)")
    ax.set_ylabel("search time per query (ms, median)")
    ax.set_title(f"One query, k={K}, {BITS}-bit clustered codes, 1 thread\n{machine()}", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="stop at 1M items")
    parser.add_argument("--out", type=Path, default=FIGURE, help="where the PNG goes")
    args = parser.parse_args()
    sizes = [10_000, 100_000, 1_000_000] + ([] if args.quick else [10_000_000])
    rng = np.random.default_rng(5)
    centres = rng.integers(0, 2, (21, BITS), dtype=np.uint8).astype(bool)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; faiss {faiss.__version__}")
    print(f"  {'items':>10} {'scan ms':>10} {'auto ms':>10} {'faiss ms':>10}")
    times: dict[str, list[float]] = {key: [] for key in SERIES}
    for n in sizes:
        got = measure(n, 200, rng, centres)
        for key, ms in got.items():
            times[key].append(round(ms, 4))
        print(f"  {n:>10} {got['scan']:>10.4f} {got['auto']:>10.4f} {got['faiss']:>10.4f}", flush=True)
    plot(sizes, times, args.out)
    print(f"wrote {args.out}")
    print(json.dumps({"sizes": sizes, **{f"{key}_ms": v for key, v in times.items()}, "k": K, "bits": BITS,
                      "load_avg": round(os.getloadavg()[0], 2)}))


if __name__ == "__main__":
    main()
