"""The shard core on a real redis-server: searches never wait on writes, and one rule per input."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import redis
from prometheus_client import CollectorRegistry

from index_service.redis_connection import redis_clients
from index_service.settings import IndexSettings
from index_service.shard import Shard
from index_service.store import ShardStore, id_bucket_key
from orbithash import DeadlineExceeded, InvalidInput, ResourceExhausted, Unavailable
from orbithash.codes import MAX_ID_BYTES
from orbithash.metadata import SceneMeta
from orbithash_local.redis_server import RedisServer

BITS = 64
VERSION = "v1"


def make_shard(server: RedisServer, **kw: int) -> Shard:
    """Shard 0 connected as its own Redis user, as the launcher runs it."""
    client = server.client("shard-0", socket_timeout=30)
    shard = Shard(0, ShardStore(client, 0, BITS, VERSION), BITS, VERSION, max_k=kw.get("max_k", 1000),
                  max_batch=kw.get("max_batch", 64), registry=CollectorRegistry())
    shard.open()
    return shard


def codes(rng: np.random.Generator, n: int) -> list[bytes]:
    return [bytes(row) for row in rng.integers(0, 256, (n, BITS // 8), dtype=np.uint8)]


def wait_until_inside(thread: threading.Thread, functions: set[str], timeout: float = 10.0) -> None:
    """Until ``thread`` runs one of ``functions`` (somewhere on its stack): no sleep that passes by luck."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = sys._current_frames().get(thread.ident or -1)
        while frame is not None:
            if frame.f_code.co_name in functions:
                return
            frame = frame.f_back
        time.sleep(0.01)
    raise AssertionError(f"{thread.name} never reached {sorted(functions)} within {timeout} s")


def test_searches_go_on_while_a_write_hangs_in_redis(tmp_path: Path) -> None:
    """A write stuck in a stopped Redis must not hold up searches (they read the mirror only)."""
    server = RedisServer(tmp_path / "redis")
    try:
        shard = make_shard(server)
        rng = np.random.default_rng(0)
        stored = codes(rng, 20)
        shard.add([f"a{i}" for i in range(20)], stored, [0] * 20, BITS, VERSION)
        os.kill(server.process.pid, signal.SIGSTOP)
        writer = threading.Thread(target=lambda: shard.add(["late"], codes(rng, 1), [1], BITS, VERSION), daemon=True)
        writer.start()
        wait_until_inside(writer, {"read_response", "_read_from_socket"})  # waits on Redis's reply
        answered: list[list] = []
        searcher = threading.Thread(target=lambda: answered.append(shard.search([stored[3]], 1, None, None, BITS,
                                                                               VERSION)), daemon=True)
        searcher.start()
        searcher.join(5.0)
        assert answered, "a search waited for a write that hangs in Redis"
        assert answered[0][0][0].id == "a3" and answered[0][0][0].distance == 0
        os.kill(server.process.pid, signal.SIGCONT)
        writer.join(10.0)
        assert not writer.is_alive()
        assert shard.get(["late"])[0][0][0] == "late"
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def test_inputs_are_checked_before_any_write(redis_server: RedisServer, redis_client: redis.Redis) -> None:
    shard = make_shard(redis_server, max_batch=4)
    rng = np.random.default_rng(1)
    good = codes(rng, 2)
    cases = [
        (["ok", ""], good, "item 1"),
        (["ok", "x" * (MAX_ID_BYTES + 1)], good, f"at most {MAX_ID_BYTES}"),
        (["ok", "b"], [good[0], good[1][:3]], "codes 1: 3 bytes"),
    ]
    for ids, batch, message in cases:
        with pytest.raises(InvalidInput, match=message):
            shard.add(ids, batch, [0, 0], BITS, VERSION)
    with pytest.raises(ResourceExhausted, match="limit 4"):
        shard.add([f"i{i}" for i in range(5)], codes(rng, 5), [0] * 5, BITS, VERSION)
    with pytest.raises(ResourceExhausted, match="5 ids in one call, limit 4"):  # one script would block Redis
        shard.delete([f"i{i}" for i in range(5)])
    with pytest.raises(InvalidInput, match="labels"):
        shard.add(["ok", "b"], good, [0, -2], BITS, VERSION)
    with pytest.raises(InvalidInput, match=r"k must be in 1\.\.1000"):
        shard.search(good[:1], 1001, None, None, BITS, VERSION)
    assert len(shard) == 0 and redis_client.dbsize() == 1  # only the claimed meta hash


