"""Redis locked down, on a real redis-server: passwords, one ACL user per shard, TLS with client certificates."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import redis
from pydantic import ValidationError

from index_service.__main__ import build_server
from index_service.redis_connection import RedisAccessDenied, redis_clients
from index_service.settings import IndexSettings
from index_service.store import ShardStore, id_bucket_key
from orbithash import InvalidInput, Unavailable
from orbithash_api.v1 import orbithash_pb2 as pb
from orbithash_api.v1 import orbithash_pb2_grpc as rpc
from orbithash_local.pki import Identity, cluster_pki
from orbithash_local.redis_server import RedisServer
from orbithash_serving.tls import channel_credentials

BITS = 64
VERSION = "v1"
OTHER = "orbithash:{shard-1}:meta"


def password(server: RedisServer, user: str) -> str:
    return server.credentials(user)[1].read_text().strip()


def exercise(store: ShardStore) -> None:
    """Every operation the shard asks of its store, as that store's Redis user."""
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 256, (4, BITS // 8), dtype=np.uint8)
    store.claim()
    slots, existing = store.upsert(["a", "b", "c", "d"], codes, np.arange(4, dtype=np.int32),
                                   metadata=[b"m", b"", b"n", b""], thumbnails=[b"t", b"", b"", b""])
    assert sorted(slots.tolist()) == [0, 1, 2, 3] and existing == 0
    assert store.delete(["b", "zz"]) == (["b"], ["zz"])
    assert store.update_metadata(["a", "q"], [b"x", b"y"]) == (["a"], ["q"])
    assert store.thumbnails(["a", "c"]) == [b"t", b""]
    assert store.count() == 3 and store.ping()
    loaded = store.load()
    assert sorted(loaded.ids) == ["a", "c", "d"] and dict(zip(loaded.ids, loaded.metadata, strict=True))["a"] == b"x"
    store.upsert(["b"], codes[:1], np.zeros(1, np.int32))  # takes the freed slot (RPOP)


@pytest.fixture()
def admin(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis_server.client()
    client.flushall()
    client.acl_log_reset()
    yield client
    client.close()


def test_a_client_without_or_with_a_wrong_password_is_refused(redis_server: RedisServer) -> None:
    with pytest.raises(redis.AuthenticationError), redis.Redis.from_url(redis_server.url) as anonymous:
        anonymous.ping()
    with pytest.raises(redis.AuthenticationError), redis.Redis.from_url(redis_server.url, protocol=2) as anonymous:
        anonymous.ping()  # RESP2: no HELLO, the first command meets NOAUTH
    for user in ("shard-0", "admin", "default"):
        with pytest.raises(redis.AuthenticationError, match="invalid username-password pair"), \
                redis.Redis.from_url(redis_server.url, username=user, password="not-it") as wrong:
            wrong.ping()
    with pytest.raises(redis.AuthenticationError), \
            redis.Redis.from_url(redis_server.url, username="shard-1", password=password(redis_server, "shard-0")) as c:
        c.ping()  # one shard's password does not open another's user


def test_a_shard_user_reaches_only_its_own_keys_and_commands(redis_server: RedisServer, admin: redis.Redis) -> None:
    admin.hset(OTHER, "bits", "64")
    with redis_server.client("shard-0") as shard0:
        assert shard0.ping()
        for command in [("HGET", OTHER, "bits"), ("HMGET", OTHER, "bits"), ("HSET", OTHER, "bits", "8"), ("DEL", OTHER),
                        ("GET", "orbithash:{shard-0}"), ("GET", "elsewhere"), ("GET", "orbithash:{shard-0}x:meta")]:
            with pytest.raises(redis.exceptions.NoPermissionError, match="keys"):
                shard0.execute_command(*command)
        for command in [("FLUSHALL",), ("FLUSHDB",), ("CONFIG", "GET", "*"), ("KEYS", "*"), ("SCAN", 0),
                        ("ACL", "LIST"), ("SHUTDOWN", "NOSAVE"), ("MONITOR",),
                        ("EVAL", "return 1", 0), ("SCRIPT", "FLUSH"), ("SELECT", 1), ("INFO",),
                        ("PUBLISH", "c", "m"), ("CLIENT", "LIST"),
                        ("RENAME", "orbithash:{shard-0}:meta", "orbithash:{shard-0}:x")]:
            with pytest.raises(redis.exceptions.NoPermissionError, match="permissions to run"):
                shard0.execute_command(*command)
        # DEBUG is off for every user (enable-debug-command no); the ACL would refuse it as well.
        assert "no permissions" in admin.execute_command("ACL", "DRYRUN", "shard-0", "DEBUG", "SLEEP", "0").decode()
        # A script is held to the same rules: it cannot reach another shard's keys either.
        sha = shard0.script_load("return redis.call('HGET', KEYS[1], 'bits') .. redis.call('HGET', ARGV[1], 'bits')")
        with pytest.raises(redis.exceptions.ResponseError, match="can't access"):
            shard0.evalsha(sha, 1, "orbithash:{shard-0}:meta", OTHER)
    assert admin.hget(OTHER, "bits") == b"64"


def test_a_real_store_works_as_its_shard_user_with_nothing_refused(redis_server: RedisServer,
                                                                    admin: redis.Redis) -> None:
    with redis_server.client("shard-0") as shard0:
        exercise(ShardStore(shard0, 0, BITS, VERSION))
        admin.flushall()
        admin.script_flush()  # the scripts are gone: the store reloads them (SCRIPT LOAD) as its user
        exercise(ShardStore(shard0, 0, BITS, VERSION))
    with redis_server.client("shard-1") as shard1:
        exercise(ShardStore(shard1, 1, BITS, VERSION))
    assert admin.acl_log() == [], "the shard's ACL misses a command ShardStore uses"
    with redis_server.client("shard-0") as shard0, pytest.raises(Unavailable, match="no permissions") as refused:
        ShardStore(shard0, 1, BITS, VERSION).claim()  # shard-0's user cannot act as shard 1
    assert isinstance(refused.value.__cause__, redis.exceptions.NoPermissionError)  # what access_errors names


def test_passwords_stay_out_of_argv_and_the_acl_file(redis_server: RedisServer) -> None:
    proc = Path(f"/proc/{redis_server.process.pid}")
    # redis-server rewrites its title in /proc/PID/cmdline: check that, its environment and the argv it got.
    argv = "\0".join([(proc / "cmdline").read_bytes().decode(errors="replace"),
                      (proc / "environ").read_bytes().decode(errors="replace"), *redis_server.process.argv])
    acl = redis_server.acl_file.read_text()
    for user in ("admin", "shard-0", "shard-1"):
        secret = password(redis_server, user)
        assert len(secret) >= 32 and secret not in argv and secret not in acl
        assert secret not in str(redis_server.details()) and secret not in redis_server.url
        assert stat.S_IMODE(redis_server.credentials(user)[1].stat().st_mode) == 0o600
    assert stat.S_IMODE(redis_server.acl_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(redis_server.secrets_dir.stat().st_mode) == 0o700
    assert "user default off" in acl and acl.count("#") >= 3
    assert "--aclfile" in argv and "--protected-mode\x00yes" in argv
    with pytest.raises(InvalidInput, match=r"redis-server has no user 'shard-999' \(admin, shard-0 \.\. shard-\d+\)"):
        redis_server.credentials("shard-999")


def test_a_restarted_server_keeps_the_passwords_and_the_scripts_writes(tmp_path: Path) -> None:
    """Also a guard for redis-server 7.0, which replays the append-only file as ``default`` under its ACL."""
    server = RedisServer(tmp_path / "redis", shards=1)
    try:
        before = password(server, "shard-0")
        with server.client("shard-0") as c0:
            exercise(ShardStore(c0, 0, BITS, VERSION))
            expected = sorted(ShardStore(c0, 0, BITS, VERSION).load().ids)
        server.stop()
        again = RedisServer(tmp_path / "redis", port=server.port, shards=3)  # more shards: new users, same old ones
        try:
            assert password(again, "shard-0") == before
            with again.client("shard-0") as c0, again.client("shard-2") as c2:
                assert c2.ping()
                assert sorted(ShardStore(c0, 0, BITS, VERSION).load().ids) == expected == ["a", "b", "c", "d"]
        finally:
            again.stop()
    finally:
        server.stop()


def shard_settings(server: RedisServer, shard: int = 0, user: str = "shard-0", **kw: object) -> IndexSettings:
    name, password_file = server.credentials(user)
    fields: dict = {"redis_url": server.url, "redis_username": name, "redis_password_file": str(password_file),
                    "shard": shard, "bits": BITS, "model_version": VERSION, "metrics_port": 0, "port": 0,
                    "redis_timeout_s": 2.0, **kw}
    return IndexSettings(**fields)


def test_a_shard_refused_by_redis_says_what_to_fix(redis_server: RedisServer, admin: redis.Redis,
                                                   tmp_path: Path) -> None:
    wrong = tmp_path / "wrong"
    wrong.write_text("not-the-password\n")
    with pytest.raises(RedisAccessDenied, match=r"(?s)'shard-0'.*WRONGPASS.*--redis-password-file"):
        build_server(shard_settings(redis_server, redis_password_file=str(wrong)))
    with pytest.raises(RedisAccessDenied, match=r"(?s)'default'.*NOAUTH.*--redis-username"):
        build_server(IndexSettings(redis_url=redis_server.url, bits=BITS, model_version=VERSION, metrics_port=0))
    with pytest.raises(RedisAccessDenied, match=r"(?s)shard 1.*'shard-0'.*NOPERM.*--shard"):
        build_server(shard_settings(redis_server, shard=1))
    with pytest.raises(RedisAccessDenied, match="cannot be read"):
        build_server(shard_settings(redis_server, redis_password_file=str(tmp_path / "missing")))
    with pytest.raises(ValidationError, match="redis_password_file"):
        IndexSettings(redis_url=redis_server.url, redis_username="shard-0", bits=BITS, model_version=VERSION)
    client, probe = redis_clients(shard_settings(redis_server))
    assert password(redis_server, "shard-0") not in repr(client) + repr(probe)


# --- TLS ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Identity]:
    return cluster_pki(tmp_path_factory.mktemp("pki"), ["redis", "shard-0", "client"])


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, Identity]) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("tls_redis"), shards=2, tls=pki["redis"])
    yield server
    server.stop()


