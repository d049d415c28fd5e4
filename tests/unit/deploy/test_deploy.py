"""deploy/ checked against the code, without kubectl or a cluster: kustomizations, settings,
ports, shard addresses, the CPU overlay, metric names, and the GPU Triton config generator."""

from __future__ import annotations

import ast
import base64
import copy
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import socket
import stat
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from google.protobuf import text_format
from support import REPO
from tritonclient.grpc import model_config_pb2

from encoder_service.settings import EncoderSettings
from gateway.settings import GatewaySettings
from index_service.settings import IndexSettings
from orbithash import Unavailable
from orbithash.export.onnx_export import triton_config
from orbithash.model_facts import ModelFacts

DEPLOY = REPO / "deploy"
BASE = DEPLOY / "k8s" / "base"
CPU_OVERLAY = DEPLOY / "k8s" / "overlays" / "cpu"
SETTINGS = {"gateway": GatewaySettings, "encoder_service": EncoderSettings, "index_service": IndexSettings}
WORKLOADS = ("Deployment", "StatefulSet")
# Metrics that Triton and Prometheus export themselves (Triton: docs/user_guide/metrics.md).
EXTERNAL_METRICS = {
    "up", "nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count",
    "nv_inference_exec_count", "nv_inference_request_duration_us", "nv_inference_queue_duration_us",
    "nv_inference_compute_input_duration_us", "nv_inference_compute_infer_duration_us",
    "nv_inference_compute_output_duration_us", "nv_gpu_utilization", "nv_gpu_memory_used_bytes",
}
PROMQL_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def load_make_gpu_config():
    spec = importlib.util.spec_from_file_location("make_gpu_config", DEPLOY / "triton-gpu" / "make_gpu_config.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mgc = load_make_gpu_config()


def kustomization(folder: Path) -> dict:
    return yaml.safe_load((folder / "kustomization.yaml").read_text())


def base_docs() -> list[dict]:
    docs = []
    for entry in kustomization(BASE)["resources"]:
        docs += [d for d in yaml.safe_load_all((BASE / entry).read_text()) if d]
    return docs


def find(kind: str, name: str) -> dict:
    matches = [d for d in base_docs() if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} in the base"
    return matches[0]


def generated_configmaps() -> dict[str, dict[str, str]]:
    maps = {}
    for gen in kustomization(BASE).get("configMapGenerator", []):
        data = dict(item.split("=", 1) for item in gen.get("literals", []))
        for env_file in gen.get("envs", []):
            for line in (BASE / env_file).read_text().splitlines():
                if line.strip() and not line.startswith("#"):
                    key, value = line.split("=", 1)
                    data[key.strip()] = value.strip()
        maps[gen["name"]] = data
    for doc in base_docs():
        if doc["kind"] == "ConfigMap":
            maps[doc["metadata"]["name"]] = doc.get("data", {})
    return maps


def service_containers() -> list[tuple[str, dict]]:
    """(module, container) for every container that runs an OrbitHash service."""
    out = []
    for doc in base_docs():
        if doc["kind"] in WORKLOADS:
            for c in doc["spec"]["template"]["spec"]["containers"]:
                words = re.findall(r"[\w.]+", " ".join(c.get("command", []) + c.get("args", [])))
                out += [(w, c) for w in words if w in SETTINGS]
    return out


def container_env(container: dict) -> dict[str, str]:
    env = {e["name"]: e.get("value", "") for e in container.get("env", [])}
    maps = generated_configmaps()
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        assert name in maps, f"envFrom names ConfigMap {name!r}, which the base does not define"
        env.update(maps[name])
    return env


def container_ports(container: dict) -> dict[str, int]:
    return {p.get("name", str(p["containerPort"])): p["containerPort"] for p in container.get("ports", [])}


def selected_pods(selector: dict) -> list[dict]:
    return [d["spec"]["template"] for d in base_docs() if d["kind"] in WORKLOADS
            and selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()]


# -- kustomize -----------------------------------------------------------------------------------

@pytest.mark.parametrize("folder", [BASE, CPU_OVERLAY], ids=["base", "cpu"])
def test_kustomization_lists_existing_files(folder: Path) -> None:
    k = kustomization(folder)
    assert k["resources"]
    for entry in k["resources"]:
        path = folder / entry
        assert path.is_file() or (path / "kustomization.yaml").is_file(), f"{entry} missing in {folder}"
    for patch in k.get("patches", []):
        assert (folder / patch["path"]).is_file(), patch["path"]
    for gen in k.get("configMapGenerator", []):
        for entry in gen.get("envs", []) + gen.get("files", []):
            assert (folder / entry).is_file(), entry
    if folder == BASE:
        unlisted = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml", *k["resources"]}
        assert not unlisted, f"manifests not in kustomization.yaml: {unlisted}"


# -- settings ------------------------------------------------------------------------------------

def test_every_service_is_deployed_with_the_image_entrypoint() -> None:
    assert {module for module, _ in service_containers()} == set(SETTINGS)
    dockerfile = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r'^ENTRYPOINT \["python", "-m"\]$', dockerfile, re.M)
    for module, container in service_containers():
        command = " ".join(container.get("command", []))
        assert container.get("args", [None])[0] == module or f"python -m {module}" in command


def test_env_vars_are_settings_fields(monkeypatch: pytest.MonkeyPatch) -> None:
    for module, container in service_containers():
        cls = SETTINGS[module]
        prefix = cls.model_config["env_prefix"]
        env = {k: v for k, v in container_env(container).items() if k.startswith("ORBITHASH_")}
        assert env, f"{module}: no ORBITHASH_* settings"
        for name in env:
            assert name.startswith(prefix), f"{module} container sets {name}; its prefix is {prefix}"
            assert name[len(prefix):].lower() in cls.model_fields, f"{name}: no such field in {cls.__name__}"
        for name in list(os.environ):
            if name.startswith("ORBITHASH_"):
                monkeypatch.delenv(name)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        settings = cls()  # every value parses, every required field is given
        assert settings.host == "0.0.0.0", f"{module} must listen on the pod's address"
        ports = container_ports(container)
        assert (settings.port, settings.metrics_port) == (ports["grpc"], ports["metrics"]), module
        assert settings.health_port == ports["health"], f"{module}: the kubelet's plaintext health port"


def test_index_pods_take_the_shard_from_their_ordinal(tmp_path: Path) -> None:
    container = next(c for module, c in service_containers() if module == "index_service")
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    for hostname, shard in [("orbithash-index-0", "0"), ("orbithash-index-12", "12")]:
        out = subprocess.run(container["command"], env={**env, "HOSTNAME": hostname}, capture_output=True,
                             text=True, check=True)
        assert out.stdout.split() == ["-m", "index_service", "--shard", shard,
                                      "--redis-username", f"shard-{shard}",
                                      "--redis-password-file", f"/etc/orbithash/redis/shard-{shard}"]
        flags = out.stdout.split()[2:]
        parsed = IndexSettings.from_argv([*flags, "--model-version", "v1"])  # every flag is a real field
        assert (parsed.shard, parsed.redis_username) == (int(shard), f"shard-{shard}")
    bad = subprocess.run(container["command"], env={**env, "HOSTNAME": "index"}, capture_output=True)
    assert bad.returncode != 0


