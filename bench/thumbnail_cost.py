"""What a stored thumbnail costs per item: JPEG bytes at each size, and the time to make one.

    .venv/bin/python bench/thumbnail_cost.py [--images 210] [--sizes 64 96 128]

Takes every 8th UC Merced database scene, decodes it to the model's input (224 px) exactly as the
encoder does, and makes the thumbnail the encoder would store (encoder_service.thumbnails). The
shard's mirror never holds thumbnails; in Redis each costs its JPEG plus a hash field's overhead.
Ends with a JSON line.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from encoder_service.thumbnails import thumbnail
from orbithash.data import load_split
from orbithash.images import decode_pixels

INPUT_SIZE = 224


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=210)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 96, 128])
    args = parser.parse_args(argv)
    scenes = load_split(None).database[::8][: args.images]
    pixels = [decode_pixels(r.data, INPUT_SIZE) for r in scenes]
    result: dict[str, object] = {"images": len(scenes)}
    print("| thumbnail_size | mean JPEG bytes | p95 | ms per thumbnail |\n|---:|---:|---:|---:|")
    for size in args.sizes:
        start = time.perf_counter()
        lengths = [len(thumbnail(p, 256, 256, size)) for p in pixels]
        ms = (time.perf_counter() - start) * 1000 / len(pixels)
        mean, p95 = float(np.mean(lengths)), float(np.percentile(lengths, 95))
        print(f"| {size} | {mean:,.0f} | {p95:,.0f} | {ms:.2f} |")
        result[f"bytes_{size}"] = round(mean, 1)
        result[f"p95_{size}"] = round(p95)
        result[f"ms_{size}"] = round(ms, 3)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
