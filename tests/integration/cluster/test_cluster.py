"""End-to-end tests against the real cluster (redis-server, tritonserver, gRPC services)."""

from __future__ import annotations

import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from encoder_service.backends import OnnxRuntimeBackend
from orbithash.bits import pack_signs
from orbithash.data import Split
from orbithash.images import pixels_batch
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import Cluster


@pytest.fixture(scope="module")
def gateway(cluster: Cluster):
    assert cluster.gateway is not None
    with grpc.insecure_channel(cluster.gateway.address) as channel:
        yield rpc.GatewayStub(channel)


@pytest.fixture(scope="module")
def ingested(gateway: rpc.GatewayStub, cluster: Cluster, ucm_subset: Split) -> dict[str, bytes]:
    """Ingest the subset's query images (42 real images) and return id → code from the encoder."""
    records = ucm_subset.queries
    summary = gateway.Ingest(iter(pb.IngestItem(id=r.id, image=r.data, label=r.label) for r in records),
                             timeout=300)
    assert summary.ingested == len(records)
    assert sum(summary.per_shard) == len(records)
    assert cluster.encoder is not None
    with grpc.insecure_channel(cluster.encoder.address) as channel:
        enc = rpc.EncoderStub(channel).Encode(pb.EncodeRequest(images=[r.data for r in records]), timeout=300)
    return {r.id: e.code for r, e in zip(records, enc.encodings, strict=True)}


def brute_force(codes: dict[str, bytes], query: bytes) -> list[tuple[int, str]]:
    q = np.unpackbits(np.frombuffer(query, np.uint8))
    ranked = [(int((np.unpackbits(np.frombuffer(c, np.uint8)) != q).sum()), i) for i, c in codes.items()]
    return sorted(ranked)


def test_every_service_reports_serving_health_and_reflection(cluster: Cluster) -> None:
    assert cluster.encoder and cluster.gateway
    services = {cluster.gateway.address: "orbithash.v1.Gateway", cluster.encoder.address: "orbithash.v1.Encoder"}
    services.update({s.address: "orbithash.v1.IndexShard" for s in cluster.shards})
    for address, name in services.items():
        with grpc.insecure_channel(address) as channel:
            health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=name))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
            replies = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
            listed = {s.name for r in replies for s in r.list_services_response.service}
            assert name in listed


def test_search_by_image_finds_the_image_at_distance_zero(gateway: rpc.GatewayStub, ingested: dict[str, bytes],
                                                          ucm_subset: Split) -> None:
    for rec in ucm_subset.queries[::7]:
        reply = gateway.Search(pb.SearchRequest(image=rec.data, k=len(ingested)), timeout=60)
        assert reply.hits[0].distance == 0
        zero = [h.id for h in reply.hits if h.distance == 0]
        assert rec.id in zero, "the image itself must be among the distance-0 hits (ties ordered by id)"
        assert reply.query.code == ingested[rec.id]
        assert reply.query.class_name == ucm_subset.class_names[reply.query.label]
        assert abs(sum(reply.query.probabilities) - 1.0) < 1e-4


def test_search_by_code_equals_brute_force_over_everything(gateway: rpc.GatewayStub,
                                                           ingested: dict[str, bytes]) -> None:
    rng = np.random.default_rng(7)
    width = len(next(iter(ingested.values())))
    for _ in range(5):
        query = rng.integers(0, 256, width, dtype=np.uint8).tobytes()
        reply = gateway.Search(pb.SearchRequest(code=query, k=len(ingested)), timeout=30)
        assert [(h.distance, h.id) for h in reply.hits] == brute_force(ingested, query)
        assert not reply.partial


