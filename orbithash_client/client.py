"""The OrbitHash client: one object per gateway, a method per operation.

Each method builds its request (``_convert``), makes the call through :meth:`OrbitHashClient._call`
(deadline, retries with backoff on UNAVAILABLE, status → exception) and converts the answer to
the dataclasses of :mod:`orbithash_client.types`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

import grpc

from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_client import _convert as convert
from orbithash_client.errors import InvalidArgument, Unavailable, from_rpc_error, status_of
from orbithash_client.retry import Retry, as_retry
from orbithash_client.types import (
    DeleteResult,
    Filter,
    GetResult,
    ImageSource,
    Info,
    IngestSummary,
    Item,
    Metadata,
    Query,
    SearchResult,
    UpdateResult,
    as_ids,
)

R = TypeVar("R")

# Trailing metadata of a failed Ingest: the IngestSummary of what that stream stored (see the proto).
INGEST_SUMMARY_KEY = "orbithash-ingest-summary-bin"
REQUEST_ID_KEY = "orbithash-request-id"  # one per write, the same on every try (see the proto's Gateway)
MAX_MESSAGE_BYTES = 256 * 1024 * 1024  # the services' own limit
_MIN_TIMEOUT_S = 0.001


def tls_credentials(ca_file: str | Path | None = None, cert_file: str | Path | None = None,
                    key_file: str | Path | None = None) -> grpc.ChannelCredentials:
    """TLS verifying the server with ``ca_file`` (None: the system's roots), with an optional client
    certificate."""
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together")

    def read(name: str, path: str | Path | None, what: str) -> bytes | None:
        if path is None:
            return None
        data = Path(path).read_bytes()
        if b"-----BEGIN" not in data:  # else gRPC only fails the first call, "Failed to create security handshaker"
            raise ValueError(f"{name} {path} holds no PEM {what} (no '-----BEGIN' line)")
        return data

    return grpc.ssl_channel_credentials(read("ca_file", ca_file, "certificate"), read("key_file", key_file, "key"),
                                        read("cert_file", cert_file, "certificate"))


def _is_loopback(target: str) -> bool:
    """Whether every address ``target`` names is loopback: an IP literal that is, or exactly ``localhost``.

    A name is never trusted for its look (``127.0.0.1.nip.io`` resolves wherever its owner likes).
    ``ipv4:``/``ipv6:`` targets may list several addresses: all of them must be loopback.
    """
    for scheme in ("dns:///", "dns:", "ipv4:", "ipv6:"):
        if target.startswith(scheme):
            target = target[len(scheme):]
            break
    return all(_host_is_loopback(_host_of(address)) for address in target.split(","))


def _host_of(address: str) -> str:
    """The host of ``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 literal."""
    if address.startswith("["):
        return address[1:address.find("]")] if "]" in address else address
    if address.count(":") == 1:
        return address.split(":", 1)[0]
    return address  # no port, or a bare IPv6 literal


def _host_is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _id_of_bytes(image: bytes) -> str:
    """The id an image given as bare bytes is stored under: its content hash (re-sending it replaces it)."""
    return hashlib.sha256(image).hexdigest()[:32]


@dataclass
class _Tally:
    """What an ingest call has stored so far, batch by batch."""

    received: int = 0
    ingested: int = 0
    replaced: int = 0
    per_shard: list[int] = field(default_factory=list)
    batches: int = 0
    retries: int = 0
    completed: int = 0

    def add(self, done: IngestSummary) -> None:
        self.received += done.received
        self.ingested += done.ingested
        self.replaced += done.replaced
        if len(self.per_shard) < len(done.per_shard):
            self.per_shard += [0] * (len(done.per_shard) - len(self.per_shard))
        for shard, n in enumerate(done.per_shard):
            self.per_shard[shard] += n

    def summary(self, failed_shards: Sequence[int] = ()) -> IngestSummary:
        return IngestSummary(self.received, self.ingested, self.replaced, tuple(self.per_shard), tuple(failed_shards),
                             self.batches, self.retries, self.completed)


class OrbitHashClient:
    """A client of one OrbitHash gateway (``host:port``).

    ``timeout``: the deadline of each call, retries included (seconds; a method's ``timeout=``
    overrides it); ``ingest_timeout``: the same for each ingest batch; ``retries``: how many times
    a call is sent again after UNAVAILABLE (an int, or a :class:`Retry` for the backoff too);
    ``token``: the bearer token sent with every call (a gateway with tokens needs one);
    ``ca_file``: TLS, verifying the gateway with this CA bundle (``tls=True`` alone: the system's
    roots); ``cert_file``/``key_file``: a client certificate, for a gateway that asks for one;
    ``credentials``: ready-made TLS channel credentials instead; ``metadata``: more headers sent with
    every call; ``options``: extra gRPC channel options; ``channel``: use this channel instead of
    opening one (the client then does not close it). A token is never sent over plaintext to
    anything but a loopback address.

    Use it as a context manager, or call :meth:`close`.
    """

    def __init__(self, target: str, *, timeout: float = 30.0, ingest_timeout: float = 300.0,
                 retries: int | Retry = 3, token: str | None = None, tls: bool = False,
                 ca_file: str | Path | None = None, cert_file: str | Path | None = None,
                 key_file: str | Path | None = None, credentials: grpc.ChannelCredentials | None = None,
                 metadata: Sequence[tuple[str, str]] = (), options: Sequence[tuple[str, Any]] = (),
                 channel: grpc.Channel | None = None) -> None:
        if timeout <= 0 or ingest_timeout <= 0:
            raise ValueError("timeout and ingest_timeout must be positive")
        self.target = target
        self.timeout = timeout
        self.ingest_timeout = ingest_timeout
        self.retry = as_retry(retries)
        if credentials is None and (tls or ca_file or cert_file or key_file):
            credentials = tls_credentials(ca_file, cert_file, key_file)
        if token is not None:
            if credentials is None and channel is None and not _is_loopback(target):
                raise ValueError(f"a token would cross the network in plaintext to {target}: "
                                 "pass ca_file= (or tls=True) for TLS")
            metadata = (*metadata, ("authorization", f"Bearer {token}"))
        self._metadata = tuple(metadata)
        self._owns_channel = channel is None
        if channel is None:
            opts = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), *options]
            channel = (grpc.insecure_channel(target, options=opts) if credentials is None
                       else grpc.secure_channel(target, credentials, options=opts))
        self._channel = channel
        self._stub = rpc.GatewayStub(channel)

    # -- lifecycle ---------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_channel:
            self._channel.close()

    def __enter__(self) -> OrbitHashClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"OrbitHashClient({self.target!r}, timeout={self.timeout}, retries={self.retry.retries})"

    def wait_ready(self, timeout: float = 10.0) -> None:
        """Block until the channel to the gateway is connected; :class:`Unavailable` after ``timeout``."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError as exc:
            raise Unavailable(f"no connection to {self.target} within {timeout:g} s",
                              grpc.StatusCode.UNAVAILABLE) from exc

    # -- the one way calls are made ----------------------------------------------------------------

    def _attempts(self, attempt: Callable[[float], R], timeout: float,
                  failed: Callable[[grpc.RpcError], None] | None = None) -> tuple[R, int]:
        """``attempt(seconds_left)`` until it answers, retrying what the policy allows while the
        deadline leaves room for the wait; the answer and the number of retries. ``failed`` sees
        every failed attempt; the last failure is raised as it came (a ``grpc.RpcError``)."""
        deadline = time.monotonic() + timeout
        delays = self.retry.delays()
        retries = 0
        while True:
            try:
                return attempt(max(deadline - time.monotonic(), _MIN_TIMEOUT_S)), retries
            except grpc.RpcError as exc:
                if failed is not None:
                    failed(exc)
                code, _ = status_of(exc)
                delay = next(delays, None) if self.retry.retryable(code) else None
                if delay is None or time.monotonic() + delay >= deadline:
                    raise
                self.retry.sleep(delay)
                retries += 1

    def _write_metadata(self) -> tuple[tuple[str, str], ...]:
        """The metadata of one write: a fresh request id, sent with every try of it, so the gateway
        answers a try sent after a lost reply with the first try's reply instead of running again."""
        return (*self._metadata, (REQUEST_ID_KEY, uuid.uuid4().hex))

    def _call(self, method: str, request: Any, timeout: float | None, context: str = "", write: bool = False) -> Any:
        """One unary call with the deadline, retries and error mapping."""
        stub_method = getattr(self._stub, method)
        metadata = self._write_metadata() if write else self._metadata
        try:
            reply, _ = self._attempts(lambda left: stub_method(request, timeout=left, metadata=metadata),
                                      self.timeout if timeout is None else timeout)
        except grpc.RpcError as exc:
            raise from_rpc_error(exc, context) from exc
        return reply

    # -- ingest ------------------------------------------------------------------------------------

    def ingest(self, items: Iterable[Item | ImageSource], *, batch_size: int = 64, timeout: float | None = None,
               progress: Callable[[IngestSummary], None] | None = None) -> IngestSummary:
        """Store images, streaming them in batches of ``batch_size`` (one Ingest stream each).

        ``items``: :class:`Item` values, image bytes (stored under their content hash, 32 hex
        characters) or paths (stored under the file name without its extension). Each batch is
        checked and encoded whole by the gateway before any of it is written; a batch that fails
        with UNAVAILABLE is sent again with backoff (ingest replaces by id, so that is safe).
        ``timeout``: each batch's deadline, retries included (default ``ingest_timeout``);
        ``progress`` is called with the running summary after each batch.

        An id given twice in one call is refused before the batch holding the second is sent.
        On failure the exception's ``summary`` says what was stored, and ``summary.completed``
        from where to resume.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        budget = self.ingest_timeout if timeout is None else timeout
        tally = _Tally()
        seen: dict[str, int] = {}
        for first, batch in _chunks(enumerate(items), batch_size):
            messages = [self._ingest_message(position, source, seen, tally) for position, source in batch]
            done = self._ingest_batch(messages, first, budget, tally)
            tally.add(done)
            tally.batches += 1
            tally.completed = first + len(batch)
            if progress is not None:
                progress(tally.summary())
        return tally.summary()

    def _ingest_message(self, position: int, source: Item | ImageSource, seen: dict[str, int],
                        tally: _Tally) -> pb.IngestItem:
        item = source if isinstance(source, Item) else None
        try:
            if item is None:
                image = convert.read_image(source)  # type: ignore[arg-type]
                item_id = _id_of_bytes(image) if isinstance(source, bytes | bytearray | memoryview) \
                    else Path(source).stem  # type: ignore[arg-type]
            else:
                item_id = item.id
                image = b""  # read below, once the id is known to be new
        except OSError as exc:
            raise InvalidArgument(f"item {position}: cannot read {source!s}: {exc.strerror or exc}",
                                  grpc.StatusCode.INVALID_ARGUMENT, tally.summary()) from exc
        earlier = seen.setdefault(item_id, position)
        if earlier != position:
            raise InvalidArgument(f"item {position}: id {item_id!r} was already given as item {earlier}; each id may "
                                  "appear once per ingest call", grpc.StatusCode.INVALID_ARGUMENT, tally.summary())
        if item is None:
            return convert.ingest_item_to_pb(item_id, image, None, None)
        try:
            image = convert.read_image(item.image)
        except OSError as exc:
            raise InvalidArgument(f"item {position} (id {item_id!r}): cannot read {item.image!s}: "
                                  f"{exc.strerror or exc}", grpc.StatusCode.INVALID_ARGUMENT, tally.summary()) from exc
        return convert.ingest_item_to_pb(item_id, image, item.label, item.metadata)

    def _ingest_batch(self, messages: list[pb.IngestItem], first: int, timeout: float, tally: _Tally
                      ) -> IngestSummary:
        """One batch as one stream, sent again after UNAVAILABLE; what it stored.

        ``replaced`` counts only ids that existed before the call: an attempt that failed half-way
        stored some of the batch, which the next attempt then "replaces" (their number is known
        from each failed attempt's summary)."""
        partials: list[IngestSummary | None] = []

        def failed(exc: grpc.RpcError) -> None:
            partials.append(_trailing_summary(exc))

        metadata = self._write_metadata()

        def stream(left: float) -> pb.IngestSummary:
            return self._stub.Ingest(iter(messages), timeout=left, metadata=metadata)

        try:
            reply, retries = self._attempts(stream, timeout, failed)
        except grpc.RpcError as exc:
            tally.retries += len(partials) - 1
            last = partials[-1] or IngestSummary()
            stored_before = _new_items(partials[:-1])
            tally.add(replace(last, replaced=max(0, last.replaced - stored_before)))
            context = f"batch of items {first}..{first + len(messages) - 1}: "
            raise from_rpc_error(exc, context, tally.summary(last.failed_shards)) from exc
        tally.retries += retries
        done = convert.ingest_summary_from_pb(reply)
        return replace(done, replaced=max(0, done.replaced - _new_items(partials)))

    # -- search ------------------------------------------------------------------------------------

    def search(self, *, image: ImageSource | None = None, code: bytes | None = None, id: str | None = None,
               k: int = 10, max_distance: int | None = None, label: int | None = None, filter: Filter | None = None,
               rerank: bool = False, rerank_candidates: int = 0, with_metadata: bool = False,
               with_thumbnails: bool = False, timeout: float | None = None) -> SearchResult:
        """The ``k`` stored items nearest the query by Hamming distance, best first (ties by id).

        The query is exactly one of ``image`` (bytes or a path), ``code`` (packed, the served
        model's bit length) or ``id`` (a stored item's). ``max_distance``: only hits within this
        radius; ``label``: only items of this label; ``filter``: only items whose metadata
        matches; ``rerank`` (image queries): order the ``rerank_candidates`` nearest (default 4·k)
        by the asymmetric score; ``with_metadata`` / ``with_thumbnails``: hits carry them.
        """
        query = Query(image=image, code=code, id=id)
        options = convert.search_options(k, max_distance, label, filter, rerank, rerank_candidates, with_metadata,
                                         with_thumbnails)
        reply = self._call("Search", convert.search_request(query, options), timeout)
        return convert.search_result_from_pb(reply, rerank)

    def search_many(self, queries: Iterable[Query], *, k: int = 10, max_distance: int | None = None,
                    label: int | None = None, filter: Filter | None = None, rerank: bool = False,
                    rerank_candidates: int = 0, with_metadata: bool = False, with_thumbnails: bool = False,
                    chunk_size: int = 128, timeout: float | None = None) -> list[SearchResult]:
        """Many queries sharing ``k`` and the filters, answered in order: one SearchMany call per
        ``chunk_size`` queries (the gateway encodes their images in one batch and asks each shard
        once for all their codes). ``timeout`` applies to each call."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        options = convert.search_options(k, max_distance, label, filter, rerank, rerank_candidates, with_metadata,
                                         with_thumbnails)
        given = list(queries)
        for i, query in enumerate(given):
            if not isinstance(query, Query):
                raise TypeError(f"query {i} is a {type(query).__name__}; give Query(image=...), Query(code=...) "
                                "or Query(id=...)")
        results: list[SearchResult] = []
        for first, chunk in _chunks(enumerate(given), chunk_size):
            request = pb.SearchManyRequest(queries=[convert.query_to_pb(q) for _, q in chunk],
                                           **options)  # type: ignore[arg-type]
            context = f"queries {first}..{first + len(chunk) - 1}: " if len(given) > chunk_size else ""
            reply = self._call("SearchMany", request, timeout, context)
            results += [convert.search_result_from_pb(r, rerank) for r in reply.results]
        return results

    # -- items by id -------------------------------------------------------------------------------

    def get(self, ids: str | Iterable[str], *, with_thumbnails: bool = False, chunk_size: int = 512,
            timeout: float | None = None) -> GetResult:
        """Stored items (code, label, shard, metadata; the thumbnail if asked) in request order,
        and the ids that are not stored; one call per ``chunk_size`` ids."""
        if chunk_size < 1:
            raise ValueError("chunk_size must be at least 1")
        wanted = as_ids(ids)
        if not wanted:
            return GetResult((), ())
        found: list[Any] = []
        missing: list[str] = []
        for first, chunk in _chunks(enumerate(wanted), chunk_size):
            context = f"ids {first}..{first + len(chunk) - 1}: " if len(wanted) > chunk_size else ""
            reply = self._call("Get", pb.GetItemsRequest(ids=[i for _, i in chunk], with_thumbnails=with_thumbnails),
                               timeout, context)
            part = convert.get_result_from_pb(reply)
            found += part.items
            missing += part.missing
        return GetResult(tuple(found), tuple(missing))

    def update_metadata(self, updates: Mapping[str, Metadata | None] | Iterable[tuple[str, Metadata | None]], *,
                        timeout: float | None = None) -> UpdateResult:
        """Replace the metadata of stored items whole (None clears it), in one call: checked whole
        before anything is written; ids not stored are reported as missing, never created."""
        pairs = list(updates.items() if isinstance(updates, Mapping) else updates)
        return convert.update_result_from_pb(
            self._call("UpdateMetadata", convert.metadata_updates_to_pb(pairs), timeout, write=True))

    def delete(self, ids: str | Iterable[str], *, timeout: float | None = None) -> DeleteResult:
        """Delete items by id, in one call (every id is checked before any is deleted). A try sent
        again after a lost reply gets the first try's reply from the gateway that ran it (another
        gateway replica would count the ids the first try deleted as missing)."""
        return convert.delete_result_from_pb(self._call("Delete", pb.DeleteRequest(ids=as_ids(ids)), timeout,
                                                        write=True))

    def info(self, *, timeout: float | None = None) -> Info:
        """The served model and every shard's item count and health."""
        return convert.info_from_pb(self._call("Info", pb.InfoRequest(), timeout))


def _chunks(numbered: Iterable[tuple[int, R]], size: int) -> Iterator[tuple[int, list[tuple[int, R]]]]:
    """(position of the first, the numbered values) per chunk of ``size``."""
    chunk: list[tuple[int, R]] = []
    for pair in numbered:
        chunk.append(pair)
        if len(chunk) == size:
            yield chunk[0][0], chunk
            chunk = []
    if chunk:
        yield chunk[0][0], chunk


def _trailing_summary(exc: grpc.RpcError) -> IngestSummary | None:
    """The IngestSummary a failed Ingest carries in its trailing metadata, if any."""
    trailing = exc.trailing_metadata() if isinstance(exc, grpc.Call) else None
    for key, value in trailing or ():
        if key == INGEST_SUMMARY_KEY and isinstance(value, bytes):
            return convert.ingest_summary_from_pb(pb.IngestSummary.FromString(value))
    return None


def _new_items(partials: Iterable[IngestSummary | None]) -> int:
    """Items that failed attempts stored under ids that were new: each is "replaced" later on."""
    return sum(p.ingested - p.replaced for p in partials if p is not None)
