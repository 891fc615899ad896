"""Building ``redis.asyncio`` clients from a URL; the one seam translating driver errors.

Three deployments, one set of settings (timeouts, pool size, TLS verification, password):
``redis://``/``rediss://``/``unix://`` for a standalone server (or any node of a cluster, see
:func:`build_cluster_client`), and ``redis+sentinel://`` for a Sentinel-watched primary, whose
connections ask the sentinels for the primary's address every time they (re)connect, so they
follow a failover. Building a client does no I/O.
"""

from __future__ import annotations

import math
from typing import Any, Final

from redis import __version__ as _REDIS_PY_VERSION
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import ConnectionPool, parse_url
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff
from redis.driver_info import DriverInfo
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from ...errors import ConfigError, StoreError
from ...redis_url import SENTINEL_SCHEMES, check_redis_url, parse_sentinel_url, redact_url
from .batching import RoundTripError, StalledTimeout
from .resp import shared_failure

__all__ = [
    "DRIVER_ERRORS",
    "build_client",
    "build_cluster_client",
    "is_sentinel_url",
    "secrets_of",
    "store_error",
    "ttl_ms",
]

# Everything the driver or the socket can raise for a failed command. CancelledError is a
# BaseException and is deliberately absent: cancellation always passes through untouched.
# Not UnicodeError: a key that cannot be encoded says nothing about the server (the store
# answers such keys itself: a miss, nothing written).
DRIVER_ERRORS: Final = (RedisError, OSError, TimeoutError)
# Shared by every connection; redis-py only reads it.
_DRIVER_INFO: Final = DriverInfo(name="redis-py", lib_version=_REDIS_PY_VERSION)


def store_error(operation: str, exc: BaseException, secrets: tuple[str, ...]) -> Exception:
    """The one translation seam: a driver or socket failure as a :class:`StoreError`.

    redis-py wraps *anything* raised while connecting in a ``ConnectionError``; when that is
    no socket or driver failure (a blocking call caught on the event loop, a bug), it comes
    back as itself, so the guard reports it as a bug instead of counting an outage."""
    wrapper: BaseException | None = exc
    while isinstance(wrapper, RedisConnectionError | RoundTripError):
        cause = wrapper.__cause__
        if isinstance(cause, Exception) and not isinstance(cause, DRIVER_ERRORS):
            return cause
        wrapper = cause
    message = f"redis {operation} failed: {type(exc).__name__}: {exc}"
    for secret in secrets:
        message = message.replace(secret, "***")
    return StoreError(
        message,
        store="redis",
        stalled=isinstance(wrapper, StalledTimeout),
        incident=shared_failure(exc),
    )


def secrets_of(url: str, password: str | None) -> tuple[str, ...]:
    """Passwords to scrub from error messages: the explicit one and the URL's."""
    in_url: str | None
    try:
        if is_sentinel_url(url):
            in_url = parse_sentinel_url(url).password
        else:
            in_url = parse_url(url).get("password")
    except (ValueError, ConfigError):
        in_url = None
    return tuple(s for s in (password, in_url) if s)


def ttl_ms(ttl: float | None) -> int | None:
    """Seconds as whole milliseconds for ``SET ... PX``, rounded up, at least 1."""
    if ttl is None or ttl == math.inf:
        return None
    return max(1, math.ceil(ttl * 1000))


def is_sentinel_url(url: str) -> bool:
    return url.startswith(SENTINEL_SCHEMES)


def _common_options(
    *, connect_timeout: float, command_timeout: float, tls: bool, tls_verify: bool
) -> dict[str, Any]:
    options: dict[str, Any] = {
        "socket_connect_timeout": connect_timeout,
        "socket_timeout": command_timeout,
        # No retries: redis-py's client default (10 retries, backoff up to 1 s) costs seconds
        # per call on a dead server; the circuit breaker decides when to try again.
        "retry": Retry(NoBackoff(), 0),
        "decode_responses": False,
        "health_check_interval": 0,
        # RESP2: redis-py 8 defaults to RESP3 with maintenance notifications in "auto" mode,
        # which adds handshake round trips and skips the pool's "unread data" check on checkout.
        "protocol": 2,
        # The version sent with CLIENT SETINFO, known once: left out, redis-py looks it up in
        # the installed package metadata (an os.stat) for every connection it builds, on the loop.
        "driver_info": _DRIVER_INFO,
    }
    if tls:
        options["ssl_cert_reqs"] = "required" if tls_verify else "none"
        options["ssl_check_hostname"] = tls_verify
    return options


