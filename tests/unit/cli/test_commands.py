"""The operator commands inside `orbithash`: registered lazily; `orbithash up --host` warns beyond loopback."""

from __future__ import annotations

import subprocess
import sys

import pytest
from support import REPO

from orbithash_local.cli import build_parser, exposure_warning
from orbithash_local.cluster import connect_host


def test_the_commands_are_registered_and_parse() -> None:
    parser = build_parser()
    args = parser.parse_args(["ingest", "a", "b.zip", "--streams", "3", "--on-error", "fail", "--metadata", "m.csv"])
    assert args.paths == ["a", "b.zip"] and args.streams == 3 and args.on_error == "fail"
    args = parser.parse_args(["search", "q.png", "--bbox", "-120,30,-110,40", "--within", "-10.5,-5,-1,0", "-k", "3"])
    assert args.bbox == "-120,30,-110,40" and args.within == "-10.5,-5,-1,0" and args.k == 3
    assert parser.parse_args(["delete", "x", "--yes"]).yes
    assert parser.parse_args(["up", "--host", "0.0.0.0"]).host == "0.0.0.0"
    assert parser.parse_args(["up"]).host == "127.0.0.1"


def test_building_the_parser_imports_no_client_pillow_or_tqdm() -> None:
    code = ("import sys; from orbithash_local.cli import build_parser; build_parser();"
            "bad = [m for m in ('grpc', 'PIL', 'tqdm', 'orbithash_client', 'torch') if m in sys.modules];"
            "sys.exit(f'loaded {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_operator_commands_load_no_torch_onnx_numba_or_library() -> None:
    code = ("import sys, orbithash_cli.ingest, orbithash_cli.search, orbithash_cli.admin, orbithash_cli.remote;"
            "bad = [m for m in ('torch', 'onnx', 'onnxruntime', 'numba', 'numpy', 'orbithash', 'sklearn')"
            " if m in sys.modules];"
            "sys.exit(f'loaded {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "::1"])
def test_no_warning_on_loopback(host: str) -> None:
    assert exposure_warning(host, 50051) is None


@pytest.mark.parametrize(("host", "where"), [("0.0.0.0", "every interface"), ("10.1.2.3", "10.1.2.3"),
                                             ("groundstation.example", "groundstation.example")])
def test_a_warning_beyond_loopback(host: str, where: str) -> None:
    warning = exposure_warning(host, 50051)
    assert warning.startswith("WARNING") and where in warning and "WITHOUT TLS" in warning
    assert "WITHOUT client tokens" in warning and "50051" in warning


def test_a_wildcard_bind_is_reached_on_loopback() -> None:
    assert connect_host("0.0.0.0") == "127.0.0.1" and connect_host("10.1.2.3") == "10.1.2.3"
