"""The encoder service against a real tritonserver: streaming, bad input, Triton outages, refusal."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import onnx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

import encoder_service
from orbithash import Unavailable
from orbithash.data import Split
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import start_service
from orbithash_local.triton import TritonServer
from orbithash_serving.server import LIVENESS_SERVICE


@pytest.fixture(scope="module")
def triton(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = TritonServer(trained_repo, tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def encoder_address(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    service = start_service("encoder", encoder_service,
                            ["--triton-url", triton.url, "--max-images", "8", "--max-batch", "4",
                             "--triton-timeout-s", "5"], tmp_path_factory.mktemp("logs"), timeout=60)
    yield service.address
    service.process.stop()


@pytest.fixture(scope="module")
def encoder(encoder_address: str) -> Iterator[rpc.EncoderStub]:
    with grpc.insecure_channel(encoder_address) as channel:
        yield rpc.EncoderStub(channel)


def test_stream_answers_each_batch_in_order(encoder: rpc.EncoderStub, ucm_subset: Split) -> None:
    images = [r.data for r in ucm_subset.database[:6]]
    batches = [images[0:2], images[2:5], images[5:6]]
    unary = [encoder.Encode(pb.EncodeRequest(images=b), timeout=60) for b in batches]
    streamed = list(encoder.EncodeStream(iter(pb.EncodeRequest(images=b) for b in batches), timeout=60))
    assert [len(r.encodings) for r in streamed] == [2, 3, 1]
    assert [[e.code for e in r.encodings] for r in streamed] == [[e.code for e in r.encodings] for r in unary]


def test_more_images_than_one_backend_batch_keep_their_order(encoder: rpc.EncoderStub, ucm_subset: Split) -> None:
    images = [r.data for r in ucm_subset.database[:8]]  # two backend batches of 4, sent concurrently
    together = encoder.Encode(pb.EncodeRequest(images=images), timeout=60).encodings
    alone = [encoder.Encode(pb.EncodeRequest(images=[i]), timeout=60).encodings[0] for i in images]
    assert [e.code for e in together] == [e.code for e in alone]


@pytest.mark.parametrize(
    ("images", "status", "needle"),
    [
        ([], grpc.StatusCode.INVALID_ARGUMENT, "no images"),
        (["ok", b"\x89PNG\r\n\x1a\n broken"], grpc.StatusCode.INVALID_ARGUMENT, "image 1"),
        (["ok"] * 9, grpc.StatusCode.RESOURCE_EXHAUSTED, "limit 8"),
    ],
)
def test_bad_requests_get_their_status(encoder: rpc.EncoderStub, ucm_subset: Split, images: list,
                                       status: grpc.StatusCode, needle: str) -> None:
    good = ucm_subset.database[0].data
    request = pb.EncodeRequest(images=[good if i == "ok" else i for i in images])
    with pytest.raises(grpc.RpcError) as err:
        encoder.Encode(request, timeout=30)
    assert err.value.code() == status
    assert needle in err.value.details()


def health(address: str, service: str) -> int:
    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service),
                                                         timeout=5).status


def wait_for_health(address: str, status: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while stub.Check(health_pb2.HealthCheckRequest(service="orbithash.v1.Encoder"), timeout=5).status != status:
            assert time.monotonic() < deadline, f"encoder health never became {status}"
            time.sleep(0.2)


def test_triton_outage_is_unavailable_and_the_encoder_recovers(encoder: rpc.EncoderStub, encoder_address: str,
                                                               triton: TritonServer, ucm_subset: Split) -> None:
    request = pb.EncodeRequest(images=[ucm_subset.database[0].data])
    expected = encoder.Encode(request, timeout=30).encodings[0].code
    triton.stop()
    with pytest.raises(grpc.RpcError) as err:
        encoder.Encode(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Triton" in err.value.details()
    wait_for_health(encoder_address, health_pb2.HealthCheckResponse.NOT_SERVING)
    # Not ready, yet alive: Kubernetes stops sending traffic but must not restart the process.
    assert health(encoder_address, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(encoder_address, LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    triton.restart()
    wait_for_health(encoder_address, health_pb2.HealthCheckResponse.SERVING)
    deadline = time.monotonic() + 20
    while True:
        try:
            assert encoder.Encode(request, timeout=30).encodings[0].code == expected
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < deadline
            time.sleep(0.2)


def test_encoder_refuses_a_model_without_facts(trained_repo: Path, tmp_path: Path) -> None:
    src = trained_repo / "orbithash" / "1" / "model.onnx"
    broken = tmp_path / "repo" / "orbithash" / "1" / "model.onnx"
    broken.parent.mkdir(parents=True)
    model = onnx.load(str(src))
    del model.metadata_props[:]
    onnx.save(model, str(broken))
    with pytest.raises(Unavailable, match="metadata is incomplete or malformed"):
        start_service("encoder-broken", encoder_service, ["--model-repository", str(tmp_path / "repo")],
                      tmp_path / "logs", timeout=60)


def test_encoder_refuses_to_start_without_triton(tmp_path: Path) -> None:
    with pytest.raises(Unavailable, match=r"unreachable|not ready"):
        start_service("encoder-orphan", encoder_service, ["--triton-url", "127.0.0.1:1", "--triton-timeout-s", "2"],
                      tmp_path / "logs", timeout=60)


