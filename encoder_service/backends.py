"""Inference backends: the same ONNX model served by Triton or run in-process.

Both read the model's facts from the model itself (Triton config parameters or ONNX metadata)
and return ``(u, logits)`` for a batch of N×3×S×S uint8 pixels (the model normalises inside).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from types import ModuleType
from typing import Protocol

import numpy as np

from orbithash import OrbitHashError, TritonFailure, Unavailable
from orbithash.export.runtime import ExportedModel
from orbithash.model_facts import INPUT_NAME, OUTPUT_LOGITS, OUTPUT_U, ModelFacts, ModelFactsError


class InferenceBackend(Protocol):
    facts: ModelFacts

    def infer(self, batch: np.ndarray, timeout: float | None = None) -> tuple[np.ndarray, np.ndarray]: ...

    def ready(self) -> bool: ...


class OnnxRuntimeBackend(ExportedModel):
    """The embedded default: the exported model in this process (no deadline to honour)."""

    def infer(self, batch: np.ndarray, timeout: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        return super().infer(batch)

    def ready(self) -> bool:
        return True


def triton_error(exc: Exception) -> OrbitHashError:
    """Triton's failures by cause: unreachable/overloaded/late → Unavailable, the rest → internal."""
    status = str(getattr(exc, "status", lambda: "")() or "")
    message = exc.message() if hasattr(exc, "message") else str(exc)
    transient = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "CANCELLED")
    if any(t in status for t in transient) or "Deadline Exceeded" in message or "unavailable" in message.lower():
        return Unavailable(f"Triton is unavailable: {message}")
    return TritonFailure(f"Triton inference failed ({status or 'error'}): {message}")


# gRPC's default reconnect backoff (1 s, growing 1.6x to 120 s) leaves the channel waiting seconds
# after Triton is back; steps of at most 0.5 s let the encoder answer within a second of Triton being ready.
RECONNECT_BACKOFF = [
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
]


def triton_channel_args(tgrpc: ModuleType) -> list[tuple[str, int]]:
    """tritonclient's own defaults (``channel_args`` replaces them all), plus a short reconnect backoff."""
    keepalive = tgrpc.KeepAliveOptions()
    return [
        ("grpc.max_send_message_length", tgrpc.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.max_receive_message_length", tgrpc.MAX_GRPC_MESSAGE_SIZE),
        ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
        ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
        ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
        ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
        *RECONNECT_BACKOFF,
    ]


@dataclass(frozen=True)
class TritonTls:
    """TLS to Triton: ``ca`` verifies Triton's certificate; ``cert``/``key`` (both or neither) are the
    client identity that Triton's mutual TLS requires. PEM file paths, read once when connecting."""

    ca: str
    cert: str | None = None
    key: str | None = None

    def __post_init__(self) -> None:
        if (self.cert is None) != (self.key is None):
            raise ValueError("a client certificate and its key go together")

    def client_kwargs(self) -> dict[str, object]:
        return {"ssl": True, "root_certificates": self.ca, "private_key": self.key, "certificate_chain": self.cert}


class TritonBackend:
    """Triton over gRPC (KServe v2). One shared channel; the client is thread-safe for infer.

    With ``tls`` the channel is TLS (tritonclient's ``ssl`` options); the reconnect backoff's
    ``channel_args`` apply to secure channels alike."""

    def __init__(self, url: str, model_name: str, timeout_s: float, tls: TritonTls | None = None) -> None:
        import tritonclient.grpc as tgrpc
        from tritonclient.utils import InferenceServerException

        self._tgrpc = tgrpc
        self._error = InferenceServerException
        self._model = model_name
        self._timeout = timeout_s
        security = tls.client_kwargs() if tls else {}
        try:
            self._client = tgrpc.InferenceServerClient(url=url, channel_args=triton_channel_args(tgrpc), **security)
        except OSError as exc:
            raise Unavailable(f"cannot read a TLS file for Triton: {exc}") from exc
        self._lock = threading.Lock()
        try:
            if not self._client.is_model_ready(model_name, client_timeout=timeout_s):
                raise Unavailable(f"model {model_name!r} is not ready on Triton at {url}")
            config = self._client.get_model_config(model_name, as_json=True, client_timeout=timeout_s)
        except InferenceServerException as exc:
            raise Unavailable(f"Triton at {url} unreachable: {exc.message()}") from exc
        inputs = config.get("config", {}).get("input", [])
        if not inputs or inputs[0].get("data_type") != "TYPE_UINT8":
            raise ModelFactsError(f"Triton model {model_name!r} does not take uint8 pixels: re-export it")
        params = config.get("config", {}).get("parameters", {})
        try:
            self.facts = ModelFacts.from_params({k: v["string_value"] for k, v in params.items()})
        except (KeyError, TypeError) as exc:
            raise ModelFactsError(f"Triton model {model_name!r} carries no OrbitHash parameters") from exc

    def infer(self, batch: np.ndarray, timeout: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        tg = self._tgrpc
        deadline = self._timeout if timeout is None else max(0.001, min(self._timeout, timeout))
        inp = tg.InferInput(INPUT_NAME, list(batch.shape), "UINT8")
        inp.set_data_from_numpy(np.ascontiguousarray(batch, np.uint8))
        outputs = [tg.InferRequestedOutput(OUTPUT_U), tg.InferRequestedOutput(OUTPUT_LOGITS)]
        try:
            result = self._client.infer(self._model, [inp], outputs=outputs, client_timeout=deadline)
        except self._error as exc:
            raise triton_error(exc) from exc
        return result.as_numpy(OUTPUT_U), result.as_numpy(OUTPUT_LOGITS)

    def ready(self) -> bool:
        try:
            return bool(self._client.is_model_ready(self._model, client_timeout=2.0))
        except self._error:
            return False
