"""Hostile or unlucky input against the real cluster: a precise status, a message a person can act
on, and nothing stored by a refused request. Each test leaves the cluster as it found it."""

from __future__ import annotations

import io
import os
import signal
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from PIL import Image

from gateway.servicer import INGEST_SUMMARY_KEY
from orbithash.data import Split
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import Cluster


@pytest.fixture(scope="module")
def channel(cluster: Cluster) -> Iterator[grpc.Channel]:
    assert cluster.gateway is not None
    options = [("grpc.max_send_message_length", 512 * 1024 * 1024)]
    with grpc.insecure_channel(cluster.gateway.address, options=options) as ch:
        yield ch


@pytest.fixture(scope="module")
def gateway(channel: grpc.Channel) -> rpc.GatewayStub:
    return rpc.GatewayStub(channel)


@pytest.fixture()
def total(gateway: rpc.GatewayStub) -> Iterator[int]:
    """Items in the cluster before the test; the test must leave exactly as many."""
    before = gateway.Info(pb.InfoRequest(), timeout=10).total
    yield before
    assert gateway.Info(pb.InfoRequest(), timeout=10).total == before


def refused(call: Callable[..., object], *args: object, **kwargs: object) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(*args, **kwargs)
    return err.value


def raw(channel: grpc.Channel, method: str, payload: bytes, stream: bool = False) -> grpc.RpcError:
    """Send bytes that are not a valid message (the stubs would refuse to build them)."""
    path = f"/orbithash.v1.Gateway/{method}"
    if stream:
        call = channel.stream_unary(path, request_serializer=bytes, response_deserializer=bytes)
        return refused(call, iter([payload]), timeout=10)
    return refused(channel.unary_unary(path, request_serializer=bytes, response_deserializer=bytes),
                   payload, timeout=10)


def field(number: int, value: bytes) -> bytes:
    """One length-delimited protobuf field (value shorter than 128 bytes)."""
    return bytes([number << 3 | 2, len(value)]) + value


def test_ids_that_are_not_utf8_are_invalid_argument(channel: grpc.Channel, total: int) -> None:
    bad_id = b"bad\xff\xfeid"
    for method, payload, stream in [("Ingest", field(1, bad_id) + field(2, b"img"), True),
                                    ("Delete", field(1, b"ok") + field(1, bad_id), False),
                                    ("Search", field(3, bad_id) + bytes([4 << 3, 5]), False)]:
        err = raw(channel, method, payload, stream)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.details())
        assert "UTF-8" in err.details(), err.details()


def test_broken_bytes_are_told_apart_from_text_that_is_not_utf8(channel: grpc.Channel, total: int) -> None:
    """The fuzzer (bench/fuzz.py) saw every unparsable request, even cut-off bytes of an Info
    request that has no string field, blamed on UTF-8: the message must name what is wrong."""
    cut = field(3, b"item-1")[:-2]  # a length that runs past the end
    for method, payload, stream in [("Search", cut, False), ("Info", b"\x0a\x05ab", False), ("Ingest", cut, True),
                                    ("Delete", b"\xff\xff\xff", False)]:
        err = raw(channel, method, payload, stream)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, err.details())
        assert err.details().startswith(f"the {method} request is not a well-formed protobuf message"), err.details()
        assert "UTF-8" not in err.details(), err.details()


@pytest.mark.parametrize("compression", [grpc.Compression.Gzip, grpc.Compression.Deflate])
def test_a_compressed_request_is_refused_before_it_is_inflated(gateway: rpc.GatewayStub, total: int,
                                                               compression: grpc.Compression) -> None:
    """100 MiB of zeros cross the wire as ~100 KB of gzip; inflated, such a request held ~4× its size
    in the gateway before any limit was checked (250 MiB: 1.2 GB). Images and codes do not compress,
    so the services accept no compressed message at all (gRPC's own UNIMPLEMENTED)."""
    bomb = bytes(100 * 2**20)
    err = refused(gateway.Search, pb.SearchRequest(image=bomb, k=5), timeout=30, compression=compression)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "is disabled" in err.details()
    err = refused(gateway.Ingest, iter([pb.IngestItem(id="bomb", image=bomb)]), timeout=30, compression=compression)
    assert err.code() == grpc.StatusCode.UNIMPLEMENTED
    assert gateway.Info(pb.InfoRequest(), timeout=10).total == total


