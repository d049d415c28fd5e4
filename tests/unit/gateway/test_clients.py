"""The gRPC clients' one mapping from a downstream status to a domain error, and the start-up wait."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
import pytest

from gateway.clients import domain_error, wait_for_model
from gateway.core import Encoding
from orbithash import InvalidInput, Mismatch, NotFound, NotSent, ResourceExhausted, Unavailable
from orbithash.model_facts import ModelFacts

FACTS = ModelFacts(name="m", version="v1", bits=64, class_names=("a", "b"), input_size=32,
                   mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))


class FailedCall(grpc.RpcError, grpc.Call):
    """What a blocking stub raises: an RpcError that is also a finished Call."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def initial_metadata(self) -> None:
        return None

    def trailing_metadata(self) -> None:
        return None

    def is_active(self) -> bool:
        return False

    def time_remaining(self) -> None:
        return None

    def cancel(self) -> bool:
        return False

    def add_callback(self, callback: Callable[..., Any]) -> bool:
        return False


@pytest.mark.parametrize(("code", "kind"), [
    (grpc.StatusCode.INVALID_ARGUMENT, InvalidInput),
    (grpc.StatusCode.NOT_FOUND, NotFound),
    (grpc.StatusCode.FAILED_PRECONDITION, Mismatch),
    (grpc.StatusCode.RESOURCE_EXHAUSTED, ResourceExhausted),
])
def test_client_errors_keep_their_meaning_and_message(code: grpc.StatusCode, kind: type[Exception]) -> None:
    error = domain_error(FailedCall(code, "image 3: cannot decode"), "encoder at e:1")
    assert type(error) is kind and str(error) == "image 3: cannot decode"


@pytest.mark.parametrize("code", [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                                  grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED,
                                  grpc.StatusCode.UNIMPLEMENTED])
def test_every_other_status_means_the_service_is_down(code: grpc.StatusCode) -> None:
    error = domain_error(FailedCall(code, "Socket closed"), "index shard 1 at s:1")
    assert type(error) is Unavailable
    assert str(error) == f"index shard 1 at s:1: {code.name} Socket closed"


def test_a_call_that_never_connected_is_not_sent() -> None:
    """The request never left the gateway, so it changed nothing: a write's summary may say so."""
    details = ("failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Failed to connect to "
               "remote host: Connection refused")  # gRPC's own words, grpcio 1.85
    error = domain_error(FailedCall(grpc.StatusCode.UNAVAILABLE, details), "index shard 1 at s:1")
    assert type(error) is NotSent and isinstance(error, Unavailable)


@pytest.mark.parametrize("details", [
    "shard 1: Redis unavailable while writing items: Error 111 connecting to localhost:6379. Connection refused.; "
    "it may have been applied, and the shard will find out from Redis",  # the shard's answer: it was sent
    "connection refused",
    "Socket closed; failed to connect to all addresses"])
def test_words_of_a_shard_never_make_a_call_not_sent(details: str) -> None:
    """Only gRPC's own connect failure proves the request never left; a shard's answer about its
    Redis (redis-py says "Connection refused") is a write that may have been applied."""
    error = domain_error(FailedCall(grpc.StatusCode.UNAVAILABLE, details), "index shard 1 at s:1")
    assert type(error) is Unavailable


def test_an_rpc_error_without_a_status_is_unavailable() -> None:
    assert isinstance(domain_error(grpc.RpcError(), "index shard 0 at s:0"), Unavailable)


class SlowEncoder:
    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.asked = 0

    def encode(self, images: Sequence[bytes], timeout: float) -> list[Encoding]:
        raise AssertionError("not used at start")

    def model(self, timeout: float) -> ModelFacts:
        self.asked += 1
        if self.asked <= self.failures:
            raise self.error
        return FACTS


def test_wait_for_model_retries_until_the_encoder_answers() -> None:
    encoder = SlowEncoder(2, Unavailable("encoder at e:1: UNAVAILABLE"))
    assert wait_for_model(encoder, timeout_s=5, poll_s=0) == FACTS
    assert encoder.asked == 3


def test_wait_for_model_gives_up_after_its_timeout() -> None:
    with pytest.raises(Unavailable, match=r"encoder not ready after 0\.05 s"):
        wait_for_model(SlowEncoder(10**9, Unavailable("down")), timeout_s=0.05, poll_s=0.01)


def test_wait_for_model_does_not_retry_a_refusal() -> None:
    encoder = SlowEncoder(1, Mismatch("bad model metadata"))
    with pytest.raises(Mismatch):
        wait_for_model(encoder, timeout_s=5, poll_s=0)
    assert encoder.asked == 1