def test_a_write_that_timed_out_in_a_stopped_redis_is_never_applied(tmp_path: Path) -> None:
    """The caller was told the write failed; when Redis resumes, the queued script must not land."""
    server = RedisServer(tmp_path / "redis")
    try:
        client = server.client("shard-0", socket_timeout=0.5)
        shard = Shard(0, ShardStore(client, 0, BITS, VERSION), BITS, VERSION, max_k=10, max_batch=64,
                      registry=CollectorRegistry())
        shard.open()
        rng = np.random.default_rng(3)
        shard.add(["kept"], codes(rng, 1), [0], BITS, VERSION, remaining=5.0)
        os.kill(server.process.pid, signal.SIGSTOP)
        try:
            with pytest.raises(Unavailable):  # the client's socket timeout: the script sits in Redis's buffer
                shard.add(["late"], codes(rng, 1), [1], BITS, VERSION, remaining=0.8)
            time.sleep(0.5)  # past the write's deadline
        finally:
            os.kill(server.process.pid, signal.SIGCONT)
        time.sleep(0.3)  # Redis now runs what it had buffered
        check = server.client()
        assert check.hexists(id_bucket_key("orbithash", 0, "kept"), "kept")
        assert not check.hexists(id_bucket_key("orbithash", 0, "late"), "late"), "a timed-out write landed later"
        assert shard.get(["late"]) == ([], ["late"])
        with pytest.raises(DeadlineExceeded, match="nothing was written"):
            shard.add(["late"], codes(rng, 1), [1], BITS, VERSION, remaining=0.01)
        assert not check.hexists(id_bucket_key("orbithash", 0, "late"), "late")
    finally:
        server.stop()


def test_an_add_holding_an_id_twice_stores_the_last_and_says_so(tmp_path: Path) -> None:
    """The fuzzer (bench/fuzz.py) found an Add of [x, y, y] acknowledged as 3 stored items when 2
    were. Of a repeated id the last item wins, as in UpdateMetadata, and the reply counts each id
    once, in the mirror and in Redis (seen again after a restart)."""
    server = RedisServer(tmp_path / "redis")
    try:
        shard = make_shard(server)
        rng = np.random.default_rng(2)
        first, second, third, fourth = codes(rng, 4)
        shard.add(["kept"], [first], [0], BITS, VERSION)
        assert shard.add(["new", "twice", "kept", "twice", "kept"], [first, second, third, third, fourth],
                         [0, 1, 2, 3, 4], BITS, VERSION) == (3, 1)
        for current in (shard, make_shard(server)):
            assert len(current) == 3
            found, missing = current.get(["twice", "kept", "new"])
            assert missing == [] and [(i.id, i.code, i.label) for i in found] == [
                ("twice", third, 3), ("kept", fourth, 4), ("new", first, 0)]
            assert [h.id for h in current.search([second], 5, None, None, BITS, VERSION)[0]].count("twice") == 1
    finally:
        server.stop()


def service_shard(server: RedisServer, timeout_s: float, registry: CollectorRegistry | None = None) -> Shard:
    """Shard 0 with the Redis clients the service builds: a command that times out is sent again."""
    user, password = server.shard_credentials(0)
    settings = IndexSettings(model_version=VERSION, bits=BITS, redis_url=server.url, redis_username=user,
                             redis_password_file=str(password), redis_timeout_s=timeout_s, max_batch=64)
    client, probe = redis_clients(settings)
    shard = Shard(0, ShardStore(client, 0, BITS, VERSION, probe_client=probe), BITS, VERSION, max_k=100,
                  max_batch=64, registry=registry or CollectorRegistry())
    shard.open()
    return shard


def stall(server: RedisServer, seconds: float) -> threading.Thread:
    """Stop Redis now and let it go on after ``seconds`` (a fork, an fsync, a noisy neighbour)."""
    os.kill(server.process.pid, signal.SIGSTOP)
    resume = threading.Timer(seconds, os.kill, (server.process.pid, signal.SIGCONT))
    resume.start()
    return resume


def evalsha_calls(server: RedisServer) -> int:
    return int(server.client().info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0))


def stored_in_redis(server: RedisServer, item_id: str) -> bool:
    return bool(server.client().hexists(id_bucket_key("orbithash", 0, item_id), item_id))


def test_a_write_sent_again_after_a_lost_reply_is_answered_as_its_first_try(tmp_path: Path) -> None:
    """Redis stalls past the client's timeout, then runs the first try; the client sends the write
    again. That second try used to see the first one's effects: a delete answered "missing" (and
    the mirror kept the item Redis had deleted), an add of new ids answered "replaced". The
    reply must be the first try's, and the mirror must follow Redis."""
    server = RedisServer(tmp_path / "redis")
    try:
        shard = service_shard(server, timeout_s=0.3)
        rng = np.random.default_rng(4)
        shard.add(["x", "y"], codes(rng, 2), [0, 1], BITS, VERSION)
        shard.delete(["absent"])  # every script is loaded in Redis before the stalls
        shard.update_metadata(["absent"], [SceneMeta()])
        server.client().config_resetstat()
        writes = [
            (lambda: shard.delete(["x"], remaining=10.0), (["x"], [])),
            (lambda: shard.add(["n1", "n2"], codes(rng, 2), [2, 3], BITS, VERSION, remaining=10.0), (2, 0)),
            (lambda: shard.update_metadata(["y", "x"], [SceneMeta(sensor="MSI")] * 2, remaining=10.0),
             (["y"], ["x"])),
        ]
        for write, expected in writes:
            before = evalsha_calls(server)
            resume = stall(server, 0.5)
            time.sleep(0.02)
            try:
                assert write() == expected
            finally:
                resume.join()
            assert evalsha_calls(server) - before >= 2, "the write was not sent twice: the test proved nothing"
        assert not stored_in_redis(server, "x") and stored_in_redis(server, "n1")
        for current in (shard, service_shard(server, timeout_s=5.0)):
            assert len(current) == 3
            assert current.get(["x", "y", "n1", "n2"])[1] == ["x"]
            assert current.get(["y"], with_metadata=True)[0][0].metadata.sensor == "MSI"
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


