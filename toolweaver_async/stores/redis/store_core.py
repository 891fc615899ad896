"""The state every part of the Redis store shares: the client and batcher it talks through,
the namespaces it has seen, how it reaches Redis (standalone, Sentinel, or a cluster detected on
the first command), background work and its shutdown, and commands the server refuses.

:class:`~.store.RedisStore` builds on this in layers: :mod:`.store_housekeeping` adds
invalidation, clear and listing; :mod:`.store` the reads, writes, locks and topology reports.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.exceptions import OutOfMemoryError, ResponseError

from ...config import MAX_TRACKED_NAMESPACES, BreakerSettings, check_name
from ...errors import ConfigError, StoreError
from ...redis_url import parse_sentinel_url, redact_url
from .batching import RoundTripBatcher
from .client import DRIVER_ERRORS as _DRIVER_ERRORS
from .client import build_client, build_cluster_client, is_sentinel_url
from .client import secrets_of as _secrets
from .client import store_error as _store_error
from .cluster import ClusterEngine
from .keyspace import Namespace as _Namespace
from .lock import LockPolicy
from .resp import RoundTripError
from .unreplicated import ROLL_BACK_IF_OLDER, UnreplicatedWrites
from .write_lane import WriteLane

__all__ = ["RedisStoreCore", "refused_as_full", "server_identity", "storable"]

# How the store reaches Redis: decided when it is built, or on the first command (_PENDING).
_PENDING, _STANDALONE, _CLUSTER = "pending", "standalone", "cluster"

logger = logging.getLogger(__name__)

# Connections that carry gets, sets and deletes, batched; a few keep several batches in flight
# while the server works (SCAN, INCR, PING and locks use the client's pool).
_BATCH_CONNECTIONS: Final = 4
_EAGER_TRIPS: Final = _BATCH_CONNECTIONS  # round trips started without a full batch waiting
_MAX_LOCK_CLEANUPS: Final = 16  # locks released in the background at once


class RedisStoreCore:
    """Construction, namespace bookkeeping, topology detection and shutdown of a Redis store;
    the operations live in the subclasses (see the module docstring)."""

    def __init__(
        self,
        *,
        url: str,
        key_prefix: str,
        password: str | None = None,
        connect_timeout: float = 0.25,
        command_timeout: float = 0.25,
        pool_size: int = 64,
        tls_verify: bool = True,
        client: Redis | None = None,
        cluster: bool | None = None,
        namespaces: Iterable[str] = (),
        breaker: BreakerSettings | None = None,
    ) -> None:
        # Validated names contain no ':' (the key layout stays unambiguous) and no glob
        # metacharacters (SCAN MATCH patterns need no escaping).
        self._prefix = check_name(key_prefix, what="key_prefix")
        self._url = redact_url(url)
        self.identity = server_identity(url)
        self._secrets = _secrets(url, password)
        self._owns_client = client is None
        self._client: Redis = (
            client
            if client is not None
            else build_client(
                url,
                password=password,
                connect_timeout=connect_timeout,
                command_timeout=command_timeout,
                pool_size=pool_size,
                tls_verify=tls_verify,
            )
        )
        self.call_timeout = command_timeout
        # Bound once: the hot path skips two attribute lookups, and redis-py leaves it untyped.
        self._execute: Callable[..., Awaitable[Any]] = self._client.execute_command
        self._batcher = RoundTripBatcher(
            self._new_connection,
            connections=min(_BATCH_CONNECTIONS, pool_size),
            timeout=command_timeout,
            eager_trips=_EAGER_TRIPS,
        )
        # Sets and deletes travel this one connection once the invalidation channel tracks it,
        # so that they do not come back to this process as changes (see write_lane.py).
        self.write_lane = WriteLane(self._new_connection, timeout=command_timeout)
        self._namespaces: dict[str, _Namespace] = {}
        self._stale_patterns: list[str] = []
        self._cleaner: asyncio.Task[None] | None = None
        self._lock_cleanups: set[asyncio.Future[None]] = set()
        # Commands the server refuses this user (ACL): each reported once, then done without.
        self._refused: set[str] = set()
        self._unlink_command = "UNLINK"
        self._known_namespaces = tuple(namespaces)
        self._locks = LockPolicy(self._spawn)
        self._closing: asyncio.Task[None] | None = None
        # Standalone and Sentinel need no detection; a cluster is found by asking (or told).
        self._sentinel = is_sentinel_url(url)
        if cluster and (self._sentinel or client is not None):
            raise ConfigError("cluster=True needs a redis:// URL and no injected client")
        self._mode = (
            _CLUSTER
            if cluster
            else _STANDALONE
            if cluster is False or self._sentinel or client is not None
            else _PENDING
        )
        self._detecting: asyncio.Task[None] | None = None
        self._cluster: ClusterEngine | None = None
        # Behind Sentinel: which primary the batcher's connections reach (its epoch grows at
        # every change) and the keys each acknowledged recently, which a promoted replica may
        # lack (see unreplicated.py); on a cluster the engine keeps its own, per node.
        self._unreplicated = UnreplicatedWrites(self._roll_back) if self._sentinel else None
        # Read on the hot path: empty (and never filled) unless a failover left suspects.
        self._suspects: set[tuple[str, str]] = (
            self._unreplicated.suspects if self._unreplicated is not None else set()
        )
        self._primary_epoch = 0
        self._primary_address: tuple[str, int] | None = None
        self._connection_class: Any = None

        def make_cluster() -> ClusterEngine:
            return ClusterEngine(
                build_cluster_client(
                    url,
                    password=password,
                    connect_timeout=connect_timeout,
                    command_timeout=command_timeout,
                    pool_size=pool_size,
                    tls_verify=tls_verify,
                ),
                prefix=self._prefix,
                secrets=self._secrets,
                url=self._url,
                command_timeout=command_timeout,
                connections=min(_BATCH_CONNECTIONS, pool_size),
                node_breakers=breaker,  # one per primary, with the store's settings
            )

        self._make_cluster = make_cluster
        if self._mode is _CLUSTER:
            self._cluster = make_cluster()

    def _namespace(self, namespace: str) -> _Namespace:
        if self._closing is not None:
            raise StoreError("RedisStore is closed", store="redis")
        ns = self._namespaces.get(namespace)
        if ns is None:
            ns = _Namespace(self._prefix, check_name(namespace, what="namespace"))
            if len(self._namespaces) >= MAX_TRACKED_NAMESPACES:
                # Bounded memo: forget the oldest-added; it is rebuilt on its next use at
                # the cost of one generation re-read (every read fetches the counter anyway).
                del self._namespaces[next(iter(self._namespaces))]
            self._namespaces[namespace] = ns
        return ns

    def _write_pipeline(self) -> Callable[[Sequence[tuple[Any, ...]]], Awaitable[list[Any]]]:
        """Where sets and deletes go: the write lane once tracked, else the shared batcher."""
        lane = self.write_lane
        return lane.connection.pipeline if lane.attached else self._batcher.pipeline

    def _new_connection(self) -> AbstractConnection:
        """A connection of the batcher's own, like the pool's but without redis-py's per-read
        socket timeout (the batcher bounds each whole round trip instead)."""
        pool = self._client.connection_pool
        options = {**pool.connection_kwargs, "socket_timeout": None}
        if not self._sentinel:
            conn: AbstractConnection = pool.connection_class(**options)
            return conn
        if self._connection_class is None:
            self._connection_class = _reporting_primary(pool.connection_class, self._reached)
        watched: AbstractConnection = self._connection_class(**options)
        return watched

    def _reached(self, host: str, port: int) -> None:
        """A batcher connection reached the primary at ``host:port`` (the sentinels named it).
        Another primary than before means a failover: what the old one acknowledged recently
        may be missing on this one."""
        address = (host, int(port))
        if address == self._primary_address:
            return
        first = self._primary_address is None
        self._primary_address = address
        if first or self._unreplicated is None:
            return
        self._primary_epoch += 1
        epoch = self._primary_epoch
        logger.warning("redis primary behind sentinel is now %s:%s", host, port)
        self._unreplicated.replaced(lambda primary, _slot: primary == epoch)

    def _wrote(
        self, epoch: int, namespace: str, writes: Iterable[tuple[str, bytes | None]]
    ) -> None:
        """Behind Sentinel: the primary of ``epoch`` acknowledged ``writes`` (key, bytes)."""
        if self._unreplicated is not None:
            self._unreplicated.wrote(
                epoch,
                0,
                [((namespace, key), data) for key, data in writes],
                current=epoch == self._primary_epoch,
            )

    async def _roll_back(self, namespace: str, key: str, stamp: float) -> None:
        """Remove ``key``'s entry on the primary if it was created before ``stamp``."""
        ns = self._namespace(namespace)
        try:
            await self._execute(
                "EVAL", ROLL_BACK_IF_OLDER, 1, ns.generation.prefix + key, repr(stamp)
            )
        except _DRIVER_ERRORS as exc:
            raise _store_error("failover repair", exc, self._secrets) from exc

    async def _release(self) -> None:
        self._stale_patterns.clear()
        for task in list(self._lock_cleanups):
            task.cancel()
        if self._lock_cleanups:
            await asyncio.wait(list(self._lock_cleanups))
        if self._cleaner is not None:
            self._cleaner.cancel()
            await asyncio.wait([self._cleaner])
        if self._unreplicated is not None:
            await self._unreplicated.aclose()
        await self._batcher.aclose()
        await self.write_lane.aclose()
        if self._cluster is not None:
            await self._cluster.aclose()
        if self._owns_client:
            try:
                await self._client.aclose()
            except _DRIVER_ERRORS as exc:
                logger.debug("closing redis pool for %s: %s", self._url, type(exc).__name__)

    # -- topology ------------------------------------------------------------------------------

    async def _engine(self) -> ClusterEngine | None:
        """The cluster engine once the store knows it talks to a cluster; ``None`` on a
        standalone server or a Sentinel primary. The first call asks the server."""
        if self._closing is not None:
            raise StoreError("RedisStore is closed", store="redis")
        if self._mode is _PENDING:
            if self._detecting is None or self._detecting.done():
                self._detecting = asyncio.get_running_loop().create_task(self._detect())
            await asyncio.shield(self._detecting)
        return self._cluster

    async def _detect(self) -> None:
        try:
            info = await self._execute("INFO", "cluster")
        except ResponseError:
            info = {}  # INFO refused (ACL, renamed command): treat the server as standalone
        except _DRIVER_ERRORS as exc:
            raise _store_error("connect", exc, self._secrets) from exc
        if self._mode is not _PENDING:
            return
        if str(info.get("cluster_enabled", 0)) == "1":
            self._cluster = self._make_cluster()
            self._mode = _CLUSTER
            logger.info("redis at %s is a cluster: using cluster mode", self._url)
        else:
            self._mode = _STANDALONE

    def _refuse(self, command: str, exc: BaseException, instead: str) -> None:
        """Note that the server refuses ``command`` to this user: not an outage, reported once."""
        if command not in self._refused:
            self._refused.add(command)
            logger.warning(
                "redis at %s refuses %s to this user (%s): %s instead",
                self._url,
                command,
                exc,
                instead,
            )

    async def ping(self) -> None:
        """Return when Redis answers ``PING`` (on a cluster: every primary); raise
        :class:`StoreError` when it does not."""
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                await engine.ping()
                return
        try:
            await self._execute("PING")
        except _DRIVER_ERRORS as exc:
            raise _store_error("ping", exc, self._secrets) from exc

    async def aclose(self) -> None:
        """Stop background cleanup and close the connection pool if this store built it.

        Idempotent. The release runs in its own task, shielded, so cancelling the caller
        cannot leave sockets open.
        """
        if self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._release())
        await asyncio.shield(self._closing)

    def _spawn(self, work: Awaitable[None]) -> None:
        """Run lock clean-up owed to Redis in the background; ``aclose`` stops it."""
        # Bounded: past this many (an outage), the rest simply expire with their ttl.
        if self._closing is not None or len(self._lock_cleanups) >= _MAX_LOCK_CLEANUPS:
            if asyncio.iscoroutine(work):
                work.close()
            return
        task = asyncio.ensure_future(work)
        self._lock_cleanups.add(task)
        task.add_done_callback(self._lock_cleanups.discard)