def test_the_tls_port_wants_tls_and_a_cluster_certificate(tls_redis: RedisServer, pki: dict[str, Identity],
                                                           tmp_path_factory: pytest.TempPathFactory) -> None:
    assert tls_redis.url.startswith("rediss://")
    secret = password(tls_redis, "shard-0")
    plain = f"redis://{tls_redis.address}/0"
    with pytest.raises(redis.ConnectionError), \
            redis.Redis.from_url(plain, username="shard-0", password=secret, socket_timeout=2) as c:
        c.ping()
    me = pki["shard-0"]
    with redis.Redis.from_url(tls_redis.url, username="shard-0", password=secret, ssl_certfile=str(me.cert),
                              ssl_keyfile=str(me.key), ssl_ca_certs=str(me.ca)) as c:
        assert c.ping()
    with pytest.raises(redis.ConnectionError), \
            redis.Redis.from_url(tls_redis.url, username="shard-0", password=secret, ssl_ca_certs=str(me.ca),
                                 socket_timeout=2) as c:
        c.ping()  # no client certificate
    stranger = cluster_pki(tmp_path_factory.mktemp("other_pki"), ["shard-0"])["shard-0"]
    with pytest.raises(redis.ConnectionError), \
            redis.Redis.from_url(tls_redis.url, username="shard-0", password=secret, ssl_certfile=str(stranger.cert),
                                 ssl_keyfile=str(stranger.key), ssl_ca_certs=str(me.ca), socket_timeout=2) as c:
        c.ping()  # a certificate another CA signed
    with tls_redis.client() as admin:
        assert admin.ping()


def test_a_shard_over_rediss_works_end_to_end(tls_redis: RedisServer, pki: dict[str, Identity]) -> None:
    me = pki["shard-0"]
    settings = shard_settings(tls_redis, tls_cert=str(me.cert), tls_key=str(me.key), tls_ca=str(me.ca))
    client, probe = redis_clients(settings)
    exercise(ShardStore(client, 0, BITS, VERSION, probe_client=probe))
    with tls_redis.client() as admin:
        admin.flushall()
    server = build_server(settings)
    server.start()
    try:
        caller = pki["client"]
        credentials = channel_credentials(str(caller.ca), str(caller.cert), str(caller.key))
        with grpc.secure_channel(server.address, credentials) as channel:
            stub = rpc.IndexShardStub(channel)
            code = bytes(range(BITS // 8))
            stub.Add(pb.AddRequest(items=[pb.Item(id="tls", code=code, label=3)], bits=BITS, model_version=VERSION),
                     timeout=10)
            assert stub.Stats(pb.StatsRequest(), timeout=10).count == 1
        with tls_redis.client() as admin:
            assert admin.hexists(id_bucket_key("orbithash", 0, "tls"), "tls")
    finally:
        server.stop(0)
