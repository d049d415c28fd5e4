"""Replies that carry thumbnails against the real cluster: one that cannot fit gRPC's message limit
is refused with a status that says so and what to lower. Leaves the cluster as it found it."""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial

import grpc
import pytest

from gateway.placement import shard_for
from orbithash.metadata import MAX_THUMBNAIL_BYTES
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.cluster import Cluster
from orbithash_serving.server import MAX_MESSAGE_BYTES

ITEMS = 300  # each with the largest thumbnail allowed: 75 MiB in all
QUERIES = 4  # × k = ITEMS: 1200 hits, 300 MiB of thumbnails, over the 256 MiB message limit
OPTIONS = [("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),  # as orbithash_client sets them
           ("grpc.max_send_message_length", MAX_MESSAGE_BYTES)]


@pytest.fixture(scope="module")
def gateway(cluster: Cluster) -> Iterator[rpc.GatewayStub]:
    assert cluster.gateway is not None
    with grpc.insecure_channel(cluster.gateway.address, options=OPTIONS) as channel:
        yield rpc.GatewayStub(channel)


@pytest.fixture(scope="module")
def big_thumbnails(cluster: Cluster, gateway: rpc.GatewayStub) -> Iterator[bytes]:
    """ITEMS items sharing one code, each with a MAX_THUMBNAIL_BYTES thumbnail, written straight to
    the shard each id belongs on (the gateway only stores thumbnails it made); the code is yielded."""
    code = bytes(cluster.facts.bits // 8)
    ids = [f"big-thumbnail-{i:04d}" for i in range(ITEMS)]
    thumb = b"\xff\xd8" + bytes(MAX_THUMBNAIL_BYTES - 2)
    for shard, service in enumerate(cluster.shards):
        mine = [i for i in ids if shard_for(i, len(cluster.shards)) == shard]
        with grpc.insecure_channel(service.address, options=OPTIONS) as channel:
            stub = rpc.IndexShardStub(channel)
            for start in range(0, len(mine), 100):
                stub.Add(pb.AddRequest(items=[pb.Item(id=i, code=code, label=-1, thumbnail=thumb)
                                              for i in mine[start:start + 100]],
                                       bits=cluster.facts.bits, model_version=cluster.facts.version), timeout=60)
    try:
        yield code
    finally:
        assert gateway.Delete(pb.DeleteRequest(ids=ids), timeout=60).deleted == ITEMS


@pytest.mark.parametrize("leg", ["gateway", "shard", "get"])
def test_a_reply_too_large_for_its_thumbnails_says_so(gateway: rpc.GatewayStub, big_thumbnails: bytes,
                                                      leg: str) -> None:
    """1200 hits of 256 KiB thumbnails (300 MiB): the shards and the gateway did all the work, then
    gRPC refused to send the reply, and the caller got RESOURCE_EXHAUSTED 'Sent message larger than
    max (314620916 vs. 268435456)' from the gateway's own transport, which says neither k nor
    thumbnails. With 8 queries each shard's own reply is over the limit too; Get repeats ids."""
    if leg == "get":
        ids = [f"big-thumbnail-{i % ITEMS:04d}" for i in range(1024)]
        call = partial(gateway.Get, pb.GetItemsRequest(ids=ids, with_thumbnails=True))
    else:
        queries = [pb.Query(code=big_thumbnails)] * (QUERIES if leg == "gateway" else 2 * QUERIES)
        call = partial(gateway.SearchMany, pb.SearchManyRequest(queries=queries, k=ITEMS, with_thumbnails=True))
    with pytest.raises(grpc.RpcError) as err:
        call(timeout=120)
    details = err.value.details() or ""
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (err.value.code(), details)
    assert "the reply with thumbnails would be" in details and "over the 256 MiB message limit" in details, details
    assert "lower k, queries or ids" in details and "Get those of the hits you show" in details, details


def test_a_reply_within_the_limit_carries_every_thumbnail(gateway: rpc.GatewayStub, big_thumbnails: bytes) -> None:
    request = pb.SearchManyRequest(queries=[pb.Query(code=big_thumbnails)] * 3, k=ITEMS, with_thumbnails=True)
    results = gateway.SearchMany(request, timeout=120).results
    assert [len(r.hits) for r in results] == [ITEMS] * 3
    assert {len(h.thumbnail) for r in results for h in r.hits} == {MAX_THUMBNAIL_BYTES}
