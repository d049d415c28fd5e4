"""The encoder service against a real tritonserver: streaming, bad input, decoding bounds, Triton
outages, refusal."""

from __future__ import annotations

import io
import threading
import time
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import cache
from pathlib import Path

import grpc
import numpy as np
import onnx
import pytest
import tifffile
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families

import encoder_service
from orbithash import Unavailable
from orbithash.data import Split
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import ServiceProcess, start_service
from orbithash_local.triton import TritonServer
from orbithash_serving.server import LIVENESS_SERVICE


@pytest.fixture(scope="module")
def triton(trained_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    server = TritonServer(trained_repo, tmp_path_factory.mktemp("triton"))
    yield server
    server.stop()


@contextmanager
def running_encoder(name: str, triton: TritonServer, logs: Path, args: list[str]) -> Iterator[ServiceProcess]:
    service = start_service(name, encoder_service, ["--triton-url", triton.url, *args], logs, timeout=60)
    try:
        yield service
    finally:
        service.process.stop()


@pytest.fixture(scope="module")
def encoder_process(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    with running_encoder("encoder", triton, tmp_path_factory.mktemp("logs"),
                         ["--max-images", "8", "--max-batch", "4", "--triton-timeout-s", "5",
                          "--max-request-mpx", "50"]) as service:
        yield service


@pytest.fixture(scope="module")
def encoder_address(encoder_process: ServiceProcess) -> str:
    return encoder_process.address


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


def handled(encoder_process: ServiceProcess, method: str) -> dict[str, float]:
    """``grpc_server_handled_total`` of ``method`` by code, from the encoder's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{encoder_process.metrics_port}/metrics", timeout=5).read()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == "grpc_server_handled_total" and sample.labels.get("grpc_method") == method:
                out[sample.labels["grpc_code"]] = sample.value
    return out


def test_a_stream_the_caller_cancels_is_counted_as_cancelled_not_as_a_fault(
        encoder: rpc.EncoderStub, encoder_process: ServiceProcess, ucm_subset: Split) -> None:
    """A caller that gives up while the stream waits for its next request was logged with a
    traceback and counted INTERNAL: an on-call person would have chased a fault that is not one."""
    before = handled(encoder_process, "EncodeStream")
    more = threading.Event()

    def requests() -> Iterator[pb.EncodeRequest]:
        yield pb.EncodeRequest(images=[ucm_subset.database[0].data])
        more.wait(10)  # the server now waits for a request that never comes

    call = encoder.EncodeStream(requests(), timeout=60)
    try:
        assert len(next(call).encodings) == 1
        call.cancel()  # the request stream stays open: the server sees the cancel, not its end
        deadline = time.monotonic() + 10
        while (after := handled(encoder_process, "EncodeStream")) == before and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        more.set()
    # gRPC ends the handler's request stream either with an error (then counted CANCELLED) or as if
    # the caller had closed it (then the handler cannot tell; OK unless the context already says so)
    counted = {code: after.get(code, 0) - before.get(code, 0) for code in after}
    assert sum(counted.values()) == 1 and set(k for k, v in counted.items() if v) <= {"CANCELLED", "OK"}, after
    assert after.get("INTERNAL", 0) == before.get("INTERNAL", 0)
    assert "EncodeStream failed" not in (encoder_process.process.log_path.read_text())


def test_more_images_than_one_backend_batch_keep_their_order(encoder: rpc.EncoderStub, ucm_subset: Split) -> None:
    images = [r.data for r in ucm_subset.database[:8]]  # two backend batches of 4, sent concurrently
    together = encoder.Encode(pb.EncodeRequest(images=images), timeout=60).encodings
    alone = [encoder.Encode(pb.EncodeRequest(images=[i]), timeout=60).encodings[0] for i in images]
    assert [e.code for e in together] == [e.code for e in alone]


def model_counts(triton: TritonServer) -> tuple[int, int]:
    """(images inferred, model executions) so far, from Triton's statistics extension."""
    client = triton.client()
    try:
        stats = client.get_inference_statistics(triton.model_name, as_json=True)["model_stats"][0]
    finally:
        client.close()
    return int(stats.get("inference_count", 0)), int(stats.get("execution_count", 0))


def test_concurrent_single_image_requests_share_model_executions(encoder: rpc.EncoderStub, triton: TritonServer,
                                                                 ucm_subset: Split) -> None:
    """Triton's dynamic batcher works through the encoder: while one execution runs, the requests
    that arrive wait for the next and leave together in one batch (the shipped config)."""
    images = [r.data for r in ucm_subset.database[:16]]
    alone = [encoder.Encode(pb.EncodeRequest(images=[i]), timeout=60).encodings[0].code for i in images]
    inferred0, executions0 = model_counts(triton)
    with ThreadPoolExecutor(len(images)) as pool:
        replies = list(pool.map(lambda i: encoder.Encode(pb.EncodeRequest(images=[i]), timeout=60), images))
    inferred, executions = model_counts(triton)
    assert [r.encodings[0].code for r in replies] == alone  # each caller gets its own image's code
    assert inferred - inferred0 == len(images)
    assert executions - executions0 < len(images), "every request ran as a batch of one"


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


# -- decoding bounds: a small message must not cost gigabytes or seconds ---------------------------

PEAK_RSS_LIMIT_MB = 600  # the whole encoder process, Triton client included (about 150 MB idle)


@cache
def deflate_tiff(side: int) -> bytes:
    """side×side 16-bit zeros, deflate-compressed: 37 KB on the wire at 4096, 146 KB at 8192."""
    buf = io.BytesIO()
    tifffile.imwrite(buf, np.zeros((side, side), np.uint16), compression="zlib")
    return buf.getvalue()


@cache
def big_png(side: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (side, side)).save(buf, "PNG", compress_level=1)  # 0.9 MB at 8192
    return buf.getvalue()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmHWM for process {pid}")


def reset_peak_rss(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the kernel's peak RSS restarts from the current RSS


@pytest.mark.parametrize(
    ("image", "status", "needle", "seconds"),
    [
        # Decoded cheaply now: was 2-5 s and a 2 GB peak (float64 copies of the whole image).
        (lambda: deflate_tiff(4096), grpc.StatusCode.OK, "", 3.0),
        # Refused from the header: was inside the old 64 Mpx limit and took 14 s and a 7.7 GB peak.
        (lambda: deflate_tiff(8192), grpc.StatusCode.INVALID_ARGUMENT,
         "image 1: 8192x8192 pixels (67.1 Mpx) is over the per-image limit of 40.0 Mpx; downscale it", 1.0),
        # Refused from the header: was decoded in 1.6 s with a 1.2 GB peak.
        (lambda: big_png(8192), grpc.StatusCode.INVALID_ARGUMENT,
         "image 1: 8192x8192 pixels (67.1 Mpx) is over the per-image limit of 40.0 Mpx; downscale it", 1.0),
    ],
    ids=["tiff-4096-16bit-deflate", "tiff-8192-16bit-deflate", "png-8192"],
)
def test_huge_images_cost_neither_memory_nor_time(encoder: rpc.EncoderStub, encoder_process: ServiceProcess,
                                                  ucm_subset: Split, image, status: grpc.StatusCode, needle: str,
                                                  seconds: float) -> None:
    request = pb.EncodeRequest(images=[ucm_subset.database[0].data, image()])
    pid = encoder_process.process.pid
    reset_peak_rss(pid)
    start = time.monotonic()
    try:
        reply = encoder.Encode(request, timeout=60)
        code, details = grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        code, details, reply = exc.code(), exc.details(), None
    elapsed, peak = time.monotonic() - start, peak_rss_mb(pid)
    assert (code, needle in details) == (status, True), details
    assert reply is None or len(reply.encodings) == 2
    assert elapsed < seconds, f"{elapsed:.2f} s"
    assert peak < PEAK_RSS_LIMIT_MB, f"encoder peak RSS {peak:.0f} MB"


def test_a_request_over_the_pixel_budget_is_refused_before_decoding(encoder: rpc.EncoderStub,
                                                                   encoder_process: ServiceProcess) -> None:
    request = pb.EncodeRequest(images=[deflate_tiff(4096)] * 4)  # 4 × 16.8 Mpx, each under the per-image limit
    reset_peak_rss(encoder_process.process.pid)
    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        encoder.Encode(request, timeout=60)
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "4 images of 67.1 Mpx in all are over the per-request budget of 50.0 Mpx" in err.value.details()
    assert time.monotonic() - start < 1.0
    assert peak_rss_mb(encoder_process.process.pid) < PEAK_RSS_LIMIT_MB


# -- abandoned calls: a caller that is gone gets no more decoding ---------------------------------

ABANDONED_IMAGES = 16  # 2048² 16-bit deflate TIFFs: about 0.1-0.2 s each to decode, one at a time


@pytest.fixture(scope="module")
def one_decoder(triton: TritonServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    """An encoder that decodes one image at a time, so one call of many large images takes seconds."""
    with running_encoder("encoder-one-decoder", triton, tmp_path_factory.mktemp("logs"),
                         ["--max-images", "64", "--max-batch", "4", "--decode-threads", "1",
                          "--max-request-mpx", "1000"]) as service:
        yield service


def metric(service: ServiceProcess, name: str) -> float:
    """A label-free sample of the service's /metrics (0 when absent)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{service.metrics_port}/metrics", timeout=5).read()
    for family in text_string_to_metric_families(text.decode()):
        for sample in family.samples:
            if sample.name == name and not sample.labels:
                return sample.value
    return 0.0


def decoded_once_settled(service: ServiceProcess, before: float) -> float:
    """Images decoded since ``before``, read once the count has not moved for a second."""
    last, still_since = metric(service, "orbithash_encoder_decoded_images_total"), time.monotonic()
    while time.monotonic() - still_since < 1.0:
        time.sleep(0.1)
        now = metric(service, "orbithash_encoder_decoded_images_total")
        if now != last:
            last, still_since = now, time.monotonic()
    return last - before


@pytest.mark.parametrize("how", ["deadline", "cancel"])
def test_a_call_whose_caller_is_gone_stops_decoding(one_decoder: ServiceProcess, how: str) -> None:
    """A multi-image call kept decoding every image after its caller cancelled or its deadline passed
    (16 of 16 here): CPU taken from live callers for an answer nobody reads."""
    request = pb.EncodeRequest(images=[deflate_tiff(2048)] * ABANDONED_IMAGES)
    before_calls = handled(one_decoder, "Encode")
    before = metric(one_decoder, "orbithash_encoder_decoded_images_total")
    with grpc.insecure_channel(one_decoder.address) as channel:
        stub = rpc.EncoderStub(channel)
        if how == "deadline":
            with pytest.raises(grpc.RpcError) as err:
                stub.Encode(request, timeout=0.4)
            assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
        else:
            call = stub.Encode.future(request, timeout=60)
            time.sleep(0.4)
            call.cancel()
        decoded = decoded_once_settled(one_decoder, before)
    assert decoded <= ABANDONED_IMAGES / 2, f"{decoded:.0f} of {ABANDONED_IMAGES} images decoded for a gone caller"
    counted = {code: n - before_calls.get(code, 0) for code, n in handled(one_decoder, "Encode").items()}
    want = "DEADLINE_EXCEEDED" if how == "deadline" else "CANCELLED"
    assert {code for code, n in counted.items() if n} == {want}, counted


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
    down = time.monotonic()
    with pytest.raises(grpc.RpcError) as err:
        encoder.Encode(request, timeout=30)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "Triton" in err.value.details()
    wait_for_health(encoder_address, health_pb2.HealthCheckResponse.NOT_SERVING)
    # Not ready, yet alive: Kubernetes stops sending traffic but must not restart the process.
    assert health(encoder_address, "") == health_pb2.HealthCheckResponse.NOT_SERVING
    assert health(encoder_address, LIVENESS_SERVICE) == health_pb2.HealthCheckResponse.SERVING
    # Down for about 10 s in all: gRPC's default reconnect backoff (1 s growing 1.6x) has then reached
    # 4-7 s, so a default channel would most likely still be waiting when the new Triton is ready.
    time.sleep(max(0.0, down + 7 - time.monotonic()))
    triton.restart()  # a new tritonserver on the same ports; returns once it reports the model ready
    ready = time.monotonic()
    while True:
        try:
            assert encoder.Encode(request, timeout=30).encodings[0].code == expected
            break
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.UNAVAILABLE and time.monotonic() < ready + 20
            time.sleep(0.05)
    # The Triton channel's reconnect backoff is capped at 0.5 s (gRPC's default grows to minutes).
    assert time.monotonic() - ready < 1.5, f"first good Encode {time.monotonic() - ready:.1f} s after Triton was ready"
    wait_for_health(encoder_address, health_pb2.HealthCheckResponse.SERVING)


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


