"""Turn the CPU Triton config written by ``orbithash train`` into the GPU one for the same model.onnx.

    python deploy/triton-gpu/make_gpu_config.py model_repository build/triton-repo \\
        [--model orbithash] [--index-env deploy/k8s/base/model-facts.env]

Reads ``<source>/<model>/config.pbtxt`` and writes into ``<target>/<model>/``:
``config.pbtxt`` (onnxruntime_onnx on GPU with TensorRT, from orbithash/export/triton/gpu.pbtxt.template),
``configs/cpu.pbtxt`` (the same on CPU, picked by ``tritonserver --model-config-name=cpu``)
and a copy of ``1/model.onnx``. Name, input, output and the model's ``parameters`` (its facts)
are kept line for line; only the serving lines are replaced. Where the export serves a faster CPU
variant (INT8, ``serving.json``), the GPU repository gets the FP32 model (``1/model.fp32.onnx``,
which TensorRT optimises itself) under the FP32 model's version. ``--index-env`` also writes the
model version and bits the index shards must be started with. Export already writes the GPU
variant as ``configs/gpu.pbtxt``; this script builds a separate repository for NVIDIA's image.
"""

from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import sys
from pathlib import Path

from orbithash.export.triton.configs import CPU_CONFIG_NAME, cpu_variant, gpu_config


def parameter(config: str, key: str) -> str:
    """A ``parameters`` string value, unescaped (the facts are JSON inside pbtxt strings)."""
    match = re.search(rf'parameters {{ key: "{re.escape(key)}" value: {{ string_value: "((?:[^"\\]|\\.)*)" }} }}',
                      config)
    if match is None:
        raise ValueError(f"the config has no parameter {key!r}")
    return ast.literal_eval(f'b"{match[1]}"').decode()


def with_version(config: str, version: str) -> str:
    """The config with its model-version fact replaced (the pbtxt string holds the JSON string)."""
    value = json.dumps(json.dumps(version))[1:-1]
    return re.sub(r'(parameters { key: "orbithash\.version" value: { string_value: ")((?:[^"\\]|\\.)*)(" } })',
                  lambda m: m[1] + value + m[3], config)


def index_env(config: str) -> str:
    """The index shards' model facts: they refuse codes of any other model version or length."""
    version, bits = (json.loads(parameter(config, f"orbithash.{k}")) for k in ("version", "bits"))
    return f"ORBITHASH_INDEX_MODEL_VERSION={version}\nORBITHASH_INDEX_BITS={int(bits)}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="model repository written by `orbithash train`")
    parser.add_argument("target", type=Path, help="model repository to write the GPU variant into")
    parser.add_argument("--model", default="orbithash", help="model name (its folder in the repository)")
    parser.add_argument("--index-env", type=Path, help="also write ORBITHASH_INDEX_MODEL_VERSION/BITS here")
    args = parser.parse_args(argv)
    src, dst = args.source / args.model, args.target / args.model
    if src.resolve() == dst.resolve():
        parser.error("target must differ from source: the CPU config is still used by `orbithash up`")
    text = (src / "config.pbtxt").read_text()
    model_file = src / "1" / "model.onnx"
    serving = src / "serving.json"
    if (src / "1" / "model.fp32.onnx").is_file() and serving.is_file():
        model_file = src / "1" / "model.fp32.onnx"
        text = with_version(text, json.loads(serving.read_text())["fp32_version"])
    gpu = gpu_config(text)
    (dst / "configs").mkdir(parents=True, exist_ok=True)
    (dst / "config.pbtxt").write_text(gpu)
    (dst / "configs" / f"{CPU_CONFIG_NAME}.pbtxt").write_text(cpu_variant(gpu))
    if model_file.is_file():
        (dst / "1").mkdir(exist_ok=True)
        shutil.copyfile(model_file, dst / "1" / "model.onnx")
    if args.index_env:
        args.index_env.write_text(index_env(text))
    print(f"wrote {dst / 'config.pbtxt'} and {dst / 'configs' / CPU_CONFIG_NAME}.pbtxt", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
