"""The shard's Redis clients, built in one place from :class:`IndexSettings`: credentials, TLS, timeouts.

The password comes from a file (``redis_password_file``), read once at start, so it never sits in a
command line, an environment variable or a log. TLS is on when the URL says ``rediss://``; the
shard then shows Redis its own certificate (``tls_cert``/``tls_key``, the same identity its gRPC
port uses) and checks Redis's against ``tls_ca``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

import redis
from redis.backoff import ExponentialBackoff
from redis.credentials import UsernamePasswordCredentialProvider
from redis.retry import Retry

from index_service.settings import IndexSettings
from orbithash import OrbitHashError

_FIX = ("--redis-username and --redis-password-file (ORBITHASH_INDEX_REDIS_USERNAME, "
        "ORBITHASH_INDEX_REDIS_PASSWORD_FILE)")
_REFUSED_IN_SCRIPT = "user executing the script can't access"


class RedisAccessDenied(OrbitHashError):
    """Redis refused this shard's credentials or commands: a setting to fix, not an outage to wait out."""


def read_password(path: str) -> str:
    """The password in ``path`` without its trailing newline; a clear error if it cannot be read."""
    try:
        password = Path(path).read_text().rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise RedisAccessDenied(f"redis_password_file {path!r} cannot be read ({reason}); point "
                                f"--redis-password-file at the file holding the Redis user's password") from exc
    if not password:
        raise RedisAccessDenied(f"redis_password_file {path!r} is empty")
    return password


def _common(settings: IndexSettings) -> dict[str, object]:
    """Connection options both clients share: who the shard is to Redis, and TLS from the URL scheme."""
    out: dict[str, object] = {}
    if settings.redis_password_file is not None:
        out["credential_provider"] = UsernamePasswordCredentialProvider(
            settings.redis_username, read_password(settings.redis_password_file))
    if urlsplit(settings.redis_url).scheme == "rediss":
        out.update(ssl_certfile=settings.tls_cert, ssl_keyfile=settings.tls_key, ssl_ca_certs=settings.tls_ca)
    return out


def redis_clients(settings: IndexSettings) -> tuple[redis.Redis, redis.Redis]:
    """(client, probe): the client retries a lost connection twice with backoff, bounded by
    ``redis_timeout_s`` per command; the probe has a 1 s timeout, so a stopped Redis is noticed soon."""
    common = _common(settings)
    client = redis.Redis.from_url(
        settings.redis_url, retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=2),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError], socket_timeout=settings.redis_timeout_s,
        socket_connect_timeout=settings.redis_timeout_s, **common,
    )
    probe = redis.Redis.from_url(settings.redis_url, socket_timeout=1.0, socket_connect_timeout=1.0, **common)
    return client, probe


@contextmanager
def access_errors(settings: IndexSettings) -> Iterator[None]:
    """Turn Redis's refusals (WRONGPASS, NOAUTH, NOPERM), bare or wrapped by the store, into
    :class:`RedisAccessDenied` naming the user and the settings to fix."""
    try:
        yield
    except (OrbitHashError, redis.RedisError) as exc:
        cause = exc if isinstance(exc, redis.RedisError) else exc.__cause__
        user = settings.redis_username or "default"
        where = f"shard {settings.shard}: Redis at {settings.redis_url} refused user {user!r}"
        if isinstance(cause, redis.AuthenticationError):
            raise RedisAccessDenied(f"{where} (WRONGPASS/NOAUTH: {cause}); check {_FIX}") from exc
        if isinstance(cause, redis.exceptions.NoPermissionError) or (  # inside a script: a plain error
                isinstance(cause, redis.ResponseError) and _REFUSED_IN_SCRIPT in str(cause)):
            raise RedisAccessDenied(
                f"{where} (NOPERM: {cause}); the user must be allowed the keys "
                f"'{settings.namespace}:{{shard-{settings.shard}}}:*' and the store's commands: check --shard, "
                f"--namespace and {_FIX}, and the user's ACL rules") from exc
        raise