# -- images --------------------------------------------------------------------------------------

def dockerignore_rules(dockerfile: Path) -> list[tuple[bool, re.Pattern]]:
    """(excludes, pattern) of ``<Dockerfile>.dockerignore`` as BuildKit reads them: ``*`` stays within
    one path segment, ``**`` spans any, a pattern also covers everything under a folder it matches."""
    rules = []
    for line in Path(f"{dockerfile}.dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        include = line.startswith("!")
        glob = os.path.normpath(line.removeprefix("!").strip()).lstrip("/")
        regex = ""
        for part in re.split(r"(\*\*/|\*\*|\*|\?)", glob):
            regex += {"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(part, re.escape(part))
        rules.append((not include, re.compile(regex)))
    return rules


def build_context(dockerfile: Path) -> set[str]:
    """The files (relative to the repository) a build from the repository root sends to the builder."""
    rules = dockerignore_rules(dockerfile)

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        verdict = False
        for excludes, pattern in rules:  # the last rule that matches the path or a folder above it wins
            if any(pattern.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
                verdict = excludes
        return verdict

    files = set()
    for top in REPO.iterdir():
        if top.name in {".git", ".venv"} or (excluded(top.name) and not any(
                not ex and p.pattern.startswith(re.escape(top.name)) for ex, p in rules)):
            continue  # not walked: nothing under it can be in the context
        paths = [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file()]
        files |= {rel for p in paths if not excluded(rel := p.relative_to(REPO).as_posix())}
    return files


def first_party_imports(path: Path, packages: set[str]) -> set[str]:
    """Dotted names of the first-party modules a file imports (at any depth: lazy imports run too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return {n for n in names if n.split(".")[0] in packages}


def module_file(name: str) -> str | None:
    base = REPO / name.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate.relative_to(REPO).as_posix()
    return None  # an attribute (``from pkg.mod import Class``), not a module


def test_dockerignore_reader_follows_buildkit(tmp_path: Path) -> None:
    ignore = tmp_path / "Dockerfile.dockerignore"
    ignore.write_text("*\n!orbithash/\n**/__pycache__\n")
    rules = dockerignore_rules(tmp_path / "Dockerfile")
    assert [(ex, p.pattern) for ex, p in rules] == [(True, "[^/]*"), (False, "orbithash"),
                                                     (True, "(?:.*/)?__pycache__")]
    assert rules[2][1].fullmatch("orbithash/index/__pycache__") and not rules[1][1].fullmatch("orbithash_api")


def test_service_image_holds_every_module_its_entrypoints_import() -> None:
    """`python -m gateway|encoder_service|index_service` in the image: every first-party module they
    import, however deep, is in the build context that `pip install /src` installs from."""
    dockerfile = DEPLOY / "docker" / "Dockerfile"
    context = build_context(dockerfile)
    assert {"pyproject.toml", "constraints.txt", "README.md"} <= context
    roles = re.search(r"^ARG ROLES=(\S+)$", dockerfile.read_text(), re.M)[1].split(",")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert set(roles) <= set(project["project"]["optional-dependencies"]), roles
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    todo, seen, missing = [f"{m}.__main__" for m in SETTINGS], set(), set()
    while todo:
        name = todo.pop()
        if name in seen or (path := module_file(name)) is None:
            continue
        seen.add(name)
        if path not in context:
            missing.add(path)
            continue
        todo += first_party_imports(REPO / path, packages)
        todo += [".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)]  # parent packages
    assert {f"{m}/__main__.py" for m in SETTINGS} <= context
    assert not missing, f"imported by the services but left out of the image: {sorted(missing)}"


def test_deploy_docs_name_files_that_exist() -> None:
    """A path in backquotes in deploy/'s READMEs and runbook, read from the repository root or the
    document's folder, names a file or folder that exists (or one that is generated and git-ignored)."""
    checked, wrong = 0, []
    for doc in DEPLOY.rglob("*.md"):
        for token in set(re.findall(r"`([\w.-]+(?:/[\w.-]+)+/?)`", doc.read_text())):
            for root in (REPO, doc.parent):
                if (root / token.split("/")[0]).exists():
                    checked += 1
                    probe = root / token / "x" if token.endswith("/") else root / token  # a folder's content
                    ignored = subprocess.run(["git", "check-ignore", "-q", str(probe)], cwd=REPO).returncode == 0
                    if not (root / token).exists() and not ignored:
                        wrong.append(f"{doc.relative_to(REPO)}: {token}")
                    break
    assert checked >= 10 and not wrong, wrong


# -- ports and addresses -------------------------------------------------------------------------

def test_service_ports_match_container_ports() -> None:
    services = [d for d in base_docs() if d["kind"] == "Service"]
    assert {s["metadata"]["name"] for s in services} >= {"orbithash-gateway", "orbithash-index", "triton"}
    for svc in services:
        pods = selected_pods(svc["spec"]["selector"])
        assert pods, f"Service {svc['metadata']['name']} selects no pod template"
        for pod in pods:
            ports = {}
            for c in pod["spec"]["containers"]:
                ports.update(container_ports(c))
            for p in svc["spec"]["ports"]:
                target = p.get("targetPort", p["port"])
                number = ports.get(target) if isinstance(target, str) else target
                assert number in ports.values(), f"{svc['metadata']['name']}: no container port {target}"
                assert p["port"] == number, f"{svc['metadata']['name']}: port {p['port']} != container {number}"


def test_probes_and_scrape_annotations_use_container_ports() -> None:
    for doc in base_docs():
        if doc["kind"] not in WORKLOADS:
            continue
        template = doc["spec"]["template"]
        for c in template["spec"]["containers"]:
            ports = container_ports(c)
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind, {})
                for handler in ("grpc", "httpGet", "tcpSocket"):
                    if handler in probe:
                        port = probe[handler]["port"]
                        assert port in ports or port in ports.values(), f"{c['name']} {kind} port {port}"
            if c["name"] != "redis":
                assert "readinessProbe" in c and "livenessProbe" in c, c["name"]
        annotations = template["metadata"].get("annotations", {})
        if annotations.get("prometheus.io/scrape") == "true":
            ports = {k: v for c in template["spec"]["containers"] for k, v in container_ports(c).items()}
            assert int(annotations["prometheus.io/port"]) == ports["metrics"], doc["metadata"]["name"]


def test_liveness_is_not_readiness() -> None:
    """A dependency outage takes pods out of rotation (readiness) but never restarts them (liveness)."""
    from orbithash_serving.server import LIVENESS_SERVICE

    checked = 0
    for doc in base_docs():
        if doc["kind"] not in WORKLOADS:
            continue
        for c in doc["spec"]["template"]["spec"]["containers"]:
            if "grpc" in c.get("livenessProbe", {}):
                assert c["livenessProbe"]["grpc"].get("service") == LIVENESS_SERVICE, c["name"]
                assert c["readinessProbe"]["grpc"].get("service", "") != LIVENESS_SERVICE, c["name"]
                checked += 1
    assert checked == 3  # encoder, index shard, gateway


def resolve(address: str) -> tuple[str, int]:
    """The (Service name, port) a host:port in the cluster reaches; fails when nothing answers there."""
    host, port = address.rsplit(":", 1)
    pod, _, svc_name = host.partition(".")
    svc = find("Service", svc_name or host)
    assert int(port) in {p["port"] for p in svc["spec"]["ports"]}, f"{address}: Service has no port {port}"
    if svc_name:  # <statefulset>-<ordinal>.<headless service>
        assert svc["spec"].get("clusterIP") == "None", f"{address}: pod names need a headless Service"
        sts = [d for d in base_docs() if d["kind"] == "StatefulSet" and d["spec"]["serviceName"] == svc_name]
        name, ordinal = pod.rsplit("-", 1)
        assert sts and sts[0]["metadata"]["name"] == name, f"{address}: no StatefulSet {name} under {svc_name}"
        assert int(ordinal) < sts[0]["spec"]["replicas"], f"{address}: ordinal beyond the replicas"
    return svc["metadata"]["name"], int(port)


def test_gateway_lists_every_shard_pod_in_order() -> None:
    gateway = next(c for module, c in service_containers() if module == "gateway")
    env = container_env(gateway)
    shards = env["ORBITHASH_GATEWAY_SHARDS"].split(",")
    sts = find("StatefulSet", "orbithash-index")
    index = next(c for module, c in service_containers() if module == "index_service")
    name, svc, port = sts["metadata"]["name"], sts["spec"]["serviceName"], container_ports(index)["grpc"]
    assert len(shards) == sts["spec"]["replicas"]
    assert shards == [f"{name}-{i}.{svc}:{port}" for i in range(len(shards))]
    for address in shards:
        resolve(address)
    assert resolve(env["ORBITHASH_GATEWAY_ENCODER"])[0] == "orbithash-encoder"


def test_encoder_and_shards_reach_triton_and_redis() -> None:
    encoder = next(c for module, c in service_containers() if module == "encoder_service")
    triton_url = container_env(encoder)["ORBITHASH_ENCODER_TRITON_URL"]
    assert triton_url == "triton:8001" and resolve(triton_url) == ("triton", 8001)
    index = next(c for module, c in service_containers() if module == "index_service")
    url = urlsplit(container_env(index)["ORBITHASH_INDEX_REDIS_URL"])
    assert url.scheme == "rediss" and resolve(url.netloc)[0] == "orbithash-redis"  # TLS to Redis
    redis = find("StatefulSet", "orbithash-redis")["spec"]
    args = redis["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "yes"
    assert redis["volumeClaimTemplates"]


# -- Triton and the CPU overlay ------------------------------------------------------------------

def json_patch(doc: dict, ops: list[dict]) -> dict:
    """RFC 6902 add/replace/remove, enough to apply the overlay's patch as kustomize would."""
    doc = copy.deepcopy(doc)
    for op in ops:
        *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
        target = doc
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if isinstance(target, list) and last != "-":
            last = int(last)
        if op["op"] == "remove":
            del target[last]
        elif op["op"] == "replace":
            assert last in target if isinstance(target, dict) else last < len(target), op["path"]
            target[last] = op["value"]
        elif op["op"] == "add" and isinstance(target, list):
            target.insert(len(target) if last == "-" else last, op["value"])
        elif op["op"] == "add":
            target[last] = op["value"]
        else:
            raise AssertionError(f"unsupported op {op['op']}")
    return doc


def test_triton_serves_the_repository_on_one_gpu() -> None:
    triton = find("Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]
    assert triton["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert triton["command"] == ["tritonserver"] and "--model-repository=/models" in triton["args"]
    assert triton["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert set(container_ports(triton).values()) == {8001, 8002}  # gRPC (TLS) and metrics; no HTTP


def test_cpu_overlay_replaces_the_gpu() -> None:
    overlay = kustomization(CPU_OVERLAY)
    assert (CPU_OVERLAY / overlay["resources"][0]).resolve() == BASE
    [patch] = overlay["patches"]
    base = find(patch["target"]["kind"], patch["target"]["name"])
    patched = json_patch(base, yaml.safe_load((CPU_OVERLAY / patch["path"]).read_text()))
    assert "nvidia.com/gpu" in json.dumps(base)
    assert "nvidia.com/gpu" not in json.dumps(patched)
    triton = patched["spec"]["template"]["spec"]["containers"][0]
    assert triton["resources"]["requests"]["cpu"] and triton["resources"]["limits"]["cpu"]
    assert f"--model-config-name={mgc.CPU_CONFIG_NAME}" in triton["args"]


# -- Prometheus and Grafana ----------------------------------------------------------------------

def registered_metrics() -> set[str]:
    """Every series name the services' code can expose (prometheus_client naming)."""
    suffixes = {"Counter": ["_total"], "Gauge": [""], "Histogram": ["_bucket", "_sum", "_count"],
                "Summary": ["", "_sum", "_count"]}
    names = set()
    for package in ("orbithash_serving", "encoder_service", "index_service", "gateway"):
        for path in (REPO / package).rglob("*.py"):
            for kind, name in re.findall(r'\b(Counter|Gauge|Histogram|Summary)\(\s*"([\w:]+)"', path.read_text()):
                names |= {name.removesuffix("_total") + s for s in suffixes[kind]}
    return names


def metric_names(expr: str) -> set[str]:
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", "", expr)
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    return {m[1] for m in re.finditer(r"(?<!\w)([A-Za-z_:][\w:]*)(?!\w)(?!\s*\()", expr)} - PROMQL_KEYWORDS


def alert_rules() -> list[dict]:
    return [r for g in yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())["groups"]
            for r in g["rules"]]


def dashboard_exprs() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "orbithash.json").read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def test_metric_names_parse_out_of_promql() -> None:
    expr = 'histogram_quantile(0.99, sum by (job, le) (rate(a_bucket{x="y{"}[5m]))) / on (job) b > 1e-9 and up'
    assert metric_names(expr) == {"a_bucket", "b", "up"}


def test_alerts_and_dashboard_use_metrics_the_code_registers() -> None:
    registered = registered_metrics()
    assert {"grpc_server_handled_total", "grpc_server_handling_seconds_bucket", "orbithash_index_items",
            "orbithash_gateway_partial_results_total", "orbithash_encoder_images_total"} <= registered
    exprs = [r["expr"] for r in alert_rules()] + dashboard_exprs()
    used = set().union(*map(metric_names, exprs))
    assert {"grpc_server_handled_total", "orbithash_index_items", "nv_inference_request_failure"} <= used
    unknown = used - registered - EXTERNAL_METRICS
    assert not unknown, f"no code registers {sorted(unknown)}"


def test_alert_label_values_exist() -> None:
    jobs = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            for d in base_docs() if d["kind"] in WORKLOADS}
    codes = {c.name for c in grpc.StatusCode}
    rules = alert_rules()
    assert {"OrbitHashHighErrorRatio", "OrbitHashHighLatencyP99", "OrbitHashPartialResults",
            "OrbitHashShardDown", "OrbitHashTritonFailures"} <= {r["alert"] for r in rules}
    for expr in [r["expr"] for r in rules] + dashboard_exprs():
        for job in re.findall(r'job=~?"([^"]+)"', expr):
            assert job in jobs, f"job {job!r} is no pod's app.kubernetes.io/name"
        for value in re.findall(r'grpc_code[!=]~?"([^"]+)"', expr):
            assert set(value.split("|")) <= codes, f"{value}: grpc_code holds Python StatusCode names"


def test_callers_refused_for_their_token_or_rate_warn_and_do_not_page() -> None:
    """One client with an expired token or over its rate must not page anyone; the same codes on
    an internal service (a broken certificate) must."""
    rules = {r["alert"]: r for r in alert_rules()}
    refusals = {"UNAUTHENTICATED", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED"}
    page = rules["OrbitHashHighErrorRatio"]["expr"]
    left_out = dict(re.findall(r'job(!?)="orbithash-gateway", grpc_code!~"([^"]+)"', page))
    assert refusals <= set(left_out[""].split("|")), "the gateway's refusals still page"
    assert not refusals & set(left_out["!"].split("|")), "internal services' refusals no longer page"
    warn = rules["OrbitHashCallersRefused"]
    assert warn["labels"]["severity"] == "warn"
    [counted] = re.findall(r'grpc_code=~"([^"]+)"', warn["expr"])
    assert set(counted.split("|")) == refusals


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a Markdown file's headings."""
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
            for h in re.findall(r"^#+ (.+)$", markdown, re.M)}


def test_alerts_say_what_to_do_and_link_a_runbook_that_exists() -> None:
    """On-call reads summary, description and runbook: each is there, and the runbook link names a
    file in the repository and a heading in it. Pages wait out a blip; every `for:` is a duration."""
    for rule in alert_rules():
        notes, name = rule.get("annotations", {}), rule["alert"]
        assert notes.get("summary") and notes.get("description"), name
        path, _, anchor = notes.get("runbook_url", "").partition("#")
        assert path and (REPO / path).is_file(), f"{name}: runbook {path!r} is no file in the repository"
        assert anchor in heading_anchors((REPO / path).read_text()), f"{name}: {path} has no heading #{anchor}"
        assert re.fullmatch(r"(\d+[smh])+", rule["for"]), f"{name}: for {rule['for']!r}"
        aggregations = re.findall(r"\b(?:sum|avg|min|max|count)\s*(?:by\s*\(([^)]*)\))?\s*\(", rule["expr"])
        if aggregations:  # an aggregated alert keeps only the labels every aggregation keeps
            kept = set.intersection(*({w.strip() for w in by.split(",") if w.strip()} for by in aggregations))
            used = set(re.findall(r"\$labels\.(\w+)", json.dumps(notes)))
            assert used <= kept, f"{name}: its annotations use {sorted(used - kept)}, which the expression drops"
        if rule["labels"]["severity"] == "page":
            assert re.fullmatch(r"([2-9]|\d\d+)m|\d+h", rule["for"]), f"{name}: a page waits 2 minutes or more"


def test_prometheus_config_matches_the_pods() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    for rule_file in config["rule_files"]:
        assert (DEPLOY / "prometheus" / rule_file).is_file()
    [k8s] = [j for j in config["scrape_configs"] if "kubernetes_sd_configs" in j]
    relabel = json.dumps(k8s["relabel_configs"])
    for needed in ("prometheus_io_scrape", "prometheus_io_port", "pod_label_app_kubernetes_io_name"):
        assert needed in relabel
    jobs = {d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/name"]
            for d in base_docs() if d["kind"] in WORKLOADS}
    local = {t["labels"]["job"] for j in config["scrape_configs"] for t in j.get("static_configs", [])}
    assert local and local <= jobs


class AnsweringShard:
    """A shard that holds nothing, or is down."""

    def __init__(self, down: bool) -> None:
        self.down = down
        self.address = "shard:1"

    def search(self, query, timeout: float) -> list:
        if self.down:
            raise Unavailable("index shard: UNAVAILABLE Socket closed")
        return [[] for _ in query.codes]


def test_partial_results_alert_divides_queries_by_queries() -> None:
    """The ratio the alert takes, on the gateway's own counters: a SearchMany of 3 queries with a
    shard down is 3 of 3 queries partial (its numerator counts queries, so must its denominator)."""
    from prometheus_client import CollectorRegistry

    from gateway.core import ByCode, Gateway, Limits, SearchManyRequest, SearchRequest

    [rule] = [r for r in alert_rules() if r["alert"] == "OrbitHashPartialResults"]
    numerator, denominator = re.findall(r"rate\(([\w:]+)", rule["expr"])
    registry = CollectorRegistry()
    shards = [AnsweringShard(down=False), AnsweringShard(down=False)]
    gateway = Gateway(None, shards, FACTS, Limits(max_k=10, timeout_s=5.0, ingest_batch=8), registry)
    try:
        def ratio() -> float:
            values = [registry.get_sample_value(name) for name in (numerator, denominator)]
            assert None not in values, f"the gateway does not export {numerator} and {denominator}"
            return values[0] / values[1]

        code = bytes(FACTS.bits // 8)
        gateway.search(SearchRequest(ByCode(code), k=1), None)
        assert ratio() == 0
        shards[1].down = True
        gateway.search_many(SearchManyRequest([ByCode(code)] * 3, k=1), None)
        assert ratio() == 3 / 4
        gateway.search(SearchRequest(ByCode(code), k=1), None)
        assert ratio() == 4 / 5
    finally:
        gateway.close()


# -- GPU Triton config ---------------------------------------------------------------------------

FACTS = ModelFacts(name="orbithash", version="0123456789ab", bits=48, class_names=("runway", 'say "hi"', "forêt"),
                   input_size=96, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))


def parse(path: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_make_gpu_config_keeps_the_model_and_its_facts(tmp_path: Path) -> None:
    src = tmp_path / "src" / "orbithash"
    (src / "1").mkdir(parents=True)
    (src / "config.pbtxt").write_text(triton_config(FACTS, "orbithash"))
    (src / "1" / "model.onnx").write_bytes(b"onnx bytes")
    env_file = tmp_path / "model-facts.env"
    assert mgc.main([str(tmp_path / "src"), str(tmp_path / "dst"), "--index-env", str(env_file)]) == 0

    cpu, dst = parse(src / "config.pbtxt"), tmp_path / "dst" / "orbithash"
    gpu = parse(dst / "config.pbtxt")
    assert (gpu.name, gpu.platform, gpu.backend, gpu.max_batch_size) == ("orbithash", "onnxruntime_onnx", "", 64)
    assert [(g.kind, g.count) for g in gpu.instance_group] == [(model_config_pb2.ModelInstanceGroup.KIND_GPU, 1)]
    assert list(gpu.dynamic_batching.preferred_batch_size) == [8, 16, 32]
    assert gpu.dynamic_batching.max_queue_delay_microseconds == 2000
    [trt] = gpu.optimization.execution_accelerators.gpu_execution_accelerator
    assert trt.name == "tensorrt"
    assert dict(trt.parameters) == {"precision_mode": "FP16", "max_workspace_size_bytes": "1073741824"}
    assert gpu.model_warmup
    for warmup in gpu.model_warmup:
        assert list(warmup.inputs) == ["images"] and warmup.inputs["images"].random_data
        assert list(warmup.inputs["images"].dims) == [3, FACTS.input_size, FACTS.input_size]
    assert (gpu.input, gpu.output, gpu.parameters) == (cpu.input, cpu.output, cpu.parameters)
    assert [o.name for o in gpu.output] == ["u", "logits"]
    facts = ModelFacts.from_params({k: v.string_value for k, v in gpu.parameters.items()})
    assert facts == FACTS

    cpu_variant = parse(dst / "configs" / f"{mgc.CPU_CONFIG_NAME}.pbtxt")
    assert [g.kind for g in cpu_variant.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert not cpu_variant.optimization.execution_accelerators.gpu_execution_accelerator
    assert (cpu_variant.platform, cpu_variant.parameters) == ("onnxruntime_onnx", cpu.parameters)
    assert (dst / "1" / "model.onnx").read_bytes() == b"onnx bytes"
    assert env_file.read_text() == "ORBITHASH_INDEX_MODEL_VERSION=0123456789ab\nORBITHASH_INDEX_BITS=48\n"


def test_make_gpu_config_takes_the_fp32_model_where_export_serves_int8(tmp_path: Path) -> None:
    """TensorRT optimises the FP32 model itself: the GPU repository gets it, under FP32's version."""
    int8 = dataclasses.replace(FACTS, version="0123456789ab-int8-qdq-abcdef")
    src = tmp_path / "src" / "orbithash"
    (src / "1").mkdir(parents=True)
    (src / "config.pbtxt").write_text(triton_config(int8, "orbithash"))
    (src / "1" / "model.onnx").write_bytes(b"int8 bytes")
    (src / "1" / "model.fp32.onnx").write_bytes(b"fp32 bytes")
    (src / "serving.json").write_text(json.dumps({"served": "int8-qdq", "fp32_version": FACTS.version}))
    env_file = tmp_path / "model-facts.env"
    assert mgc.main([str(tmp_path / "src"), str(tmp_path / "dst"), "--index-env", str(env_file)]) == 0
    dst = tmp_path / "dst" / "orbithash"
    assert (dst / "1" / "model.onnx").read_bytes() == b"fp32 bytes"
    gpu = parse(dst / "config.pbtxt")
    assert ModelFacts.from_params({k: v.string_value for k, v in gpu.parameters.items()}) == FACTS
    assert env_file.read_text() == f"ORBITHASH_INDEX_MODEL_VERSION={FACTS.version}\nORBITHASH_INDEX_BITS=48\n"


def test_make_gpu_config_refuses_what_export_did_not_write(tmp_path: Path) -> None:
    gpu = mgc.gpu_config(triton_config(FACTS, "orbithash"))
    with pytest.raises(ValueError, match="not a config written by"):
        mgc.gpu_config(gpu)
    (tmp_path / "orbithash").mkdir()
    (tmp_path / "orbithash" / "config.pbtxt").write_text(triton_config(FACTS, "orbithash"))
    with pytest.raises(SystemExit):
        mgc.main([str(tmp_path), str(tmp_path)])


# -- security: Secrets, TLS, NetworkPolicies ----------------------------------------------------

MAKE_SECRETS = DEPLOY / "k8s" / "make_secrets.py"
SECRETS_CACHE: dict[str, object] = {}


def run_make_secrets(out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(MAKE_SECRETS), str(out), *extra], capture_output=True, text=True,
                          check=True, cwd=REPO)


def secret_docs(path: Path) -> dict[str, dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert all(d["kind"] == "Secret" for d in docs)
    return {d["metadata"]["name"]: d for d in docs}


def decoded(doc: dict) -> dict[str, bytes]:
    return {k: base64.b64decode(v) for k, v in doc["data"].items()}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict], str]:
    """make_secrets.py run once into a tmp dir: (folder, Secrets by name, the printed token)."""
    out = tmp_path_factory.mktemp("secrets")
    proc = run_make_secrets(out, "--admin-token", "ops", "--role", "admin", "--expires", "2030-01-01T00:00:00Z")
    token = proc.stderr.strip().splitlines()[-1]
    return out, secret_docs(out / "secrets.yaml"), token


def workload_secret_refs() -> list[tuple[str, str, list[str]]]:
    """(object, Secret name, keys it needs) for every Secret the base's workloads and Ingress use."""
    refs = []
    for doc in base_docs():
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] in WORKLOADS:
            spec = doc["spec"]["template"]["spec"]
            for vol in spec.get("volumes", []):
                if "secret" in vol:
                    refs.append((name, vol["secret"]["secretName"], [i["key"] for i in vol["secret"].get("items", [])]))
            for c in spec["containers"] + spec.get("initContainers", []):
                for e in c.get("env", []):
                    ref = e.get("valueFrom", {}).get("secretKeyRef")
                    if ref:
                        refs.append((name, ref["name"], [ref["key"]]))
                for source in c.get("envFrom", []):
                    if "secretRef" in source:
                        refs.append((name, source["secretRef"]["name"], []))
        if doc["kind"] == "Ingress":
            refs += [(name, t["secretName"], ["tls.crt", "tls.key"]) for t in doc["spec"].get("tls", [])]
            for key, value in doc["metadata"].get("annotations", {}).items():
                if key.endswith("proxy-ssl-secret"):
                    refs.append((name, value.split("/", 1)[1], ["ca.crt"]))
    return refs


def mounted_files(container: dict, spec: dict) -> dict[str, tuple[str, str]]:
    """Absolute path -> (Secret name, key) of every file a Secret volume puts in the container."""
    secrets_by_volume = {v["name"]: v["secret"]["secretName"] for v in spec.get("volumes", []) if "secret" in v}
    files = {}
    for m in container.get("volumeMounts", []):
        if m["name"] in secrets_by_volume:
            assert m.get("readOnly") is True, f"{container['name']}: Secret {m['name']} must be mounted read-only"
            assert "subPath" not in m, f"{container['name']}: subPath mounts never see a rotated Secret"
            files[m["mountPath"]] = (secrets_by_volume[m["name"]], "")
    return files


def secret_file(container: dict, spec: dict, path: str, secrets: dict[str, dict]) -> bytes:
    """The content a path in the container has once the generated Secrets are mounted."""
    for mount, (secret_name, _) in mounted_files(container, spec).items():
        if path.startswith(mount + "/"):
            return decoded(secrets[secret_name])[path[len(mount) + 1:]]
    raise AssertionError(f"{container['name']}: {path} is on no mounted Secret")


def test_no_key_material_is_checked_in() -> None:
    for path in (DEPLOY / "k8s").rglob("*"):
        if path.is_file() and path.suffix in {".yaml", ".yml", ".env", ".pem", ".key", ".crt", ".json", ".acl"}:
            text = path.read_text()
            assert "PRIVATE KEY" not in text and "BEGIN CERTIFICATE" not in text, path
            assert not any(isinstance(d, dict) and d.get("kind") == "Secret" for d in yaml.safe_load_all(text)
                           if path.suffix in {".yaml", ".yml"}), f"{path}: Secrets come from make_secrets.py"
    assert "secrets.local" in (DEPLOY / "k8s" / ".gitignore").read_text()


def test_every_referenced_secret_is_generated(generated) -> None:
    _, secrets, _ = generated
    refs = workload_secret_refs()
    used = {name for _, name, _ in refs}
    assert {"orbithash-gateway-tls", "orbithash-encoder-tls", "orbithash-index-tls", "orbithash-triton-tls",
            "orbithash-redis-tls", "orbithash-gateway-tokens", "orbithash-redis-acl", "orbithash-redis-shards",
            "orbithash-gateway-public-tls", "orbithash-ca"} <= used
    for owner, name, keys in refs:
        assert name in secrets, f"{owner} uses Secret {name}, which make_secrets.py does not write"
        assert set(keys) <= set(secrets[name]["data"]), f"{owner}: Secret {name} lacks {keys}"
    for name, doc in secrets.items():
        assert doc["metadata"]["namespace"] == "orbithash"
        if name.endswith("-tls"):
            assert doc["type"] == "kubernetes.io/tls" and {"tls.crt", "tls.key"} <= set(doc["data"]), name


def test_services_read_their_settings_files_from_mounted_secrets(generated, monkeypatch) -> None:
    """Every *_file / tls_* path a service is given lies on a read-only Secret mount that has that key."""
    _, secrets, _ = generated
    checked = 0
    for doc in base_docs():
        if doc["kind"] not in WORKLOADS:
            continue
        spec = doc["spec"]["template"]["spec"]
        for c in spec["containers"]:
            env = {e["name"]: e.get("value", "") for e in c.get("env", [])}
            paths = [v for k, v in env.items() if re.search(r"_(TLS_CERT|TLS_KEY|TLS_CA|TOKENS_FILE)$", k)]
            if "index_service" in " ".join(c.get("command", [])):
                paths += ["/etc/orbithash/redis/shard-0", "/etc/orbithash/redis/shard-1"]
            for path in paths:
                assert secret_file(c, spec, path, secrets), path
                checked += 1
    assert checked >= 3 * 3 + 1 + 2


def test_internal_services_require_the_gateways_certificate(monkeypatch) -> None:
    for module, container in service_containers():
        for name in list(os.environ):
            if name.startswith("ORBITHASH_"):
                monkeypatch.delenv(name)
        for name, value in container_env(container).items():
            monkeypatch.setenv(name, value)
        settings = SETTINGS[module]()
        assert settings.tls_cert and settings.tls_key and settings.tls_ca, f"{module}: TLS on its gRPC port"
        if module == "gateway":
            assert settings.tokens_file, "the public API needs bearer tokens"
            assert not settings.tls_client_auth  # public clients authenticate with tokens, not certificates
        else:
            assert settings.tls_client_auth and settings.peer_names() == {"gateway"}, module
        if module == "encoder_service":
            assert settings.triton_tls and settings.triton_url == "triton:8001"
        if module == "index_service":
            assert settings.redis_url.startswith("rediss://")


def test_redis_is_tls_only_with_acl_and_protected_mode() -> None:
    redis = find("StatefulSet", "orbithash-redis")["spec"]["template"]["spec"]["containers"][0]
    args = redis["args"]

    def value(flag: str) -> str:
        assert args.count(flag) == 1, flag
        return args[args.index(flag) + 1]

    assert value("--port") == "0", "no plaintext Redis port"
    assert value("--tls-port") == "6379" == str(container_ports(redis)["redis"])
    assert value("--tls-auth-clients") == "yes" and value("--protected-mode") == "yes"
    for flag in ("--tls-cert-file", "--tls-key-file", "--tls-ca-cert-file", "--aclfile"):
        assert value(flag).startswith("/etc/redis/"), flag
    bind = args[args.index("--bind") + 1:]
    bind = bind[:next((i for i, a in enumerate(bind) if a.startswith("--")), len(bind))]
    assert bind == ["$(POD_IP)", "127.0.0.1"], "bound to the pod's address and loopback only"
    assert "requirepass" not in " ".join(args)
    from orbithash_local.redis_server import HASH_MAX_LISTPACK_ENTRIES

    assert value("--hash-max-listpack-entries") == str(HASH_MAX_LISTPACK_ENTRIES)  # the launcher's: id buckets compact
    probe = " ".join(redis["readinessProbe"]["exec"]["command"])
    assert "--tls" in probe and "--user probe" in probe and "grep -qx PONG" in probe


def test_triton_has_mutual_tls_and_no_http() -> None:
    triton = find("Deployment", "triton")["spec"]["template"]["spec"]["containers"][0]
    args = dict(a.split("=", 1) for a in triton["args"])
    assert args["--allow-http"] == "false"
    assert args["--grpc-use-ssl"] == "true" and args["--grpc-use-ssl-mutual"] == "true"
    for flag in ("--grpc-server-cert", "--grpc-server-key", "--grpc-root-cert"):
        assert args[flag].startswith("/etc/triton/tls/"), flag
    assert "http" not in container_ports(triton)
    assert 8000 not in {p["port"] for p in find("Service", "triton")["spec"]["ports"]}
    for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert "httpGet" not in triton[kind]


def test_probes_use_the_plaintext_health_port() -> None:
    for module, container in service_containers():
        ports = container_ports(container)
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if kind in container:
                assert container[kind]["grpc"]["port"] == ports["health"] != ports["grpc"], f"{module} {kind}"


# NetworkPolicy, evaluated: which pods may open a connection to which pod port.

NAMESPACE = "orbithash"
NAMESPACE_LABELS = {
    NAMESPACE: {"kubernetes.io/metadata.name": NAMESPACE},
    "ingress-nginx": {"kubernetes.io/metadata.name": "ingress-nginx"},
    "monitoring": {"kubernetes.io/metadata.name": "monitoring"},
    "default": {"kubernetes.io/metadata.name": "default"},
}
OUTSIDERS = [  # (name, namespace, labels) of pods outside the base
    ("ingress-controller", "ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"}),
    ("prometheus", "monitoring", {"app.kubernetes.io/name": "prometheus"}),
    ("stranger", "default", {"app.kubernetes.io/name": "anything"}),
    ("stranger-in-orbithash", NAMESPACE, {"app.kubernetes.io/name": "debug"}),
    ("fake-prometheus", "default", {"app.kubernetes.io/name": "prometheus"}),
]


def matches(selector: dict | None, labels: dict[str, str]) -> bool:
    if selector is None:
        return True
    assert set(selector) <= {"matchLabels", "matchExpressions"}, selector
    if not (selector.get("matchLabels") or {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def peer_allows(peer: dict, policy_ns: str, ns: str, labels: dict[str, str]) -> bool:
    if "ipBlock" in peer:
        return ns not in NAMESPACE_LABELS or True  # an address range: anyone, as far as labels can tell
    if "namespaceSelector" in peer:
        if not matches(peer["namespaceSelector"], NAMESPACE_LABELS[ns]):
            return False
    elif ns != policy_ns:
        return False
    return matches(peer.get("podSelector"), labels)


def port_allows(rule_ports: list[dict] | None, target_ports: dict[str, int], port: int) -> bool:
    if not rule_ports:
        return True
    for p in rule_ports:
        wanted = p.get("port")
        number = target_ports.get(wanted) if isinstance(wanted, str) else wanted
        if wanted is None or number == port:
            return True
    return False


def allowed(policies: list[dict], target_labels: dict, target_ports: dict, port: int,
            source_ns: str, source_labels: dict) -> bool:
    selecting = [p for p in policies if matches(p["spec"]["podSelector"], target_labels)
                 and "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not selecting:
        return True  # a pod no policy selects is not isolated
    for policy in selecting:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            if (not peers or any(peer_allows(peer, NAMESPACE, source_ns, source_labels) for peer in peers)) \
                    and port_allows(rule.get("ports"), target_ports, port):
                return True
    return False


def base_pods() -> dict[str, tuple[dict[str, str], dict[str, int]]]:
    """app name -> (pod labels as kustomize renders them, container ports by name)."""
    pods = {}
    for doc in base_docs():
        if doc["kind"] in WORKLOADS:
            template = doc["spec"]["template"]
            labels = {**template["metadata"]["labels"], "app.kubernetes.io/part-of": "orbithash"}
            ports = {k: v for c in template["spec"]["containers"] for k, v in container_ports(c).items()}
            pods[labels["app.kubernetes.io/name"]] = (labels, ports)
    return pods


def who_reaches(policies: list[dict], target: str, port_name: str) -> set[str]:
    pods = base_pods()
    labels, ports = pods[target]
    sources = [(name, NAMESPACE, lab) for name, (lab, _) in pods.items()] + OUTSIDERS
    return {name for name, ns, lab in sources if allowed(policies, labels, ports, ports[port_name], ns, lab)}


def network_policies() -> list[dict]:
    return [d for d in base_docs() if d["kind"] == "NetworkPolicy"]


def test_network_policy_evaluator_can_say_no_and_yes() -> None:
    deny = {"spec": {"podSelector": {}, "policyTypes": ["Ingress"]}}
    allow_all = {"spec": {"podSelector": {}, "ingress": [{}]}}
    assert who_reaches([], "orbithash-redis", "redis") >= {"stranger", "orbithash-gateway"}
    assert who_reaches([deny], "orbithash-redis", "redis") == set()
    assert "stranger" in who_reaches([deny, allow_all], "orbithash-redis", "redis")
    wrong_port = {"spec": {"podSelector": {}, "ingress": [{"ports": [{"port": "metrics"}]}]}}
    assert who_reaches([deny, wrong_port], "orbithash-redis", "redis") == set()


def test_default_deny_ingress() -> None:
    denies = [p for p in network_policies() if p["spec"]["podSelector"] == {} and not p["spec"].get("ingress")
              and "Ingress" in p["spec"]["policyTypes"]]
    assert denies, "no default-deny NetworkPolicy"
    for name in base_pods():
        assert any(matches(p["spec"]["podSelector"], base_pods()[name][0]) for p in denies), name


def test_network_policies_allow_only_the_callers_of_each_hop() -> None:
    policies = network_policies()
    assert who_reaches(policies, "orbithash-gateway", "grpc") == {"ingress-controller"}
    assert who_reaches(policies, "orbithash-encoder", "grpc") == {"orbithash-gateway"}
    assert who_reaches(policies, "orbithash-index", "grpc") == {"orbithash-gateway"}
    assert who_reaches(policies, "orbithash-redis", "redis") == {"orbithash-index"}
    assert who_reaches(policies, "triton", "grpc") == {"orbithash-encoder"}
    for name, (_, ports) in base_pods().items():
        if "metrics" in ports:
            assert who_reaches(policies, name, "metrics") == {"prometheus"}, name
        if "health" in ports:  # the kubelet's probes come from the node, which NetworkPolicy always allows
            assert who_reaches(policies, name, "health") == set(), name


def test_gateway_route_is_tls_end_to_end(generated) -> None:
    _, secrets, _ = generated
    [ingress] = [d for d in base_docs() if d["kind"] == "Ingress"]
    notes = ingress["metadata"]["annotations"]
    assert notes["nginx.ingress.kubernetes.io/backend-protocol"] == "GRPCS"
    assert notes["nginx.ingress.kubernetes.io/proxy-ssl-verify"] == "on"
    assert notes["nginx.ingress.kubernetes.io/proxy-ssl-secret"] == f"{NAMESPACE}/orbithash-ca"
    [tls] = ingress["spec"]["tls"]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] in tls["hosts"]
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "orbithash-gateway", "port": {"name": "grpc"}}
    public = x509.load_pem_x509_certificate(decoded(secrets[tls["secretName"]])["tls.crt"])
    assert rule["host"] in public.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName)
    gateway = x509.load_pem_x509_certificate(decoded(secrets["orbithash-gateway-tls"])["tls.crt"])
    assert notes["nginx.ingress.kubernetes.io/proxy-ssl-name"] in gateway.extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)


