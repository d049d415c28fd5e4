"""The architecture's import rules (docs/architecture.md), checked on the source itself.

Every ``import`` counts, at module level or inside a function: a lazy import still runs when its
function is called, so it still ties a package to what it imports.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from support import REPO

PACKAGES = ("orbithash", "orbithash_api", "orbithash_client", "orbithash_cli", "orbithash_serving",
            "orbithash_local", "encoder_service", "index_service", "gateway")
SERVICES = ("encoder_service", "index_service", "gateway")

# What each package may import from the project (besides itself).
MAY_IMPORT = {
    "orbithash": set(),
    "orbithash_api": set(),
    "orbithash_client": {"orbithash_api"},
    "orbithash_cli": {"orbithash_client", "orbithash_api"},
    "orbithash_serving": {"orbithash", "orbithash_api"},
    "encoder_service": {"orbithash", "orbithash_api", "orbithash_serving"},
    "index_service": {"orbithash", "orbithash_api", "orbithash_serving"},
    "gateway": {"orbithash", "orbithash_api", "orbithash_serving"},
    "orbithash_local": set(PACKAGES),
}
# Third-party packages the library must never need: transport, storage, metrics, settings.
NOT_IN_LIBRARY = {"grpc", "grpc_health", "grpc_reflection", "redis", "prometheus_client", "pydantic",
                  "pydantic_settings", "tritonclient"}
# Third-party imports a service may reach, transitively: what its extra in pyproject.toml installs.
_SERVING = {"numpy", "grpc", "grpc_health", "grpc_reflection", "google", "prometheus_client", "pydantic",
            "pydantic_settings"}
SERVICE_THIRD_PARTY = {
    "gateway": _SERVING,
    "index_service": _SERVING | {"numba", "llvmlite", "redis"},
    "encoder_service": _SERVING | {"onnxruntime", "PIL", "tifffile", "tritonclient"},
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (REPO / package).rglob("*.py"):
            found[module_name(path)] = path
    return found


@cache
def imports_of(name: str) -> frozenset[str]:
    """Absolute names imported by a module: a project module where one matches, else the top-level name."""
    path = modules()[name]
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules() else base
                       for alias in node.names]
        else:
            continue
        for target in targets:
            out.add(target if target in modules() else _project_prefix(target) or target.split(".")[0])
    out.discard(name)
    return frozenset(out)


def _project_prefix(target: str) -> str | None:
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        if ".".join(parts[:i]) in modules():
            return ".".join(parts[:i])
    return None


def top(name: str) -> str:
    return name.split(".")[0]


def closure(start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        todo.extend(t for t in imports_of(name) if t in modules())
    return seen


def test_the_rules_see_every_package() -> None:
    assert {top(m) for m in modules()} == set(PACKAGES)
    assert "orbithash.index.hamming" in modules() or "orbithash.index" in modules()


@pytest.mark.parametrize("package", PACKAGES)
def test_packages_import_only_what_their_layer_allows(package: str) -> None:
    bad = []
    for name in modules():
        if top(name) != package:
            continue
        for target in imports_of(name):
            layer = top(target)
            if target in modules() and layer != package and layer not in MAY_IMPORT[package]:
                bad.append(f"{name} imports {target}")
            if package == "orbithash" and target not in modules() and layer in NOT_IN_LIBRARY:
                bad.append(f"{name} imports {target}: the library knows nothing of transport or storage")
    assert not bad, "\n".join(sorted(bad))


def test_no_import_cycles() -> None:
    """Tarjan's strongly connected components over every project module."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in imports_of(v):
            if w not in modules():
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for name in sorted(modules()):
        if name not in index:
            visit(name)
    assert not cycles, f"import cycles: {cycles}"


@pytest.mark.parametrize("service", SERVICES)
def test_services_reach_only_what_their_extra_installs(service: str) -> None:
    """Everything a service can import, lazily or not, is installed by its extra; never torch."""
    reached = closure(f"{service}.__main__")
    third_party = {t for m in reached for t in imports_of(m) if t not in modules()}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    extra = third_party - stdlib - SERVICE_THIRD_PARTY[service]
    assert not extra, f"{service} reaches {sorted(extra)}, which its extra does not install"
    assert "torch" not in third_party


def test_the_contract_needs_only_grpc_and_protobuf() -> None:
    for name in modules():
        if top(name) == "orbithash_api":
            assert {top(t) for t in imports_of(name) if t not in modules()} <= {"grpc", "google", "warnings"}


def test_the_client_needs_only_the_contract_grpc_and_protobuf() -> None:
    """Everything the client can import, lazily or not, is installed by the ``client`` extra."""
    reached = set().union(*(closure(m) for m in modules() if top(m) == "orbithash_client"))
    assert {top(m) for m in reached} <= {"orbithash_client", "orbithash_api"}
    third_party = {top(t) for m in reached for t in imports_of(m) if t not in modules()}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    assert third_party - stdlib <= {"grpc", "google"}, sorted(third_party - stdlib)


def test_the_client_imports_in_a_fresh_interpreter_without_heavy_libraries() -> None:
    """Confirmed by an interpreter: importing the client (every module of it) loads no torch, ONNX,
    numba, numpy or hashing library."""
    code = ("import sys, orbithash_client, orbithash_client.client, orbithash_client._convert;"
            "bad = [m for m in ('torch', 'onnxruntime', 'onnx', 'numba', 'numpy', 'orbithash') if m in sys.modules];"
            "sys.exit(f'loaded {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


# What the operator commands (orbithash_cli) may reach besides the client: previews, EXIF and the
# mosaic (Pillow), the progress bar (tqdm). Never torch, ONNX, numba, numpy or the hashing library.
CLI_THIRD_PARTY = {"grpc", "google", "PIL", "tqdm"}


def test_the_operator_commands_need_only_the_client_pillow_and_tqdm() -> None:
    reached = set().union(*(closure(m) for m in modules() if top(m) == "orbithash_cli"))
    assert {top(m) for m in reached} <= {"orbithash_cli", "orbithash_client", "orbithash_api"}
    third_party = {top(t) for m in reached for t in imports_of(m) if t not in modules()}
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    assert third_party - stdlib <= CLI_THIRD_PARTY, sorted(third_party - stdlib - CLI_THIRD_PARTY)


def test_a_service_process_starts_without_torch() -> None:
    """The static rules above, confirmed by an interpreter: importing every service loads no torch."""
    code = ("import sys, gateway.__main__, index_service.__main__, encoder_service.__main__;"
            "bad = [m for m in ('torch', 'sklearn', 'matplotlib') if m in sys.modules];"
            "sys.exit(f'loaded {bad}' if bad else 0)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
