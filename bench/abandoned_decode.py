"""How many images an Encode call still decodes after its caller has gone.

    .venv/bin/python bench/abandoned_decode.py [--images 16] [--leave-after 0.4]

One in-process encoder (the shipped model on ONNX Runtime, one decode thread) gets a call of
``--images`` 2048² 16-bit deflate TIFFs (about 0.1-0.2 s each to decode); the caller leaves after
``--leave-after`` seconds, once by its deadline and once by cancelling. Counts the images decoded
from then on, until the call ends. Runs on an older checkout too (``PYTHONPATH=<checkout>``): there
a cancel cannot be signalled at all. Ends with a JSON line.
"""

from __future__ import annotations

import argparse
import inspect
import io
import json
import threading
import time

import numpy as np
import tifffile
from prometheus_client import CollectorRegistry

import encoder_service.encoder as encoder_module
from encoder_service.backends import OnnxRuntimeBackend
from encoder_service.encoder import DecodePolicy, Encoder, EncoderMetrics
from orbithash import OrbitHashError
from orbithash.export.repository import model_path


def tiff(side: int) -> bytes:
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((side, side), np.uint16), compression="zlib")
    return buf.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--leave-after", type=float, default=0.4)
    parser.add_argument("--model-repository", default="model_repository")
    args = parser.parse_args(argv)
    decoded_at: list[float] = []
    decode = encoder_module.decode_checked

    def counted(*a: object, **kw: object) -> np.ndarray:
        out = decode(*a, **kw)
        decoded_at.append(time.monotonic())
        return out

    encoder_module.decode_checked = counted  # counts on this checkout and on older ones alike
    encoder = Encoder(OnnxRuntimeBackend(model_path(args.model_repository, "orbithash"), 1), 32, args.images,
                      EncoderMetrics(CollectorRegistry()), 1, DecodePolicy(max_request_pixels=10**10))
    images = [tiff(2048)] * args.images
    can_cancel = "active" in inspect.signature(encoder.encode).parameters
    result: dict[str, object] = {"images": args.images, "leave_after_s": args.leave_after, "can_cancel": can_cancel}
    for how in ("deadline", "cancel"):
        decoded_at.clear()
        gone = threading.Timer(args.leave_after, lambda: None)
        gone.start()
        start = time.monotonic()
        kwargs: dict[str, object] = {"timeout": args.leave_after} if how == "deadline" else {}
        if how == "cancel" and can_cancel:
            kwargs["active"] = gone.is_alive
        try:
            encoder.encode(images, **kwargs)  # type: ignore[arg-type]
            outcome = "answered"
        except OrbitHashError as exc:
            outcome = type(exc).__name__
        after = sum(1 for t in decoded_at if t > start + args.leave_after)
        result[how] = {"decoded": len(decoded_at), "decoded_after_leaving": after, "outcome": outcome,
                       "ended_s": round(time.monotonic() - start, 2)}
        print(f"{how}: {len(decoded_at)} of {args.images} images decoded, {after} of them after the caller left; "
              f"call ended {time.monotonic() - start:.2f} s in ({outcome})")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
