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

:class:`RedisStore` is built in layers, one concept each: :mod:`.store_core` (state, namespace
bookkeeping, topology detection, shutdown), :mod:`.store_housekeeping` (invalidate, clear,
listing, clean-up and their degraded forms) and this module (reads, writes, locks, topology).
"""

from __future__ import annotations

from collections.abc import Coroutine, Sequence
from typing import Any, Final

from redis.exceptions import NoPermissionError

from ...config import CacheConfig, check_name
from ...errors import StoreError
from ..base import StoreItem
from .client import DRIVER_ERRORS as _DRIVER_ERRORS
from .client import build_client
from .client import store_error as _store_error
from .client import ttl_ms as _ttl_ms
from .cluster import _held_back
from .keyspace import DELETE_IF_SAME as _DELETE_IF_SAME
from .keyspace import glob_escape
from .keyspace import raise_first_error as _raise_first_error
from .lock import RedisLock
from .store_core import _STANDALONE, server_identity
from .store_core import refused_as_full as _refused_as_full
from .store_core import storable as _storable
from .store_housekeeping import RedisStoreHousekeeping

__all__ = ["RedisStore", "build_client", "glob_escape", "server_identity"]


def _landed(
    entries: Sequence[tuple[str, bytes, int | None]], stored: list[bool]
) -> list[tuple[str, bytes | None]]:
    return [(entry[0], entry[1]) for entry, ok in zip(entries, stored, strict=True) if ok]


class RedisStore(RedisStoreHousekeeping):
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
            breaker=config.breaker,
        )

    def __repr__(self) -> str:
        return f"RedisStore(url={self._url!r}, key_prefix={self._prefix!r})"

    # -- reads -------------------------------------------------------------------------------

    def get(self, namespace: str, key: str) -> Coroutine[Any, Any, bytes | None]:
        """The entry bytes under ``key``, or ``None``; one ``MGET`` while the generation holds
        (shared with the gets of other callers in the same event-loop turn).

        On a cluster this returns the engine's own coroutine, with no frame of the store's
        around it (each frame costs every get ~0.3 us when its reply wakes it)."""
        engine = self._cluster
        if engine is not None and self._closing is None and _storable(key):
            return engine.get(namespace, key)
        return self._get(namespace, key)

    async def _get(self, namespace: str, key: str) -> bytes | None:
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
        mget = self._batcher.mget_pair
        value: bytes | None
        try:
            raw, value = await mget(ns.gen_key_bytes, used.prefix_bytes + key.encode())
            if self._suspects and (namespace, key) in self._suspects:
                raise _held_back(namespace, key)  # a failover may have rolled it back
            if raw == used.raw:
                return value
            seen = ns.observe(raw)
            if not seen.readable:
                return None
            if seen.number == used.number:
                return value
            raw, value = await mget(ns.gen_key_bytes, seen.prefix_bytes + key.encode())
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
                return self._unsuspected(namespace, keys, reply[1:])
            prefix = seen.prefix_bytes
            reply = await mget([ns.gen_key_bytes, *[prefix + key.encode() for key in keys]])
        except _DRIVER_ERRORS as exc:
            raise _store_error("get_many", exc, self._secrets) from exc
        again = ns.observe(reply[0])
        if again.number != seen.number or not again.readable:
            return [None] * len(keys)
        return self._unsuspected(namespace, keys, reply[1:])

    def _unsuspected(
        self, namespace: str, keys: Sequence[str], values: list[bytes | None]
    ) -> list[bytes | None]:
        """``values``, unless a failover may have rolled one of ``keys`` back."""
        suspects = self._suspects
        if suspects:
            for key in keys:
                if (namespace, key) in suspects:
                    raise _held_back(namespace, key)
        return values

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
        epoch = self._primary_epoch
        try:
            stored, raw = await self._pipeline_sets(used.prefix, entries, ns.gen_key, only_new)
            # Generations only grow, so an unchanged counter read after the SETs proves they
            # landed in the live generation.
            seen = ns.observe(raw)
            if seen.number == used.number:
                if self._unreplicated is not None:
                    self._wrote(epoch, namespace, _landed(entries, stored))
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
        if self._unreplicated is not None:
            self._wrote(epoch, namespace, _landed(entries, stored))
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
        pipeline = self._write_pipeline()
        replies = await pipeline(commands)
        if not only_new:
            # Out of memory (noeviction), Redis refuses a SET but still takes UNLINK: the older
            # value goes, so no other process reads it while the journal holds the newer one.
            full = [c[1] for c, r in zip(commands, replies, strict=True) if _refused_as_full(r)]
            if full:
                await pipeline([(self._unlink_command, *full)])
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
        pipeline = self._write_pipeline()
        epoch = self._primary_epoch
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
        if self._unreplicated is not None:
            self._wrote(epoch, namespace, ((key, None),))
        return bool(removed)

    async def delete_if(self, namespace: str, key: str, data: bytes) -> bool:
        """Remove ``key`` only while it still holds exactly ``data`` (compare and delete in
        one script, so a write landing since keeps its value); ``True`` when removed. On a
        cluster the script runs on the primary serving the key's stripe."""
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                return await engine.delete_if(namespace, key, data)
        ns = self._namespace(namespace)
        try:
            removed = await self._execute(
                "EVAL", _DELETE_IF_SAME, 1, ns.generation.prefix + key, data
            )
        except _DRIVER_ERRORS as exc:
            raise _store_error("delete_if", exc, self._secrets) from exc
        return bool(removed)

    # -- topology ------------------------------------------------------------------------------

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
        report: dict[str, Any] = {"mode": self.mode, "write_lane": self.write_lane.describe()}
        refused = sorted(self._refused | ({"EVAL"} if self._locks.scripts_refused else set()))
        if refused:
            report["refused_commands"] = refused  # by the server's ACL: done without them
        pool = self._client.connection_pool
        if self._unreplicated is not None:
            report.update(self._unreplicated.describe())
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