def test_a_write_sent_again_with_its_request_id_gets_the_first_reply(gateway: rpc.GatewayStub, ucm_subset: Split,
                                                                      total: int) -> None:
    """A client that lost a reply sends the write again: run twice, the Delete said "missing" for
    the id it had deleted and the Ingest "replaced" for the item it had stored."""
    image = ucm_subset.database[0].data
    first_try = [("orbithash-request-id", "ingest-try-1")]
    stored = gateway.Ingest(iter([pb.IngestItem(id="replayed", image=image)]), timeout=60, metadata=first_try)
    again = gateway.Ingest(iter([pb.IngestItem(id="replayed", image=image)]), timeout=60, metadata=first_try)
    assert (again.ingested, again.replaced) == (stored.ingested, stored.replaced) == (1, 0)
    # The same id on another stream (a client bug): refused, never answered "stored 1" for items it did not store.
    err = refused(gateway.Ingest, iter([pb.IngestItem(id="not-replayed", image=image)]), timeout=60,
                  metadata=first_try)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "already used for another Ingest" in err.details()
    assert gateway.Info(pb.InfoRequest(), timeout=10).total == total + 1
    fresh = gateway.Ingest(iter([pb.IngestItem(id="replayed", image=image)]), timeout=60,
                           metadata=[("orbithash-request-id", "ingest-try-2")])
    assert fresh.replaced == 1  # another write: it ran
    delete_try = [("orbithash-request-id", "delete-1")]
    deleted = gateway.Delete(pb.DeleteRequest(ids=["replayed"]), timeout=10, metadata=delete_try)
    assert gateway.Delete(pb.DeleteRequest(ids=["replayed"]), timeout=10, metadata=delete_try) == deleted
    assert (deleted.deleted, list(deleted.missing)) == (1, [])
    err = refused(gateway.Delete, pb.DeleteRequest(ids=["other"]), timeout=10, metadata=delete_try)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "already used for another Delete" in err.details()
    err = refused(gateway.Delete, pb.DeleteRequest(ids=["x"]), timeout=10,
                  metadata=[("orbithash-request-id", "not plain;")])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "orbithash-request-id must be" in err.details()


