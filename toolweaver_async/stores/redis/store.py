"""The Redis layer: entry bytes in Redis, shared by every process that uses the same key prefix.

Physical keys are ``<prefix>:<namespace>:<generation>:<key>``. Each namespace has a generation
counter at ``<prefix>:<namespace>:gen`` (absent means 0, no TTL). ``invalidate`` increments it,
which makes every older entry unreadable at once, in every process; the old generation's keys are
then removed in the background.

Each store caches the generation it last saw per namespace and checks it on every round trip:
reads are one ``MGET <genkey> <datakey...>``, writes and deletes a pipeline ending in
``GET <genkey>``. Concurrent calls share round trips (:mod:`.batching`): reads arriving in
one event-loop turn go out as one ``MGET``, writes as one pipeline, while a lone call goes out at
once. When the reply shows a newer generation, the store adopts it and repeats the
call once, so an invalidation by another process is honoured on the very next call, without an
extra round trip while nothing changes. This relies on generations never going backwards, which
is why :meth:`RedisStore.clear` leaves the counters in place.

The same store speaks to a Sentinel-watched primary (``redis+sentinel://``: its connections ask
the sentinels where the primary is whenever they reconnect) and to a Redis Cluster, detected on
the first command (``INFO cluster``) unless ``cluster`` says so; on a cluster every operation is
handed to :class:`~.cluster.ClusterEngine`, which keeps the same promises per node.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection, parse_url
from redis.exceptions import NoPermissionError, OutOfMemoryError, ResponseError

from ...config import CacheConfig, check_name
from ...errors import ConfigError, StoreError
from ...redis_url import parse_sentinel_url, redact_url
from ..base import EntryPage, StoreItem
from .batching import RoundTripBatcher, RoundTripError
from .client import DRIVER_ERRORS as _DRIVER_ERRORS
from .client import build_client, build_cluster_client, is_sentinel_url
from .client import secrets_of as _secrets
from .client import store_error as _store_error
from .client import ttl_ms as _ttl_ms
from .cluster import ClusterEngine
from .keyspace import Namespace as _Namespace
from .keyspace import glob_escape
from .keyspace import is_counter as _is_counter
from .keyspace import raise_first_error as _raise_first_error
from .lock import LockPolicy, RedisLock

__all__ = ["RedisStore", "build_client", "glob_escape"]

# How the store reaches Redis: decided when it is built, or on the first command (_PENDING).
_PENDING, _STANDALONE, _CLUSTER = "pending", "standalone", "cluster"

logger = logging.getLogger(__name__)

_SCAN_COUNT: Final = 1000
# Connections that carry gets, sets and deletes, batched; a few keep several batches in flight
# while the server works (SCAN, INCR, PING and locks use the client's pool).
_BATCH_CONNECTIONS: Final = 4
_UNLINK_BATCH: Final = 500
# Compare-and-delete: a corrupt entry is removed only if no write replaced it since it was read.
_DELETE_IF_SAME: Final = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end "
    "return 0"
)
_MAX_LOCK_CLEANUPS: Final = 16  # locks released in the background at once


class RedisStore:
    """Entry bytes in Redis under ``<prefix>:<namespace>:<generation>:<key>``.

    Constructing one does no I/O: the first command connects. Every failure surfaces as
    :class:`StoreError`; cancellation passes through untouched. Namespaces must be plain names
    (letters, digits, ``_.-``; see ``check_name``), else :class:`ConfigError`. An injected
    ``client`` must keep ``decode_responses=False`` and is left open by :meth:`aclose`.
    """

    name = "redis"
    # Every get, set, add, delete and their many-key forms fails with TimeoutError at most
    # ``command_timeout`` after each round trip it needs was asked for (queue wait included);
    # other commands are bounded by the client's pool-wait, connect and socket timeouts.
    bounds_calls: Final = True
    # Reached over the network and shared by processes: the chain gives it an outage journal.
    remote: Final = True

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
        self.call_timeout = command_timeout  # also its breaker's slow-call limit
        # Bound once: the hot path skips two attribute lookups, and redis-py leaves it untyped.
        self._execute: Callable[..., Awaitable[Any]] = self._client.execute_command
        self._batcher = RoundTripBatcher(
            self._new_connection,
            connections=min(_BATCH_CONNECTIONS, pool_size),
            timeout=command_timeout,
        )
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
            )

        self._make_cluster = make_cluster
        if self._mode is _CLUSTER:
            self._cluster = make_cluster()

    @classmethod
    def from_config(cls, config: CacheConfig) -> RedisStore:
        """A store with the Redis settings and key prefix of ``config``."""
        return cls(
            url=config.redis_url,
            key_prefix=config.key_prefix,
            password=config.redis_password,
            connect_timeout=config.redis_connect_timeout,
            command_timeout=config.redis_command_timeout,
            pool_size=config.redis_pool_size,
            tls_verify=config.redis_tls_verify,
            cluster=config.redis_cluster,
            namespaces=config.namespaces,
        )

    def __repr__(self) -> str:
        return f"RedisStore(url={self._url!r}, key_prefix={self._prefix!r})"

    # -- reads -------------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> bytes | None:
        """The entry bytes under ``key``, or ``None``; one ``MGET`` while the generation holds
        (shared with the gets of other callers in the same event-loop turn)."""
        ns = self._namespaces.get(namespace)
        if ns is None or self._closing is not None:
            if not _storable(key):
                return None
            if self._mode is not _STANDALONE:
                engine = await self._engine()
                if engine is not None:
                    return await engine.get(namespace, key)
            ns = self._namespace(namespace)
        used = ns.generation
        mget = self._batcher.mget
        value: bytes | None
        try:
            raw, value = await mget((ns.gen_key_bytes, used.prefix_bytes + key.encode()))
            if raw == used.raw:
                return value
            seen = ns.observe(raw)
            if not seen.readable:
                return None
            if seen.number == used.number:
                return value
            raw, value = await mget((ns.gen_key_bytes, seen.prefix_bytes + key.encode()))
        except UnicodeEncodeError:
            return None  # never written: such a key is never sent to Redis
        except _DRIVER_ERRORS as exc:
            raise _store_error("get", exc, self._secrets) from exc
        again = ns.observe(raw)
        if again.number != seen.number or not again.readable:
            return None  # invalidated again between the two reads: a dead generation's value
        return value

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        """Entry bytes for each of ``keys``, in order, ``None`` where absent; one ``MGET``."""
        if not keys:
            return []
        if not all(map(_storable, keys)):
            asked = [key for key in keys if _storable(key)]
            found = dict(zip(asked, await self.get_many(namespace, asked), strict=True))
            return [found.get(key) for key in keys]
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                return await engine.get_many(namespace, keys)
        ns = self._namespace(namespace)
        used = ns.generation
        reply: list[Any]
        mget = self._batcher.mget
        try:
            prefix = used.prefix_bytes
            reply = await mget([ns.gen_key_bytes, *[prefix + key.encode() for key in keys]])
            seen = ns.observe(reply[0])
            if not seen.readable:
                return [None] * len(keys)
            if seen.number == used.number:
                return reply[1:]
            prefix = seen.prefix_bytes
            reply = await mget([ns.gen_key_bytes, *[prefix + key.encode() for key in keys]])
        except _DRIVER_ERRORS as exc:
            raise _store_error("get_many", exc, self._secrets) from exc
        again = ns.observe(reply[0])
        if again.number != seen.number or not again.readable:
            return [None] * len(keys)
        return reply[1:]

    # -- writes ------------------------------------------------------------------------------

    # A key that cannot be encoded (lone surrogates) is never sent: Redis can hold no value of
    # it, so a read of it is a miss and a write of it stores nothing; never a store failure.

    async def set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        """Store ``data`` under the live generation, expiring after ``ttl`` seconds."""
        if _storable(key):
            await self._write("set", namespace, ((key, data, _ttl_ms(ttl)),), only_new=False)

    async def add(self, namespace: str, key: str, data: bytes, ttl: float | None) -> bool:
        """Store ``data`` only where no entry is present (``SET NX``); ``True`` when stored."""
        if not _storable(key):
            return False
        stored = await self._write("add", namespace, ((key, data, _ttl_ms(ttl)),), only_new=True)
        return stored[0]

    async def set_many(self, namespace: str, items: Sequence[StoreItem]) -> None:
        """Store several entries in one pipelined round trip."""
        entries = [(key, data, _ttl_ms(ttl)) for key, data, ttl in items if _storable(key)]
        if entries:
            await self._write("set_many", namespace, entries, only_new=False)

    async def _write(
        self,
        operation: str,
        namespace: str,
        entries: Sequence[tuple[str, bytes, int | None]],
        *,
        only_new: bool,
    ) -> list[bool]:
        """SET each entry in one pipeline that ends by reading the generation counter."""
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                return await engine.write(operation, namespace, entries, only_new=only_new)
        ns = self._namespace(namespace)
        used = ns.generation
        try:
            stored, raw = await self._pipeline_sets(used.prefix, entries, ns.gen_key, only_new)
            # Generations only grow, so an unchanged counter read after the SETs proves they
            # landed in the live generation.
            seen = ns.observe(raw)
            if seen.number == used.number:
                return stored
            # Our cached generation was stale: move what we wrote into the live one. Should
            # another invalidation race with this retry, the write counts as made before it.
            misplaced = [used.prefix + e[0] for e, ok in zip(entries, stored, strict=True) if ok]
            stored, raw = await self._pipeline_sets(
                seen.prefix, entries, ns.gen_key, only_new, unlink=misplaced
            )
        except _DRIVER_ERRORS as exc:
            raise _store_error(operation, exc, self._secrets) from exc
        ns.observe(raw)
        return stored

    async def _pipeline_sets(
        self,
        prefix: str,
        entries: Sequence[tuple[str, bytes, int | None]],
        gen_key: str,
        only_new: bool,
        unlink: Sequence[str] = (),
    ) -> tuple[list[bool], Any]:
        # One pipeline, shared with other callers' commands of the same loop turn.
        commands: list[tuple[Any, ...]] = [(self._unlink_command, *unlink)] if unlink else []
        for key, data, px in entries:
            args: tuple[Any, ...] = ("SET", prefix + key, data)
            if px is not None:
                args += ("PX", px)
            if only_new:
                args += ("NX",)
            commands.append(args)
        commands.append(("GET", gen_key))
        replies = await self._batcher.pipeline(commands)
        if not only_new:
            # Out of memory (noeviction), Redis refuses a SET but still takes UNLINK: the older
            # value goes, so no other process reads it while the journal holds the newer one.
            full = [c[1] for c, r in zip(commands, replies, strict=True) if _refused_as_full(r)]
            if full:
                await self._batcher.pipeline([(self._unlink_command, *full)])
        _raise_first_error(replies)
        first = 1 if unlink else 0
        return [bool(r) for r in replies[first:-1]], replies[-1]

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove ``key`` from the live generation; ``True`` when it existed."""
        if not _storable(key):
            return False
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                return await engine.delete(namespace, key)
        ns = self._namespace(namespace)
        used = ns.generation
        pipeline = self._batcher.pipeline
        try:
            unlink = self._unlink_command
            replies = await pipeline(((unlink, used.prefix + key), ("GET", ns.gen_key)))
            if isinstance(replies[0], NoPermissionError) and unlink == "UNLINK":
                self._refuse("UNLINK", replies[0], "DEL removes keys")
                self._unlink_command = unlink = "DEL"
                replies = await pipeline(((unlink, used.prefix + key), ("GET", ns.gen_key)))
            removed, raw = _raise_first_error(replies)
            seen = ns.observe(raw)
            if seen.number != used.number:
                replies = await pipeline(((unlink, seen.prefix + key), ("GET", ns.gen_key)))
                removed, raw = _raise_first_error(replies)
        except _DRIVER_ERRORS as exc:
            raise _store_error("delete", exc, self._secrets) from exc
        ns.observe(raw)
        return bool(removed)

    async def delete_if(self, namespace: str, key: str, data: bytes) -> bool:
        """Remove ``key`` only while it still holds exactly ``data`` (compare and delete in
        one script, so a write landing since keeps its value); ``True`` when removed. Not yet
        on a cluster (its key layout is the cluster engine's): the entry stays, a counted miss
        until the next write replaces it."""
        if self._mode is not _STANDALONE:
            return False
        ns = self._namespace(namespace)
        try:
            removed = await self._execute(
                "EVAL", _DELETE_IF_SAME, 1, ns.generation.prefix + key, data
            )
        except _DRIVER_ERRORS as exc:
            raise _store_error("delete_if", exc, self._secrets) from exc
        return bool(removed)

    async def invalidate(self, namespace: str) -> None:
        """Make every entry of ``namespace`` unreadable at once (one ``INCR``), in every process.

        The old generation's keys are removed in the background, best effort; anything missed
        is unreadable anyway and expires with its TTL. On a cluster: one ``INCR`` per stripe.
        """
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                await engine.invalidate(namespace)
                return
        ns = self._namespace(namespace)
        try:
            try:
                number = await self._execute("INCR", ns.gen_key)
            except ResponseError as exc:
                if not _holds_no_integer(exc):
                    raise
                number = await self._repair_counter(ns)
        except _DRIVER_ERRORS as exc:
            if _refused_as_full(exc):
                await self._unlink_live_generation(ns)
            raise _store_error("invalidate", exc, self._secrets) from exc
        ns.observe(str(number).encode())
        self._schedule_cleanup(f"{ns.base}{int(number) - 1}:*")

    async def _repair_counter(self, ns: _Namespace) -> int:
        """Replace a generation counter that holds no integer with one above every generation
        it can have held (generations never go backwards): the wall clock in milliseconds,
        far beyond any count of invalidations, or one more than the last number seen."""
        number = max(int(time.time() * 1000), ns.generation.number + 1)
        await self._execute("SET", ns.gen_key, number)
        logger.warning("redis generation counter %r repaired (now %d)", ns.gen_key, number)
        return number

    async def _unlink_live_generation(self, ns: _Namespace) -> None:
        """Out of memory, Redis refuses ``INCR`` but still scans and unlinks: remove the live
        generation's entries instead, so no process reads them until the invalidation lands."""
        with contextlib.suppress(StoreError, *_DRIVER_ERRORS):
            seen = ns.observe(await self._execute("GET", ns.gen_key))
            await self._unlink_matching(f"{seen.prefix}*", keep_counters=False)

    async def clear(self) -> None:
        """Remove every entry under this store's key prefix, and nothing else; never FLUSHDB.

        Generation counters stay: generations must never go backwards (see the module
        docstring). Entries written while the scan runs may survive it. On a cluster every
        primary is scanned.
        """
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                await engine.clear()
                return
        try:
            if "SCAN" not in self._refused:
                try:
                    counters = await self._unlink_matching(f"{self._prefix}:*", keep_counters=True)
                except NoPermissionError as exc:
                    self._refuse("SCAN", exc, "clear() invalidates every namespace it knows")
                else:
                    if counters:
                        await self._repair_counters(counters)
                    return
        except _DRIVER_ERRORS as exc:
            raise _store_error("clear", exc, self._secrets) from exc
        # Without SCAN the keys cannot be found: make every namespace this store has used or
        # been configured with unreadable instead (a new generation each).
        for namespace in dict.fromkeys([*self._known_namespaces, *self._namespaces]):
            await self.invalidate(namespace)

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

    async def _repair_counters(self, counters: list[bytes]) -> None:
        """Give every counter among ``counters`` that holds no integer a valid one again."""
        values = await self._execute("MGET", *counters)
        for counter, value in zip(counters, values, strict=True):
            if value is None or value.isdigit():
                continue
            name = counter.decode().split(":")[1]
            await self._repair_counter(self._namespace(name))

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

    # -- listing (AsyncToolCache.keys) ------------------------------------------------------

    async def list_entries(self, namespace: str, prefix: str) -> AsyncIterator[EntryPage]:
        """The live generation's entries whose key starts with ``prefix``: ``SCAN MATCH`` with
        the prefix glob-escaped, then one ``MGET`` per page (with the counter, so a listing
        that an invalidation overtakes stops instead of listing a dead generation)."""
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                async for page in engine.list_entries(namespace, prefix):
                    yield page
                return
        ns = self._namespace(namespace)
        try:
            used = ns.observe(await self._execute("GET", ns.gen_key))
            if not used.readable:
                return
            pattern = used.prefix_bytes + glob_escape(prefix).encode() + b"*"
            skip = len(used.prefix_bytes)
            cursor: Any = 0
            while True:
                cursor, found = await self._execute(
                    "SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT
                )
                if found:
                    raw, *values = await self._execute("MGET", ns.gen_key, *found)
                    seen = ns.observe(raw)
                    if seen.number != used.number or not seen.readable:
                        return  # invalidated meanwhile: nothing listed from here on is live
                    page = []
                    for name, data in zip(found, values, strict=True):
                        try:
                            key = name[skip:].decode()
                        except UnicodeDecodeError:
                            continue  # not a key this library wrote
                        if data is not None:
                            page.append((key, data))
                    if page:
                        yield page
                if int(cursor) == 0:
                    return
        except NoPermissionError as exc:
            self._refuse("SCAN", exc, "keys() lists the other stores' entries only")
        except _DRIVER_ERRORS as exc:
            raise _store_error("list", exc, self._secrets) from exc

    # -- internals ---------------------------------------------------------------------------

    def _namespace(self, namespace: str) -> _Namespace:
        if self._closing is not None:
            raise StoreError("RedisStore is closed", store="redis")
        ns = self._namespaces.get(namespace)
        if ns is None:
            ns = _Namespace(self._prefix, check_name(namespace, what="namespace"))
            self._namespaces[namespace] = ns
        return ns

    def _schedule_cleanup(self, pattern: str) -> None:
        # One worker drains the queue, so a burst of invalidations costs one SCAN at a time
        # instead of a SCAN per call competing with callers for pooled connections.
        self._stale_patterns.append(pattern)
        if self._closing is None and (self._cleaner is None or self._cleaner.done()):
            self._cleaner = asyncio.get_running_loop().create_task(self._clean_stale())

    async def _clean_stale(self) -> None:
        while self._stale_patterns:
            pattern = self._stale_patterns.pop(0)
            try:
                await self._unlink_matching(pattern, keep_counters=False)
            except _DRIVER_ERRORS as exc:
                logger.debug(
                    "redis cleanup of %s at %s skipped: %s",
                    pattern,
                    self._url,
                    _store_error("cleanup", exc, self._secrets),
                )

    async def _unlink_matching(self, pattern: str, *, keep_counters: bool) -> list[bytes]:
        """Unlink every key matching ``pattern``; the generation counters kept, if asked to."""
        cursor = 0
        kept: list[bytes] = []
        while True:
            cursor, found = await self._execute(
                "SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT
            )
            if keep_counters:
                kept += [key for key in found if _is_counter(key)]
                found = [key for key in found if not _is_counter(key)]
            for start in range(0, len(found), _UNLINK_BATCH):
                batch = found[start : start + _UNLINK_BATCH]
                try:
                    await self._execute(self._unlink_command, *batch)
                except NoPermissionError as exc:
                    if self._unlink_command != "UNLINK":
                        raise
                    self._refuse("UNLINK", exc, "DEL removes keys")
                    self._unlink_command = "DEL"
                    await self._execute("DEL", *batch)
            if cursor == 0:
                return kept

    def _new_connection(self) -> AbstractConnection:
        """A connection of the batcher's own, like the pool's but without redis-py's per-read
        socket timeout (the batcher bounds each whole round trip instead)."""
        pool = self._client.connection_pool
        options = {**pool.connection_kwargs, "socket_timeout": None}
        conn: AbstractConnection = pool.connection_class(**options)
        return conn

    async def _release(self) -> None:
        self._stale_patterns.clear()
        for task in list(self._lock_cleanups):
            task.cancel()
        if self._lock_cleanups:
            await asyncio.wait(list(self._lock_cleanups))
        if self._cleaner is not None:
            self._cleaner.cancel()
            await asyncio.wait([self._cleaner])
        await self._batcher.aclose()
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

    @property
    def mode(self) -> str:
        """``"standalone"``, ``"sentinel"``, ``"cluster"``, or ``"pending"`` before the first
        command has shown whether the server is part of a cluster."""
        if self._sentinel:
            return "sentinel"
        return str(self._mode)

    async def primaries(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every primary this store writes to now: the server, the primary
        the sentinels name, or each primary of the cluster. For whoever needs to reach them
        all (cross-process invalidation subscribes on each)."""
        engine = await self._engine()
        if engine is not None:
            await engine.start()
            return engine.primaries()
        pool = self._client.connection_pool
        if self._sentinel:
            try:
                host, port = await pool.get_master_address()  # type: ignore[attr-defined]
            except _DRIVER_ERRORS as exc:
                raise _store_error("sentinel lookup", exc, self._secrets) from exc
            return [(str(host), int(port))]
        kwargs = pool.connection_kwargs
        return [(str(kwargs.get("host", kwargs.get("path", ""))), int(kwargs.get("port", 0)))]

    async def describe(self) -> dict[str, Any]:
        """The topology for health reports: ``mode`` and ``nodes`` (address, role, state;
        slots on a cluster), plus ``service`` and ``sentinels`` behind a Sentinel."""
        try:
            engine = await self._engine()
        except StoreError as exc:
            return {"mode": self.mode, "nodes": [], "error": str(exc)}
        if engine is not None:
            try:
                await engine.start()
            except StoreError as exc:
                return {"mode": "cluster", "nodes": [], "error": str(exc)}
            return await engine.describe()
        report: dict[str, Any] = {"mode": self.mode}
        refused = sorted(self._refused | ({"EVAL"} if self._locks.scripts_refused else set()))
        if refused:
            report["refused_commands"] = refused  # by the server's ACL: done without them
        pool = self._client.connection_pool
        if self._sentinel:
            report["service"] = getattr(pool, "service_name", None)
            manager = getattr(pool, "sentinel_manager", None)
            report["sentinels"] = [
                f"{s.connection_pool.connection_kwargs.get('host')}:"
                f"{s.connection_pool.connection_kwargs.get('port')}"
                for s in getattr(manager, "sentinels", [])
            ]
        try:
            primary = (await self.primaries())[0]
            address = f"{primary[0]}:{primary[1]}" if primary[1] else primary[0]
        except StoreError as exc:
            report["nodes"] = []
            report["error"] = str(exc)
            return report
        try:
            await self.ping()
            state = "ok"
        except StoreError as exc:
            state = f"failed: {exc}"
        report["nodes"] = [{"address": address, "role": "primary", "state": state}]
        return report

    # -- locks (get_or_set: one loader per key across processes) ----------------------------

    def lock(self, namespace: str, key: str, *, ttl: float) -> RedisLock:
        """A lock on ``key`` of ``namespace`` shared by every process using this prefix.

        Its Redis key ``<prefix>:!lock:<namespace>:<key>`` is under the prefix (``clear()``
        removes it, nothing else can) and can never be an entry or a counter: ``!`` is not
        allowed in namespace names.
        """
        if not _storable(key):  # any name that can be sent; sharing one is merely slower
            key = "!" + key.encode("utf-8", "surrogatepass").hex()
        name = f"{self._prefix}:!lock:{check_name(namespace, what='namespace')}:{key}"

        async def command(*args: Any) -> Any:
            try:
                if self._mode is not _STANDALONE:
                    engine = await self._engine()
                    if engine is not None:
                        await engine.start()
                        return await engine.client.execute_command(*args)
                return await self._execute(*args)
            except _DRIVER_ERRORS as exc:
                raise _store_error(f"lock {args[0]}", exc, self._secrets) from exc

        return RedisLock(command, name, ttl=ttl, policy=self._locks)

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


def _storable(key: str) -> bool:
    """Whether ``key`` can be sent to Redis (UTF-8 without lone surrogates)."""
    if key.isascii():
        return True
    try:
        key.encode()
    except UnicodeEncodeError:
        return False
    return True


def _holds_no_integer(exc: ResponseError) -> bool:
    """Whether ``INCR`` failed because the counter holds bytes that are no integer."""
    return "not an integer" in str(exc)


def _refused_as_full(reply: Any) -> bool:
    """Whether ``reply`` is Redis refusing a write because it is out of memory."""
    if isinstance(reply, RoundTripError):
        reply = reply.__cause__
    return isinstance(reply, OutOfMemoryError)
