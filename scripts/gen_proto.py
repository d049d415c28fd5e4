"""Regenerate orbithash_api/v1/ from proto/ (grpcio-tools); tests/unit/api/test_proto.py fails when stale.

The contract lives in ``proto/orbithash/v1/orbithash.proto`` (protobuf package ``orbithash.v1``,
so the gRPC names stay ``orbithash.v1.Gateway`` and so on). The generated Python goes into its own
small package, ``orbithash_api``, which needs only grpcio and protobuf: a client or a service
imports the contract without the hashing library. protoc names the generated modules after the
proto file's path, so the file is compiled from a temporary root where it sits at
``orbithash_api/v1/orbithash.proto``.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from grpc_tools import protoc

REPO = Path(__file__).resolve().parents[1]
PROTO = REPO / "proto" / "orbithash" / "v1" / "orbithash.proto"
PACKAGE = Path("orbithash_api") / "v1"
OUT_PACKAGE = REPO / PACKAGE
GENERATED = ("orbithash_pb2.py", "orbithash_pb2.pyi", "orbithash_pb2_grpc.py")


def generate(out_root: Path) -> None:
    include = Path(protoc.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as root:
        source = Path(root) / PACKAGE / PROTO.name
        source.parent.mkdir(parents=True)
        shutil.copyfile(PROTO, source)
        argv = ["protoc", f"-I{root}", f"-I{include}", f"--python_out={out_root}",
                f"--pyi_out={out_root}", f"--grpc_python_out={out_root}", str(source)]
        if protoc.main(argv) != 0:
            raise SystemExit("protoc failed")


def generated_files() -> dict[str, str]:
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        return {name: (Path(tmp) / PACKAGE / name).read_text() for name in GENERATED}


def main() -> int:
    OUT_PACKAGE.mkdir(parents=True, exist_ok=True)
    for name, text in generated_files().items():
        (OUT_PACKAGE / name).write_text(text)
    (OUT_PACKAGE / "__init__.py").write_text('"""Code generated from proto/orbithash/v1 by scripts/gen_proto.py."""\n')
    print(f"wrote {len(GENERATED)} files to {OUT_PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
