"""deploy/ checked against the code, without kubectl or a cluster: kustomizations, settings,
ports, shard addresses, the CPU overlay, metric names, and the GPU Triton config generator."""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import grpc
import pytest
import yaml
from google.protobuf import text_format
from support import REPO
from tritonclient.grpc import model_config_pb2

from encoder_service.settings import EncoderSettings
from gateway.settings import GatewaySettings
from index_service.settings import IndexSettings
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


def test_index_pods_take_the_shard_from_their_ordinal(tmp_path: Path) -> None:
    container = next(c for module, c in service_containers() if module == "index_service")
    fake = tmp_path / "python"
    fake.write_text('#!/bin/sh\necho "$@"\n')
    fake.chmod(0o755)
    env = {"PATH": f"{tmp_path}:/usr/bin:/bin"}
    for hostname, shard in [("orbithash-index-0", "0"), ("orbithash-index-12", "12")]:
        out = subprocess.run(container["command"], env={**env, "HOSTNAME": hostname}, capture_output=True,
                             text=True, check=True)
        assert out.stdout.split() == ["-m", "index_service", "--shard", shard]
    bad = subprocess.run(container["command"], env={**env, "HOSTNAME": "index"}, capture_output=True)
    assert bad.returncode != 0


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
    assert url.scheme == "redis" and resolve(url.netloc)[0] == "orbithash-redis"
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
    assert set(container_ports(triton).values()) == {8000, 8001, 8002}


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


def test_make_gpu_config_refuses_what_export_did_not_write(tmp_path: Path) -> None:
    gpu = mgc.gpu_config(triton_config(FACTS, "orbithash"))
    with pytest.raises(ValueError, match="not a config written by"):
        mgc.gpu_config(gpu)
    (tmp_path / "orbithash").mkdir()
    (tmp_path / "orbithash" / "config.pbtxt").write_text(triton_config(FACTS, "orbithash"))
    with pytest.raises(SystemExit):
        mgc.main([str(tmp_path), str(tmp_path)])