def _reporting_primary(base: Any, reached: Callable[[str, int], None]) -> type:
    """``base`` (a Sentinel-managed connection class) telling ``reached`` the address it
    connected to, before any command goes out on it."""

    async def connect(self: Any) -> None:
        await base.connect(self)
        reached(self.host, self.port)

    return type(f"PrimaryReporting{base.__name__}", (base,), {"connect": connect})


def server_identity(url: str) -> str:
    """Which server and database ``url`` names, without secrets: ``host:port/db`` (or the
    socket path; for Sentinel the service and database), the same for every spelling of one
    URL. An outage journal replays only onto the server it was recorded for."""
    if is_sentinel_url(url):
        try:
            parsed = parse_sentinel_url(url)
        except ConfigError:
            return redact_url(url)
        return f"sentinel:{parsed.service}/{parsed.db}"
    try:
        options = parse_url(url)
    except ValueError:
        return redact_url(url)
    db = options.get("db", 0)
    if "path" in options:
        return f"unix:{options['path']}/{db}"
    return f"{options.get('host', 'localhost')}:{options.get('port', 6379)}/{db}"


def storable(key: str) -> bool:
    """Whether ``key`` can be sent to Redis (UTF-8 without lone surrogates)."""
    if key.isascii():
        return True
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


def refused_as_full(reply: Any) -> bool:
    """Whether ``reply`` is Redis refusing a write because it is out of memory."""
    if isinstance(reply, RoundTripError):
        reply = reply.__cause__
    return isinstance(reply, OutOfMemoryError)