# make_secrets.py

def cert_names(pem: bytes) -> tuple[str, list[str]]:
    cert = x509.load_pem_x509_certificate(pem)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value
    return cn, cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.DNSName)


def test_make_secrets_certificates_verify_against_its_ca(generated) -> None:
    _, secrets, _ = generated
    ca = x509.load_pem_x509_certificate(decoded(secrets["orbithash-ca"])["ca.crt"])
    dialed = {  # identity -> the host names its peers dial (the manifests' addresses)
        "gateway": ["orbithash-gateway"], "encoder": ["orbithash-encoder"], "triton": ["triton"],
        "index": ["orbithash-index-0.orbithash-index", "orbithash-index-1.orbithash-index"],
        "redis": ["orbithash-redis-0.orbithash-redis"],
    }
    for identity, hosts in dialed.items():
        data = decoded(secrets[f"orbithash-{identity}-tls"])
        assert data["ca.crt"] == decoded(secrets["orbithash-ca"])["ca.crt"]
        cert = x509.load_pem_x509_certificate(data["tls.crt"])
        cert.verify_directly_issued_by(ca)
        cn, dns = cert_names(data["tls.crt"])
        assert cn == identity and set(hosts) <= set(dns), identity
        key = serialization.load_pem_private_key(data["tls.key"], password=None)
        assert key.public_key().public_numbers() == cert.public_key().public_numbers(), identity
    other_ca = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidSignature):  # the check above can fail: a certificate of another CA does not verify
        x509.load_pem_x509_certificate(decoded(secrets["orbithash-gateway-tls"])["tls.crt"]).verify_directly_issued_by(
            x509.CertificateBuilder().subject_name(ca.subject).issuer_name(ca.subject)
            .public_key(other_ca.public_key()).serial_number(1).not_valid_before(ca.not_valid_before_utc)
            .not_valid_after(ca.not_valid_after_utc).sign(other_ca, hashes.SHA256()))