def build_client(
    url: str,
    *,
    password: str | None = None,
    connect_timeout: float = 0.25,
    command_timeout: float = 0.25,
    pool_size: int = 64,
    tls_verify: bool = True,
) -> Redis:
    """A ``redis.asyncio`` client for ``url`` that fails in milliseconds, built without any I/O.

    Our settings win over the URL's query string, so ``?socket_timeout=30`` or
    ``?ssl_cert_reqs=none`` cannot undo short timeouts or certificate checks.
    """
    if is_sentinel_url(url):
        return _build_sentinel_client(
            url,
            password=password,
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            pool_size=pool_size,
            tls_verify=tls_verify,
        )
    try:
        check_redis_url(url)
        options: dict[str, Any] = dict(parse_url(url))
    except ValueError as exc:
        raise ConfigError(f"cannot use Redis URL {redact_url(url)}: {exc}") from exc
    if password is not None:
        options["password"] = password
    options.update(
        _common_options(
            connect_timeout=connect_timeout,
            command_timeout=command_timeout,
            tls=url.startswith("rediss:"),
            tls_verify=tls_verify,
        ),
        max_connections=pool_size,
        # BlockingConnectionPool: a caller finding all connections busy waits this long for
        # one instead of failing at once with "Too many connections".
        timeout=command_timeout,
    )
    return Redis.from_pool(BlockingConnectionPool(**options))


def _build_sentinel_client(
    url: str,
    *,
    password: str | None,
    connect_timeout: float,
    command_timeout: float,
    pool_size: int,
    tls_verify: bool,
) -> Redis:
    """A client of the primary that the sentinels of ``url`` name. Each connection asks them
    for the primary's address when it connects, and a primary turned replica (``READONLY``)
    drops the connection, so the next command reaches the new primary."""
    parsed = parse_sentinel_url(url)
    data_options = _common_options(
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        tls=parsed.tls,
        tls_verify=tls_verify,
    )
    sentinel_options = {
        key: data_options[key]
        for key in ("socket_connect_timeout", "socket_timeout", "retry", "protocol", "driver_info")
    }
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_options)  # type: ignore[no-untyped-call]
    pool: ConnectionPool = SentinelConnectionPool(  # type: ignore[no-untyped-call]
        parsed.service,
        sentinel,
        db=parsed.db,
        username=parsed.username,
        password=password if password is not None else parsed.password,
        max_connections=pool_size,
        ssl=parsed.tls,
        **data_options,
    )
    return Redis.from_pool(pool)


def build_cluster_client(
    url: str,
    *,
    password: str | None = None,
    connect_timeout: float = 0.25,
    command_timeout: float = 0.25,
    pool_size: int = 64,
    tls_verify: bool = True,
) -> RedisCluster:
    """A ``RedisCluster`` that starts from the node ``url`` names and discovers the others.

    It follows ``MOVED``/``ASK`` and refreshes its slot table itself; it does not insist that
    every slot is served (a dead primary's slots fail alone, the others keep answering).
    """
    try:
        check_redis_url(url)
        parsed: dict[str, Any] = dict(parse_url(url))
    except ValueError as exc:
        raise ConfigError(f"cannot use Redis URL {redact_url(url)}: {exc}") from exc
    if parsed.get("path"):
        raise ConfigError(f"a Redis Cluster is not reached over a unix socket: {redact_url(url)}")
    if parsed.get("db"):
        raise ConfigError(f"a Redis Cluster has only database 0: {redact_url(url)}")
    options = _common_options(
        connect_timeout=connect_timeout,
        command_timeout=command_timeout,
        tls=url.startswith("rediss:"),
        tls_verify=tls_verify,
    )
    # One retry after a connection error or a redirect storm, with a refreshed slot table:
    # enough to follow a promotion, bounded so a dead cluster costs milliseconds.
    options["retry"] = Retry(NoBackoff(), 1)
    return RedisCluster(
        host=parsed.get("host", "localhost"),
        port=parsed.get("port", 6379),
        username=parsed.get("username"),
        password=password if password is not None else parsed.get("password"),
        ssl=url.startswith("rediss:"),
        require_full_coverage=False,
        max_connections=pool_size,
        **options,
    )