def test_rerank_orders_by_asymmetric_score(gateway: rpc.GatewayStub, ingested: dict[str, bytes],
                                           ucm_subset: Split) -> None:
    rec = ucm_subset.queries[3]
    k = 10
    reply = gateway.Search(pb.SearchRequest(image=rec.data, k=k, rerank=True, rerank_candidates=len(ingested)),
                           timeout=60)
    u = np.asarray(reply.query.u, np.float64)
    bits = len(u)
    scores = {i: float(-(np.unpackbits(np.frombuffer(c, np.uint8), count=bits).astype(np.float64) * 2 - 1) @ u)
              for i, c in ingested.items()}
    expected = sorted(ingested, key=lambda i: (scores[i], i))[:k]
    assert [h.id for h in reply.hits] == expected
    np.testing.assert_allclose([h.score for h in reply.hits], [scores[i] for i in expected], rtol=1e-5)
    with pytest.raises(grpc.RpcError) as err:
        gateway.Search(pb.SearchRequest(id=rec.id, k=k, rerank=True), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def _coalesced(cluster: Cluster, target: str) -> tuple[float, float]:
    """(calls, requests) the gateway sent to ``target`` in joined calls, from its /metrics."""
    assert cluster.gateway is not None
    text = urllib.request.urlopen(f"http://127.0.0.1:{cluster.gateway.metrics_port}/metrics", timeout=5).read().decode()
    values = {line.split("{")[0]: float(line.split()[-1]) for line in text.splitlines()
              if line.startswith("orbithash_gateway_coalesced_requests_") and f'target="{target}"' in line
              and not line.startswith("orbithash_gateway_coalesced_requests_bucket")}
    return values["orbithash_gateway_coalesced_requests_count"], values["orbithash_gateway_coalesced_requests_sum"]


def test_concurrent_searches_share_calls_and_each_gets_its_own_answer(
        cluster: Cluster, gateway: rpc.GatewayStub, ingested: dict[str, bytes], ucm_subset: Split) -> None:
    """16 callers at once, images and codes and one corrupt image: the gateway joins them into shared
    encoder and shard calls, yet every caller gets exactly the answer it gets alone."""
    records = ucm_subset.queries[:12]
    requests = [pb.SearchRequest(image=r.data, k=5) for r in records]
    requests += [pb.SearchRequest(code=ingested[r.id], k=5) for r in records[:3]]
    alone = [gateway.Search(r, timeout=60) for r in requests]
    corrupt = pb.SearchRequest(image=b"\x89PNG\r\n\x1a\n not really", k=5)
    calls_before, joined_before = _coalesced(cluster, "encoder")

    def ask(request: pb.SearchRequest) -> pb.SearchResponse | grpc.StatusCode:
        try:
            return gateway.Search(request, timeout=60)
        except grpc.RpcError as exc:
            return exc.code()

    with ThreadPoolExecutor(16) as pool:
        rounds = [list(pool.map(ask, [*requests, corrupt])) for _ in range(3)]
    for answers in rounds:
        assert answers[-1] == grpc.StatusCode.INVALID_ARGUMENT
        for got, want in zip(answers[:-1], alone, strict=True):
            assert isinstance(got, pb.SearchResponse)
            assert [(h.id, h.distance) for h in got.hits] == [(h.id, h.distance) for h in want.hits]
            assert got.query.code == want.query.code
    calls, joined = (a - b for a, b in zip(_coalesced(cluster, "encoder"), (calls_before, joined_before), strict=True))
    assert joined == 3 * 13 and calls < joined, f"{joined} image requests in {calls} encoder calls: none shared"


def test_answers_come_from_more_than_one_shard(gateway: rpc.GatewayStub, ingested: dict[str, bytes]) -> None:
    reply = gateway.Search(pb.SearchRequest(id=next(iter(ingested)), k=len(ingested)), timeout=30)
    assert len({h.shard for h in reply.hits}) == 2


def test_radius_and_label_filters(gateway: rpc.GatewayStub, ingested: dict[str, bytes], ucm_subset: Split) -> None:
    query_id = ucm_subset.queries[0].id
    reply = gateway.Search(pb.SearchRequest(id=query_id, k=len(ingested), max_distance=8), timeout=30)
    expected = [(d, i) for d, i in brute_force(ingested, ingested[query_id]) if d <= 8]
    assert [(h.distance, h.id) for h in reply.hits] == expected
    label = ucm_subset.queries[5].label
    reply = gateway.Search(pb.SearchRequest(id=query_id, k=len(ingested), label=label), timeout=30)
    labels = {r.id: r.label for r in ucm_subset.queries}
    assert reply.hits and all(h.label == label for h in reply.hits)
    assert len(reply.hits) == sum(1 for r in ucm_subset.queries if r.label == label)
    assert all(labels[h.id] == label for h in reply.hits)


def test_triton_encoder_matches_in_process_onnxruntime(cluster: Cluster, ucm_subset: Split) -> None:
    records = ucm_subset.database[:6]
    assert cluster.encoder is not None
    with grpc.insecure_channel(cluster.encoder.address) as channel:
        reply = rpc.EncoderStub(channel).Encode(pb.EncodeRequest(images=[r.data for r in records]), timeout=120)
    backend = OnnxRuntimeBackend(cluster.model_path)
    u, _ = backend.infer(pixels_batch([r.data for r in records], backend.facts))
    served = np.array([e.u for e in reply.encodings], np.float32)
    np.testing.assert_allclose(served, u, atol=1e-4)
    assert [e.code for e in reply.encodings] == [c.tobytes() for c in pack_signs(u)]


@pytest.mark.parametrize(
    ("request_", "needle"),
    [
        (pb.SearchRequest(image=b"\xff\xd8\xff\xe0 not really a jpeg", k=3), "decode"),
        (pb.SearchRequest(code=b"\x01\x02\x03", k=3), "bytes"),
        (pb.SearchRequest(code=b"\x00" * 4, k=0), "k must be"),
        (pb.SearchRequest(k=3), "set one of"),
    ],
)
def test_bad_search_input_is_invalid_argument(gateway: rpc.GatewayStub, ingested: dict[str, bytes],
                                              request_: pb.SearchRequest, needle: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        gateway.Search(request_, timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.value.details()
    # the cluster still answers afterwards
    assert gateway.Info(pb.InfoRequest(), timeout=10).total == len(ingested)


def test_corrupt_image_in_ingest_is_invalid_argument(gateway: rpc.GatewayStub, ingested: dict[str, bytes]) -> None:
    items = [pb.IngestItem(id="corrupt-1", image=b"GIF89a garbage", label=1)]
    with pytest.raises(grpc.RpcError) as err:
        gateway.Ingest(iter(items), timeout=30)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item 0 (id 'corrupt-1'): " in err.value.details() and "nothing was stored" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        gateway.Search(pb.SearchRequest(id="corrupt-1", k=1), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


def test_shard_rejects_wrong_model_version(cluster: Cluster, ingested: dict[str, bytes]) -> None:
    code = next(iter(ingested.values()))
    with grpc.insecure_channel(cluster.shards[0].address) as channel:
        shard = rpc.IndexShardStub(channel)
        with pytest.raises(grpc.RpcError) as err:
            shard.Add(pb.AddRequest(items=[pb.Item(id="x", code=code, label=0)], bits=cluster.facts.bits,
                                    model_version="another-model"), timeout=10)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


def test_metrics_endpoints_use_standard_names(cluster: Cluster, ingested: dict[str, bytes]) -> None:
    assert cluster.gateway and cluster.encoder
    text = urllib.request.urlopen(f"http://127.0.0.1:{cluster.gateway.metrics_port}/metrics", timeout=5).read()
    assert b'grpc_server_handled_total{grpc_code="OK",grpc_method="Ingest"' in text
    text = urllib.request.urlopen(f"http://127.0.0.1:{cluster.encoder.metrics_port}/metrics", timeout=5).read()
    assert b"orbithash_encoder_images_total" in text
    shard_text = urllib.request.urlopen(f"http://127.0.0.1:{cluster.shards[0].metrics_port}/metrics",
                                        timeout=5).read().decode()
    count = next(line for line in shard_text.splitlines() if line.startswith("orbithash_index_items "))
    assert float(count.split()[1]) > 0


def test_killed_shard_gives_partial_answers_then_reloads_everything(
        cluster: Cluster, gateway: rpc.GatewayStub, ingested: dict[str, bytes]) -> None:
    queries = [pb.SearchRequest(code=c, k=len(ingested)) for c in list(ingested.values())[:4]]
    before = [[(h.distance, h.id, h.shard) for h in gateway.Search(q, timeout=30).hits] for q in queries]
    cluster.shards[1].process.kill()
    partial = gateway.Search(queries[0], timeout=30)
    assert partial.partial and list(partial.failed_shards) == [1]
    assert all(h.shard == 0 for h in partial.hits)
    cluster.restart_shard(1, kill=False)
    deadline = time.monotonic() + 5  # the gateway reconnects within its 1 s backoff cap
    while gateway.Search(queries[0], timeout=30).partial:
        assert time.monotonic() < deadline, "gateway did not pick the restarted shard up"
        time.sleep(0.1)
    after = [[(h.distance, h.id, h.shard) for h in gateway.Search(q, timeout=30).hits] for q in queries]
    assert after == before


def test_delete_removes(gateway: rpc.GatewayStub, ingested: dict[str, bytes]) -> None:
    victim = sorted(ingested)[3]
    reply = gateway.Delete(pb.DeleteRequest(ids=[victim, "never-there"]), timeout=30)
    assert reply.deleted == 1 and list(reply.missing) == ["never-there"]
    hits = gateway.Search(pb.SearchRequest(code=ingested[victim], k=len(ingested)), timeout=30).hits
    assert victim not in {h.id for h in hits}
    assert len(hits) == len(ingested) - 1
    with pytest.raises(grpc.RpcError) as err:
        gateway.Search(pb.SearchRequest(id=victim, k=1), timeout=30)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    # keep the fixture equal to what the cluster holds
    ingested.pop(victim)


def test_a_refused_delete_deletes_nothing(gateway: rpc.GatewayStub, ingested: dict[str, bytes]) -> None:
    """Every id is checked before any shard is asked to delete: a refused request changed nothing."""
    kept = sorted(ingested)[4]
    for bad in ("", "x" * 300):
        with pytest.raises(grpc.RpcError) as err:
            gateway.Delete(pb.DeleteRequest(ids=[kept, bad]), timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "item 1" in err.value.details() and len(err.value.details()) < 200
    hits = gateway.Search(pb.SearchRequest(id=kept, k=1), timeout=30).hits
    assert hits[0].id == kept and hits[0].distance == 0