@pytest.mark.parametrize("settle", ["probe", "next write"])
def test_a_write_whose_every_try_timed_out_is_settled_from_redis(tmp_path: Path, settle: str) -> None:
    """Every try timed out, so the caller is told UNAVAILABLE; then Redis runs what it had buffered.
    The mirror must learn what Redis did before the next write (or at the next readiness probe),
    not at the next restart: until then searches missed stored items and found deleted ones."""
    server = RedisServer(tmp_path / "redis")
    try:
        registry = CollectorRegistry()
        shard = service_shard(server, timeout_s=0.2, registry=registry)
        rng = np.random.default_rng(5)
        late_code = codes(rng, 1)
        shard.add(["kept"], codes(rng, 1), [0], BITS, VERSION)
        shard.delete(["absent"])
        resume = stall(server, 3.0)  # longer than two writes of three tries of 0.2 s and their backoff
        try:
            with pytest.raises(Unavailable):
                shard.add(["late"], late_code, [1], BITS, VERSION)
            with pytest.raises(Unavailable):  # Redis is still stopped: settling must wait for it
                shard.delete(["kept"])
        finally:
            resume.join()
        time.sleep(0.2)  # Redis runs the buffered tries
        assert stored_in_redis(server, "late"), "the buffered add did not run: the test proved nothing"
        if settle == "probe":
            assert shard.probe()
        else:
            shard.add(["after"], codes(rng, 1), [2], BITS, VERSION)
        assert shard.get(["late"])[0][0].code == late_code[0]
        assert [h.id for h in shard.search(late_code, 1, 0, None, BITS, VERSION)[0]] == ["late"]
        assert registry.get_sample_value("orbithash_index_unanswered_writes_total", {"outcome": "applied"}) == 1
        kept = stored_in_redis(server, "kept")  # the delete's tries may or may not have run by now
        assert (shard.get(["kept"])[1] == []) == kept
        reloaded = service_shard(server, timeout_s=5.0)
        assert sorted(i.id for i in reloaded.get(["kept", "late", "after"])[0]) == sorted(
            i.id for i in shard.get(["kept", "late", "after"])[0])
    finally:
        os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


def test_a_full_shard_refuses_an_add_before_writing_anything(tmp_path: Path) -> None:
    """Codes live in one Redis string, which Redis caps at proto-max-bulk-len (512 MiB by default:
    16.7M codes of 256 bits). The add that crossed it failed half-way: slot counter and id bucket
    written, the code refused; the reply was INTERNAL, and the shard could never load again."""
    server = RedisServer(tmp_path / "redis")
    try:
        server.client().config_set("proto-max-bulk-len", "1mb")  # its minimum: 32,768 codes of 32 bytes
        client = server.client("shard-0", socket_timeout=30)
        bits, limit = 256, 2**20

        def shard_on(store_client: redis.Redis) -> Shard:
            store = ShardStore(store_client, 0, bits, VERSION, max_string_bytes=limit)
            opened = Shard(0, store, bits, VERSION, max_k=10, max_batch=4096, registry=CollectorRegistry())
            opened.open()
            return opened

        shard = shard_on(client)
        rng = np.random.default_rng(6)
        room = limit // 32
        for a in range(0, room, 4096):
            n = min(4096, room - a)
            shard.add([f"i{a + j}" for j in range(n)], [bytes(c) for c in rng.integers(0, 256, (n, 32), np.uint8)],
                      [0] * n, bits, VERSION)
        before = dict(next_slot=server.client().get("orbithash:{shard-0}:next_slot"))
        with pytest.raises(ResourceExhausted, match=r"shard 0 is full: 32768 slots of 32768"):
            shard.add(["one-more", "i1"], [bytes(32), bytes(32)], [0, 0], bits, VERSION)
        assert dict(next_slot=server.client().get("orbithash:{shard-0}:next_slot")) == before
        assert not stored_in_redis(server, "one-more") and len(shard) == room
        assert shard.delete(["i5"]) == (["i5"], [])  # a freed slot takes the next item
        assert shard.add(["one-more"], [bytes(32)], [0], bits, VERSION) == (1, 0)
        assert len(shard_on(server.client("shard-0", socket_timeout=30))) == room  # and it still loads
    finally:
        server.stop()