def test_an_empty_search_is_told_what_is_missing(gateway: rpc.GatewayStub) -> None:
    err = refused(gateway.Search, pb.SearchRequest(), timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "no query: set one of image, code or id" in err.details()
    err = refused(gateway.Search, pb.SearchRequest(id="", k=3), timeout=10)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "non-empty" in err.details()


@pytest.mark.parametrize(("bad", "needle"), [
    (pb.IngestItem(id="bad-in-1", image=b"not an image"), "item 3 (id 'bad-in-1'): "),
    (pb.IngestItem(id="bad-in-0", image=b""), "item 3 (id 'bad-in-0'): "),
    (pb.IngestItem(id="bad-in-2", label=999), "item 3 (id 'bad-in-2'): label 999 is not a class"),
    (pb.IngestItem(id="bad-in-x", label=-5), "label -5 is not a class"),
    (pb.IngestItem(id="x" * 300), "item 3: the id 'xxxxxxxx"),
])
def test_a_bad_item_late_in_a_stream_stores_nothing(gateway: rpc.GatewayStub, ucm_subset: Split, total: int,
                                                    bad: pb.IngestItem, needle: str) -> None:
    good = [pb.IngestItem(id=f"bad-in-ok-{i}", image=r.data) for i, r in enumerate(ucm_subset.queries[:3])]
    if not bad.image and bad.id != "bad-in-0":
        bad.image = ucm_subset.queries[5].data
    err = refused(gateway.Ingest, iter([*good, bad]), timeout=60)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in err.details() and "nothing was stored" in err.details(), err.details()
    assert len(err.details()) < 400
    reply = gateway.Delete(pb.DeleteRequest(ids=[g.id for g in good]), timeout=10)
    assert reply.deleted == 0, "a refused stream stored some of its items"


def test_an_id_given_twice_refuses_the_stream(gateway: rpc.GatewayStub, ucm_subset: Split, total: int) -> None:
    images = [r.data for r in ucm_subset.queries[:3]]
    items = [pb.IngestItem(id="twice", image=images[0]), pb.IngestItem(id="once", image=images[1]),
             pb.IngestItem(id="twice", image=images[2])]
    err = refused(gateway.Ingest, iter(items), timeout=60)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "item 2: id 'twice' was already given as item 0" in err.details()
    assert gateway.Delete(pb.DeleteRequest(ids=["twice", "once"]), timeout=10).deleted == 0


def test_large_images_are_batched_under_the_message_limit(gateway: rpc.GatewayStub, total: int) -> None:
    """Sixteen 17 MB images in one stream (272 MB): more than one encoder message may carry."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2100, 2100, 4), dtype=np.uint8)  # noise: PNG cannot compress it
    items = []
    for i in range(16):
        pixels[0, 0, 0] = i
        buffer = io.BytesIO()
        Image.fromarray(pixels, "RGBA").save(buffer, "PNG", compress_level=0)
        items.append(pb.IngestItem(id=f"large-{i:02d}", image=buffer.getvalue()))
    assert sum(len(i.image) for i in items) > 256 * 1024 * 1024
    summary = gateway.Ingest(iter(items), timeout=240)
    assert (summary.ingested, summary.received, sum(summary.per_shard)) == (16, 16, 16)
    assert gateway.Delete(pb.DeleteRequest(ids=[i.id for i in items]), timeout=10).deleted == 16


def test_a_stopped_shard_during_ingest_is_told_with_what_was_stored(
        cluster: Cluster, gateway: rpc.GatewayStub, ucm_subset: Split, total: int) -> None:
    items = [pb.IngestItem(id=f"half-{i:02d}", image=r.data) for i, r in enumerate(ucm_subset.queries[:12])]
    shard = cluster.shards[1].process.pid
    os.kill(shard, signal.SIGSTOP)
    try:
        err = refused(gateway.Ingest, iter(items), timeout=8)
    finally:
        os.kill(shard, signal.SIGCONT)
    assert err.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED), err.details()
    summary = pb.IngestSummary.FromString(dict(err.trailing_metadata())[INGEST_SUMMARY_KEY])
    assert list(summary.failed_shards) == [1] and summary.received == 12
    assert f"stored {summary.ingested} of 12 items" in err.details()
    # exactly what the summary says is there: shard 0's items, none of shard 1's, even after it resumed
    stored = gateway.Delete(pb.DeleteRequest(ids=[i.id for i in items]), timeout=10)
    assert stored.deleted == summary.ingested == summary.per_shard[0] > 0


def test_a_stopped_shard_costs_only_its_hits_within_the_callers_deadline(
        cluster: Cluster, gateway: rpc.GatewayStub, ucm_subset: Split) -> None:
    query = pb.SearchRequest(image=ucm_subset.queries[0].data, k=5)
    gateway.Search(query, timeout=30)
    shard = cluster.shards[0].process.pid
    os.kill(shard, signal.SIGSTOP)
    try:
        reply = gateway.Search(query, timeout=2.0)  # the gateway's own per-shard timeout is 10 s
    finally:
        os.kill(shard, signal.SIGCONT)
    assert reply.partial and list(reply.failed_shards) == [0]
    assert all(h.shard == 1 for h in reply.hits)


def test_info_reports_a_shard_without_redis_as_unhealthy(cluster: Cluster, gateway: rpc.GatewayStub) -> None:
    assert cluster.redis is not None
    redis_pid = cluster.redis.process.pid
    os.kill(redis_pid, signal.SIGSTOP)
    try:
        deadline = 8.0  # the shards' readiness probe runs every 2 s with a short Redis timeout
        start = time.monotonic()
        while True:
            info = gateway.Info(pb.InfoRequest(), timeout=10)
            if not any(s.healthy for s in info.shards):
                break
            assert time.monotonic() - start < deadline, "Info still says healthy while Redis is stopped"
            time.sleep(0.2)
    finally:
        os.kill(redis_pid, signal.SIGCONT)
    start = time.monotonic()  # and back: the next test finds every shard ready again
    while not all(s.healthy for s in gateway.Info(pb.InfoRequest(), timeout=10).shards):
        assert time.monotonic() - start < deadline, "Info did not report the shards healthy after Redis resumed"
        time.sleep(0.2)