def test_make_secrets_stores_the_token_only_hashed(generated) -> None:
    out, secrets, token = generated
    assert len(token) >= 32
    tokens = json.loads(decoded(secrets["orbithash-gateway-tokens"])["tokens.json"])
    assert tokens == {"tokens": [{"name": "ops", "role": "admin", "sha256": hashlib.sha256(token.encode()).hexdigest(),
                                  "expires": "2030-01-01T00:00:00Z"}]}
    for path in out.rglob("*"):
        if path.is_file():
            assert token not in path.read_text(errors="replace"), f"{path} holds the token in clear"
    assert stat.S_IMODE((out / "secrets.yaml").stat().st_mode) == 0o600


def test_make_secrets_redis_acl_hashes_passwords_and_confines_shards(generated) -> None:
    _, secrets, _ = generated
    acl = decoded(secrets["orbithash-redis-acl"])["users.acl"].decode()
    passwords = {k: v.decode() for k, v in decoded(secrets["orbithash-redis-shards"]).items()}
    assert set(passwords) == {"shard-0", "shard-1"}
    users = {line.split()[1]: line.split()[2:] for line in acl.splitlines()}
    assert users["default"][:2] == ["off", "resetpass"]  # nobody can authenticate as it
    for user, password in passwords.items():
        rules = users[user]
        assert password not in acl and f"#{hashlib.sha256(password.encode()).hexdigest()}" in rules
        assert [r for r in rules if r.startswith("~")] == [f"~orbithash:{{{user}}}:*"]
        assert rules.index("-@all") < min(i for i, r in enumerate(rules) if r.startswith("+")) and "+@all" not in rules
        assert not [r for r in rules if r.startswith("+@")]  # single commands, no categories
        assert not {"+flushall", "+config", "+keys", "+debug", "+acl", "+shutdown", "allkeys", "nopass"} & set(rules)
    assert users["probe"][-2:] == ["-@all", "+ping"]


