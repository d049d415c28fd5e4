"""Regenerate orbithash/v1/ from proto/ (grpcio-tools); tests/test_proto.py fails when stale."""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO / "proto"
PROTO = PROTO_ROOT / "orbithash" / "v1" / "orbithash.proto"
OUT_PACKAGE = REPO / "orbithash" / "v1"
GENERATED = ("orbithash_pb2.py", "orbithash_pb2.pyi", "orbithash_pb2_grpc.py")


def generate(out_root: Path) -> None:
    include = Path(protoc.__file__).parent / "_proto"
    argv = ["protoc", f"-I{PROTO_ROOT}", f"-I{include}", f"--python_out={out_root}",
            f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", str(PROTO)]
    if protoc.main(argv) != 0:
        raise SystemExit("protoc failed")


def generated_files() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return {name: (Path(tmp) / "orbithash" / "v1" / name).read_text() for name in GENERATED}


def main() -> int:
    OUT_PACKAGE.mkdir(parents=True, exist_ok=True)
    for name, text in generated_files().items():
        (OUT_PACKAGE / name).write_text(text)
    (OUT_PACKAGE / "__init__.py").write_text('"""Code generated from proto/orbithash/v1 by scripts/gen_proto.py."""\n')
    print(f"wrote {len(GENERATED)} files to {OUT_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
