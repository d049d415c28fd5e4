"""Packed shard answers (``PackedHits`` → ``HitColumns`` → array merge) give exactly the hits of the
old path (one ``Hit`` message per hit → heap merge), on random data with ties and re-ranking."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from gateway.clients import ShardClient
from gateway.convert import hit_columns_from_pb, hit_from_pb, shard_search_response_from_pb
from gateway.core import Hit, HitColumns, ShardQuery
from gateway.merge import merge_topk
from index_service.servicer import _hit_pb, _packed_pb
from index_service.shard import ShardHit
from orbithash import Unavailable
from orbithash_api.v1 import orbithash_pb2 as pb

ALPHABET = ["a", "b", "z", "é", "ø", "中", "\U0001f600", "0", "~"]  # multi-byte ids: bytewise = code point order


def random_id(rng: np.random.Generator) -> str:
    return "".join(rng.choice(ALPHABET, int(rng.integers(1, 5))).tolist())


def shard_answers(rng: np.random.Generator, shards: int, k: int, reranked: bool) -> list[list[ShardHit]]:
    """Per shard its own top-k, sorted the way a shard sorts: (distance or score, id); ids unique overall."""
    taken: set[str] = set()
    answers = []
    for _ in range(shards):
        hits = []
        for _ in range(int(rng.integers(0, k + 1))):
            item = random_id(rng)
            while item in taken:
                item += random_id(rng)
            taken.add(item)
            score = float(np.float32(rng.integers(-4, 4) / 2)) if reranked else 0.0  # few values: many ties
            hits.append(ShardHit(item, int(rng.integers(0, 4)), int(rng.integers(-1, 21)), score))
        answers.append(sorted(hits, key=(lambda h: (h.score, h.id)) if reranked else (lambda h: (h.distance, h.id))))
    return answers


def wire(message: pb.ShardSearchResponse) -> pb.ShardSearchResponse:
    return pb.ShardSearchResponse.FromString(message.SerializeToString())


@pytest.mark.parametrize("reranked", [False, True])
@pytest.mark.parametrize("seed", range(40))
def test_packed_and_old_path_give_the_same_hits(seed: int, reranked: bool) -> None:
    rng = np.random.default_rng(seed)
    shards, k = int(rng.integers(1, 5)), int(rng.integers(1, 30))
    answers = shard_answers(rng, shards, k, reranked)
    old_lists, new_lists = [], []
    for s, hits in enumerate(answers):
        old = wire(pb.ShardSearchResponse(results=[pb.HitList(hits=[_hit_pb(h, s) for h in hits])]))
        new = wire(pb.ShardSearchResponse(packed=[_packed_pb(hits, s, reranked)]))
        old_lists.append(shard_search_response_from_pb(old)[0])
        columns = shard_search_response_from_pb(new)[0]
        assert isinstance(columns, HitColumns)
        assert columns.hits() == old_lists[-1]
        new_lists.append(columns)
    expected = merge_topk(old_lists, k, by_score=reranked)
    assert merge_topk(new_lists, k, by_score=reranked) == expected
    mixed = [c if s % 2 else lst for s, (c, lst) in enumerate(zip(new_lists, old_lists, strict=True))]
    assert merge_topk(mixed, k, by_score=reranked) == expected
    assert all(isinstance(h, Hit) for h in expected)


def test_a_tie_at_the_cut_is_broken_by_id_bytes_across_shards() -> None:
    answers = [[ShardHit("b", 1, 0), ShardHit("é", 2, 0)], [ShardHit("a", 2, 0), ShardHit("z", 2, 0)]]
    columns = [hit_columns_from_pb(wire(pb.ShardSearchResponse(packed=[_packed_pb(h, s, False)])).packed[0])
               for s, h in enumerate(answers)]
    assert [(h.id, h.shard) for h in merge_topk(columns, 3)] == [("b", 0), ("a", 1), ("z", 1)]


def test_empty_answers_merge_to_nothing() -> None:
    columns = [hit_columns_from_pb(_packed_pb([], s, False)) for s in range(3)]
    assert merge_topk(columns, 10) == []


def test_inconsistent_packed_hits_are_refused() -> None:
    packed = _packed_pb([ShardHit("a", 1, 0), ShardHit("b", 1, 0)], 0, False)
    packed.labels = packed.labels[:4]
    with pytest.raises(ValueError, match="inconsistent"):
        hit_columns_from_pb(packed)


@pytest.mark.parametrize(("ids", "ends"), [
    ("é".encode() + b"b", [1, 3]),  # an end inside a two-byte character
    (b"abc", [2, 1, 3]),  # ends going back
    (b"a\xffb", [1, 3]),  # not UTF-8
])
def test_packed_ids_that_do_not_cut_into_text_are_refused(ids: bytes, ends: list[int]) -> None:
    """They passed the count checks, then the merge raised UnicodeDecodeError instead of the
    client reporting the shard failed."""
    n = len(ends)
    packed = pb.PackedHits(shard=2, ids=ids, id_ends=np.array(ends, "<u4").tobytes(),
                           distances=np.zeros(n, "<u4").tobytes(), labels=np.zeros(n, "<i4").tobytes())
    with pytest.raises(ValueError, match=r"^packed hits of shard 2: ids .* are not"):
        hit_columns_from_pb(packed)
    client = ShardClient(2, "127.0.0.1:1")
    client._stub = SimpleNamespace(Search=lambda request, timeout: pb.ShardSearchResponse(packed=[packed]))
    with pytest.raises(Unavailable, match=r"^index shard 2 at 127\.0\.0\.1:1: packed hits of shard 2: ids"):
        client.search(ShardQuery((b"\0",), 5, 8, "v1"), 1.0)  # a failed shard: its hits are missing, flagged
    client.close()


def test_the_old_answer_is_still_read() -> None:
    reply = pb.ShardSearchResponse(results=[pb.HitList(hits=[pb.Hit(id="x", distance=3, label=2, shard=1)])])
    assert shard_search_response_from_pb(reply) == [[hit_from_pb(reply.results[0].hits[0])]]