def test_make_secrets_reuses_state_and_rotates(tmp_path: Path) -> None:
    run_make_secrets(tmp_path, "--admin-token", "a")
    first = secret_docs(tmp_path / "secrets.yaml")
    run_make_secrets(tmp_path, "--admin-token", "b")
    second = secret_docs(tmp_path / "secrets.yaml")
    assert first["orbithash-ca"] == second["orbithash-ca"]
    assert first["orbithash-redis-shards"] == second["orbithash-redis-shards"]
    assert [t["name"] for t in json.loads(decoded(second["orbithash-gateway-tokens"])["tokens.json"])["tokens"]] \
        == ["a", "b"]
    run_make_secrets(tmp_path, "--renew-certs", "--rotate-redis-passwords", "--revoke-token", "a")
    third = secret_docs(tmp_path / "secrets.yaml")
    assert first["orbithash-ca"] == third["orbithash-ca"]
    assert decoded(first["orbithash-index-tls"])["tls.crt"] != decoded(third["orbithash-index-tls"])["tls.crt"]
    old, new = decoded(second["orbithash-redis-shards"]), decoded(third["orbithash-redis-shards"])
    assert old["shard-0"] != new["shard-0"]
    acl = decoded(third["orbithash-redis-acl"])["users.acl"].decode()
    for password in (old["shard-0"], new["shard-0"]):  # both valid until the next run
        assert hashlib.sha256(password).hexdigest() in acl
    assert [t["name"] for t in json.loads(decoded(third["orbithash-gateway-tokens"])["tokens.json"])["tokens"]] == ["b"]
    run_make_secrets(tmp_path)
    assert hashlib.sha256(old["shard-0"]).hexdigest() not in \
        decoded(secret_docs(tmp_path / "secrets.yaml")["orbithash-redis-acl"])["users.acl"].decode()


