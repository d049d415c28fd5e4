"""``orbithash demo``: train (or reuse) a model, run the cluster, ingest, query, score.

The database split is ingested through the gateway; every query image is sent through the gateway
as a real client would, and mAP is computed from the rankings the cluster returns. Database ids
are zero-padded in database order, so the cluster's tie order (distance, then id) is the
protocol's "ties broken by database order".
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from orbithash.data import ImageRecord, Split, load_split
from orbithash.evaluation.metrics import average_precision
from orbithash.export.onnx_facts import exported_facts
from orbithash.model_facts import ModelFacts, ModelFactsError
from orbithash.training.finetune import train_and_export
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import Cluster, ClusterConfig

log = logging.getLogger("orbithash.demo")


@dataclass(frozen=True)
class DemoReport:
    dataset: str
    bits: int
    map: float
    accuracy: float
    p50_ms: float
    p99_ms: float
    queries: int
    database: int
    model_version: str

    def json_line(self) -> str:
        return json.dumps({
            "dataset": self.dataset, "bits": self.bits, "map": round(self.map, 4),
            "accuracy": round(self.accuracy, 4), "p50_ms": round(self.p50_ms, 2), "p99_ms": round(self.p99_ms, 2),
            "queries": self.queries, "database": self.database, "model_version": self.model_version,
        })


def ensure_model(split: Split, repo: Path, bits: int, retrain: bool) -> ModelFacts:
    try:
        facts = None if retrain else exported_facts(repo)
    except ModelFactsError as exc:
        log.warning("exported model is unusable (%s): training a new one", exc)
        facts = None
    if facts is not None and facts.bits == bits and facts.class_names == split.class_names:
        log.info("reusing model %s (version %s, %d bits)", facts.name, facts.version, facts.bits)
        return facts
    log.info("training a %d-bit model on %s (%d images)", bits, split.name, len(split.database))
    return train_and_export(split, bits=bits, repo_dir=repo, model_name="orbithash")


def _ingest_stream(records: list[ImageRecord], bar: tqdm) -> Iterator[pb.IngestItem]:
    for rec in records:
        yield pb.IngestItem(id=rec.id, image=rec.data, label=rec.label)
        bar.update(1)


def run_queries(stub: rpc.GatewayStub, split: Split, k: int,
                metadata: list[tuple[str, str]] | None = None) -> tuple[list[float], list[float], list[bool]]:
    aps, latencies, correct = [], [], []
    for rec in tqdm(split.queries, desc="query", unit="img"):
        start = time.perf_counter()
        reply = stub.Search(pb.SearchRequest(image=rec.data, k=k), timeout=60, metadata=metadata)
        latencies.append((time.perf_counter() - start) * 1000)
        relevant = np.fromiter((h.label == rec.label for h in reply.hits), bool, len(reply.hits))
        aps.append(average_precision(relevant))
        correct.append(reply.query.label == rec.label)
    return aps, latencies, correct


def run_demo(data: Path | None, repo: Path, bits: int = 64, shards: int = 2, use_triton: bool = True,
             retrain: bool = False, max_queries: int | None = None, tls: bool = False) -> DemoReport:
    split = load_split(data)
    facts = ensure_model(split, repo, bits, retrain)
    queries = split.queries[:max_queries] if max_queries else split.queries
    split = Split(split.name, split.class_names, split.database, queries)
    with tempfile.TemporaryDirectory(prefix="orbithash-demo-") as work:
        config = ClusterConfig(model_repository=repo, work_dir=Path(work), shards=shards, use_triton=use_triton,
                               max_k=max(10_000, len(split.database)), tls=tls)
        with Cluster(config) as cluster:
            for name, value in cluster.endpoints().items():
                print(f"  {name}: {value}")
            assert cluster.gateway is not None
            with cluster.gateway_channel() as channel:
                stub = rpc.GatewayStub(channel)
                with tqdm(total=len(split.database), desc="ingest", unit="img") as bar:
                    summary = stub.Ingest(_ingest_stream(split.database, bar), timeout=3600,
                                          metadata=cluster.call_metadata("writer"))
                log.info("ingested %d items, per shard %s", summary.ingested, list(summary.per_shard))
                aps, latencies, correct = run_queries(stub, split, len(split.database), cluster.call_metadata("reader"))
    return DemoReport(
        dataset=split.name, bits=facts.bits, map=float(np.mean(aps)), accuracy=float(np.mean(correct)),
        p50_ms=float(np.percentile(latencies, 50)), p99_ms=float(np.percentile(latencies, 99)),
        queries=len(split.queries), database=len(split.database), model_version=facts.version,
    )
