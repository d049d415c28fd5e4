"""A real ``redis-server`` on a free loopback port with its own data directory, locked by default.

Nobody gets in without a password: the ``default`` user is off, the launcher and the tests use the
``admin`` user, and each index shard ``N`` has a user ``shard-N`` that reaches only its own keys
(``{namespace}:{shard-N}:*``) with only the commands :class:`index_service.store.ShardStore`
issues. Passwords are random, kept in 0600 files under ``<data_dir>/secrets/`` (reused on a
restart) and stored in the ACL file only as SHA-256 hashes, so none ever appears in a command line,
an environment variable, a log or the launcher's state file: processes get the file's path.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path

import redis

from orbithash import InvalidInput, Unavailable
from orbithash_local.pki import Identity
from orbithash_local.processes import ManagedProcess, free_port
from orbithash_serving.private_files import write_private

ADMIN = "admin"
HASH_MAX_LISTPACK_ENTRIES = 512
# See _write_acl: off and passwordless (nobody can be it), yet all permissions (the AOF replay runs as it).
DEFAULT_USER_ACL = "user default off resetpass ~* &* +@all"

# Exactly what ShardStore sends, directly or from its Lua scripts (ACL applies inside scripts too):
# PING (probe), EVALSHA and SCRIPT LOAD (register_script), MULTI/EXEC (load's pipeline), and the key
# commands the scripts and load() use (SET: a write's op key, index_service/store.py). AUTH and
# HELLO need no grant; redis-py's CLIENT SETINFO on connect does not exist in Redis 7.0 and is
# refused harmlessly by later ones. Deliberately absent:
# EVAL, KEYS, SCAN, FLUSHALL/FLUSHDB, CONFIG, DEBUG, ACL, SHUTDOWN, MONITOR, SELECT, pub/sub, everything else.
SHARD_COMMANDS = (
    "ping", "evalsha", "script|load", "multi", "exec", "time", "set",
    "get", "setrange", "del", "exists", "incrby", "hget", "hmget", "hgetall", "hset", "hdel", "hexists", "hscan",
    "rpush", "rpop", "llen",
)


def redis_server_binary() -> str:
    path = shutil.which("redis-server")
    if path is None:
        raise Unavailable("redis-server is not installed (apt-get install -y redis-server)")
    return path


def shard_user(shard: int) -> str:
    """The Redis user of index shard ``shard``."""
    return f"shard-{shard}"


def shard_acl(namespace: str, shard: int) -> str:
    """ACL rules (without the password) of shard ``shard``'s user: its own keys, the store's commands."""
    return " ".join(["resetkeys", "resetchannels", f"~{namespace}:{{{shard_user(shard)}}}:*", "-@all",
                     *(f"+{c}" for c in SHARD_COMMANDS)])


class RedisServer:
    """redis-server in ``data_dir``, append-only with fsync before each reply: no acknowledged write is lost.

    ``appendfsync always`` (the default here) writes and fsyncs the append-only file before Redis
    replies, so a write a shard acknowledged survives a SIGKILL of redis-server and even of the
    machine; ``everysec`` would lose up to a second of them on a power cut (not on a SIGKILL alone).
    Started again on the same port and data directory (:meth:`restart`, or the launcher's
    supervisor) it loads the append-only file and holds every acknowledged write.

    Access: users ``admin`` (everything; :meth:`client`) and ``shard-0`` .. ``shard-{shards-1}``
    (see :func:`shard_acl`; ``shards`` defaults to 16 so a launcher that does not say still covers
    its shards, and a later start with more adds users while keeping the existing passwords).
    :meth:`credentials` names a user's password file. ``protected-mode yes`` and ``bind`` limit who
    can connect at all. With ``tls`` (an identity from :func:`orbithash_local.pki.cluster_pki`) the
    only port speaks TLS and asks every client for a certificate the same CA signed; :attr:`url` is
    then ``rediss://``.
    """

    name = "redis-server"

    def __init__(self, data_dir: Path, port: int | None = None, appendfsync: str = "always",
                 timeout: float = 20.0, *, shards: int = 16, namespace: str = "orbithash",
                 tls: Identity | None = None, bind: Sequence[str] = ("127.0.0.1",)) -> None:
        if shards < 1 or not bind:
            raise InvalidInput(f"RedisServer needs shards >= 1 and a bind address, got {shards} and {list(bind)}")
        self.data_dir = data_dir
        self.port = port or free_port()
        self.timeout = timeout
        self.shards = shards
        self.namespace = namespace
        self.tls = tls
        self.host = bind[0]
        data_dir.mkdir(parents=True, exist_ok=True)
        self.secrets_dir = data_dir / "secrets"
        self.secrets_dir.mkdir(exist_ok=True)
        os.chmod(self.secrets_dir, 0o700)
        self.acl_file = data_dir / "users.acl"
        self._write_acl()
        port_args = ["--port", str(self.port)]
        if tls is not None:
            port_args = ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(tls.cert),
                         "--tls-key-file", str(tls.key), "--tls-ca-cert-file", str(tls.ca),
                         "--tls-auth-clients", "yes"]
        argv = [
            redis_server_binary(), *port_args, "--bind", *bind, "--aclfile", str(self.acl_file.resolve()),
            "--dir", str(data_dir.resolve()), "--appendonly", "yes", "--appendfsync", appendfsync,
            "--save", "", "--daemonize", "no", "--protected-mode", "yes",
            # The shards' id buckets stay in the compact listpack encoding up to this many ids each
            # (65 536 buckets: ≈ 33M items per shard); Redis's default of 128 would end at ≈ 8M.
            "--hash-max-listpack-entries", str(HASH_MAX_LISTPACK_ENTRIES),
        ]
        self.process = ManagedProcess(self.name, argv, data_dir / "redis.log")
        self.process.wait_ready(self.ready, timeout=timeout)

    def _password(self, user: str) -> str:
        """``user``'s password: the one in its secret file, made (random, 0600) if there is none yet."""
        path = self.secrets_dir / user
        if not path.exists():
            write_private(path, secrets.token_urlsafe(32))
        return path.read_text().strip()

    def _write_acl(self) -> None:
        """The ACL file redis-server loads at each start: passwords only as ``#<sha256>``."""
        def digest(user: str) -> str:
            return "#" + hashlib.sha256(self._password(user).encode()).hexdigest()

        # ``default`` is off and has no password, so no connection can ever be it: new ones start
        # unauthenticated and may only AUTH/HELLO. It keeps every permission because redis-server 7.0
        # replays the append-only file as ``default`` and checks each MULTI/EXEC (how scripts' writes are
        # logged) against its ACL: a ``-@all`` default silently drops every script's writes on restart
        # (redis/redis#14541, fixed by #14545 in later releases).
        lines = [DEFAULT_USER_ACL,
                 f"user {ADMIN} on {digest(ADMIN)} ~* &* +@all"]
        lines += [f"user {shard_user(n)} on {digest(shard_user(n))} {shard_acl(self.namespace, n)}"
                  for n in range(self.shards)]
        write_private(self.acl_file, "\n".join(lines) + "\n")

    def credentials(self, user: str) -> tuple[str, Path]:
        """(username, path of the 0600 file holding its password) for ``admin`` or ``shard-N``."""
        if user != ADMIN and user not in {shard_user(n) for n in range(self.shards)}:
            raise InvalidInput(f"redis-server has no user {user!r} (admin, shard-0 .. shard-{self.shards - 1})")
        return user, (self.secrets_dir / user).resolve()

    def shard_credentials(self, shard: int) -> tuple[str, Path]:
        """(username, password file) of index shard ``shard``."""
        return self.credentials(shard_user(shard))

    @property
    def url(self) -> str:
        """Where Redis listens, without credentials (URLs end up in command lines and cluster.json)."""
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}/0"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def details(self) -> dict[str, object]:
        """What the launcher's state file records beside the command line (paths, never passwords)."""
        return {"url": self.url, "data_dir": str(self.data_dir.resolve()), "acl_file": str(self.acl_file.resolve()),
                "secrets_dir": str(self.secrets_dir.resolve()), "tls": self.tls is not None}

    def client(self, user: str = ADMIN, **kwargs: object) -> redis.Redis:
        """A client as ``user`` (``admin``: every command; ``shard-N``: what that shard may do), over TLS
        with the server's own certificate when TLS is on; ``kwargs`` go to ``redis.Redis.from_url``."""
        _, password_file = self.credentials(user)
        if self.tls is not None:
            kwargs = {"ssl_certfile": str(self.tls.cert), "ssl_keyfile": str(self.tls.key),
                      "ssl_ca_certs": str(self.tls.ca), **kwargs}
        return redis.Redis.from_url(self.url, username=user, password=password_file.read_text().strip(), **kwargs)

    def ready(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def restart(self) -> None:
        """Start again on the same port and data directory (after :meth:`stop` or a crash)."""
        if self.process.alive():
            self.process.stop()
        self.process.start()
        self.process.wait_ready(self.ready, self.timeout)

    def stop(self) -> None:
        self.process.stop()
