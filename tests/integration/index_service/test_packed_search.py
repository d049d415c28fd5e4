"""A real shard over gRPC answers packed searches with exactly the hits of the old per-hit answer:
plain, filtered by radius and label, re-ranked, and batched; with metadata it answers the old way."""

from __future__ import annotations

import grpc
import numpy as np
import redis

from gateway.clients import ShardClient
from gateway.core import HitColumns, ShardQuery
from gateway.merge import merge_topk
from index_service.__main__ import build_server
from index_service.settings import IndexSettings
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc

BITS = 64
VERSION = "v1"


def test_packed_answers_equal_the_old_ones(redis_client: redis.Redis, shard0_redis: dict[str, str]) -> None:
    server = build_server(IndexSettings(**shard0_redis, bits=BITS, model_version=VERSION, shard=0,
                                        metrics_port=0, port=0))
    server.start()
    packed, old = ShardClient(0, server.address), ShardClient(0, server.address, packed=False)
    try:
        rng = np.random.default_rng(11)
        # Few distinct codes and multi-byte ids: many ties at every distance, broken by id bytes.
        centres = rng.integers(0, 256, (8, BITS // 8), dtype=np.uint8)
        codes = [bytes(centres[i % 8] ^ (rng.random(BITS // 8) < 0.05).astype(np.uint8)) for i in range(600)]
        ids = [f"{'éa中z'[i % 4]}-{i * 7919 % 1000}" for i in range(600)]
        with grpc.insecure_channel(server.address) as channel:
            items = [pb.Item(id=i, code=c, label=n % 5) for n, (i, c) in enumerate(zip(ids, codes, strict=True))]
            rpc.IndexShardStub(channel).Add(pb.AddRequest(items=items, bits=BITS, model_version=VERSION), timeout=30)
        queries = tuple(codes[:3]) + tuple(bytes(q) for q in rng.integers(0, 256, (2, BITS // 8), dtype=np.uint8))
        u = tuple(float(x) for x in rng.normal(size=len(queries) * BITS))
        cases = [ShardQuery(codes=queries, k=50, bits=BITS, model_version=VERSION),
                 ShardQuery(codes=queries, k=200, bits=BITS, model_version=VERSION, max_distance=6, label=2),
                 ShardQuery(codes=queries, k=30, bits=BITS, model_version=VERSION, u=u, candidates=120)]
        for query in cases:
            new, before = packed.search(query, 10), old.search(query, 10)
            assert all(isinstance(c, HitColumns) for c in new)
            assert all(isinstance(h, list) for h in before)
            assert [c.hits() for c in new] == before
            by_score = bool(query.u)
            for c, hits in zip(new, before, strict=True):
                assert merge_topk([c], query.k, by_score) == merge_topk([hits], query.k, by_score) == hits
        with_meta = ShardQuery(codes=queries[:1], k=5, bits=BITS, model_version=VERSION, with_metadata=True)
        answered = packed.search(with_meta, 10)
        assert isinstance(answered[0], list)  # the old per-hit answer, with the same hits
        assert answered == old.search(with_meta, 10) and len(answered[0]) == 5
    finally:
        packed.close()
        old.close()
        server.stop(0)