def test_redis_accepts_the_generated_acl_and_tls(generated, tmp_path: Path) -> None:
    """The real redis-server, started with the manifest's TLS and ACL flags and the generated files."""
    import redis as redis_py

    _, secrets, _ = generated
    for name in ("orbithash-redis-tls", "orbithash-redis-acl", "orbithash-index-tls", "orbithash-redis-shards"):
        for key, value in decoded(secrets[name]).items():
            (tmp_path / f"{name}.{key}").write_bytes(value)
    container = find("StatefulSet", "orbithash-redis")["spec"]["template"]["spec"]["containers"][0]
    args = container["args"][1:]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    files = {"/etc/redis/tls/": "orbithash-redis-tls.", "/etc/redis/acl/": "orbithash-redis-acl."}
    real = []
    for a in args:
        for prefix, local in files.items():
            a = a.replace(prefix, str(tmp_path / local))
        real.append({"$(POD_IP)": "127.0.0.2", "6379": str(port), "/data": str(tmp_path), "always": "no"}.get(a, a))
    server = subprocess.Popen(["redis-server", *real, "--save", ""], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        def client(user: str | None, password: str | None) -> redis_py.Redis:
            return redis_py.Redis(host="127.0.0.1", port=port, ssl=True, username=user, password=password,
                                  ssl_ca_certs=str(tmp_path / "orbithash-redis-tls.ca.crt"),
                                  ssl_certfile=str(tmp_path / "orbithash-index-tls.tls.crt"),
                                  ssl_keyfile=str(tmp_path / "orbithash-index-tls.tls.key"), socket_timeout=5)
        deadline = time.monotonic() + 10
        shard0 = client("shard-0", (tmp_path / "orbithash-redis-shards.shard-0").read_text())
        while True:
            try:
                assert shard0.ping()
                break
            except redis_py.ConnectionError:
                assert server.poll() is None, server.stdout.read().decode()
                assert time.monotonic() < deadline
                time.sleep(0.1)
        shard0.setrange("orbithash:{shard-0}:meta", 0, "x")
        script = shard0.register_script("return redis.call('GET', KEYS[1])")  # EVALSHA, as the store runs them
        assert script(keys=["orbithash:{shard-0}:meta"]) == b"x"
        for forbidden in (lambda: shard0.get("orbithash:{shard-1}:meta"), shard0.flushall,
                          lambda: shard0.keys("*"), lambda: shard0.config_get("*"), shard0.acl_list,
                          lambda: shard0.execute_command("SCRIPT", "FLUSH")):
            with pytest.raises(redis_py.exceptions.NoPermissionError):
                forbidden()
        with pytest.raises(redis_py.exceptions.AuthenticationError):
            client("shard-1", "wrong").ping()
        with pytest.raises((redis_py.exceptions.AuthenticationError, redis_py.exceptions.ResponseError)):
            # the default user is off: without a user and password nothing runs
            client(None, None).get("orbithash:{shard-0}:meta")
        probe = client("probe", (tmp_path / "orbithash-redis-acl.probe-password").read_text())
        assert probe.ping()
        with pytest.raises(redis_py.exceptions.NoPermissionError):
            probe.get("orbithash:{shard-0}:meta")
    finally:
        server.terminate()
        server.wait(10)
