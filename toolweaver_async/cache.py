"""``AsyncToolCache``: reads and writes through the chain memory → Redis → file.

The coordinator decides order, promotion, fallback and coalescing and owns the cache's lifetime;
the pieces it coordinates live beside it: the chain is built in ``_chain.py`` (the one place that
knows which store is which), reads run in ``_reads.py``, writes in ``_writes.py``, loads in
:mod:`.loading`, and breakers decide whether a call may go out (:mod:`.resilience`). See
docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from random import random as uniform_random
from typing import Any, ParamSpec, TypeVar

import anyio

from ._chain import build_chain
from ._immutable import is_immutable
from ._listing import list_keys
from ._reads import MISSING, WRONG_TYPE, ReadPath
from ._writes import WritePath
from .coherence import coherence_for
from .compat.helpers import ToolShapedHelpers
from .config import MAX_TRACKED_NAMESPACES, CacheConfig, check_name
from .errors import ConfigError
from .keys import check_key
from .loading.coordinator import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_LOCK_TTL,
    LoadCoordinator,
    LoadOptions,
)
from .loading.decorator import CachedFunction
from .metrics.hooks import CacheListener, attach_listener
from .resilience.breaker import BreakerState, CircuitBreaker
from .savings import record_run, with_savings
from .serialization import EntryCodec, PayloadDecodeError
from .stats import CacheStats, StatsRecorder
from .stores.base import Store

__all__ = ["AsyncToolCache"]

P = ParamSpec("P")
R = TypeVar("R")
logger = logging.getLogger("toolweaver_async.cache")

# aclose waits this long at most for loaded values still being written to the slower stores
# (each write is bounded by its store's timeout anyway).
_CLOSE_GRACE_SECONDS = 2.0


class AsyncToolCache(ToolShapedHelpers):
    """An async cache for agent loops: memory, Redis and file layers behind one fallback chain.

    Store failures never reach callers of ``get``/``set``: a failing store counts as a miss and
    a failure for its circuit breaker. Use ``async with`` or call :meth:`aclose` when done.
    """

    def __init__(
        self,
        config: CacheConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        stores: Sequence[Store] | None = None,
        random: Callable[[], float] | None = None,
        **settings: Any,
    ) -> None:
        if settings:  # AsyncToolCache(redis_url=..., cache_dir=...): CacheConfig fields
            if config is not None:
                raise ConfigError("pass either a CacheConfig or its fields as keywords, not both")
            config = CacheConfig.from_fields(**settings)
        self.config = config if config is not None else CacheConfig()
        self._clock = clock if clock is not None else time.time
        # uniform in [0, 1): TTL jitter and early-refresh draws; injectable for tests
        self._random = random if random is not None else uniform_random
        self._chain = chain = build_chain(self.config, stores, self._clock)
        self._memory = chain.memory  # the lock-free synchronous L1, if the chain starts with one
        self._layers = chain.layers  # the slower stores behind their guards, in order
        self._stats = StatsRecorder([s.name for s in chain.stores])
        self._known_namespaces: set[str] = set()
        self._background: set[asyncio.Future[Any]] = set()
        self._closed = False
        policy = self.config.policy
        self._codec = codec = EntryCodec(max_value_bytes=self.config.max_value_bytes)
        self._reader = reader = ReadPath(
            chain,
            codec=codec,
            clock=self._clock,
            stats=self._stats,
            policy=policy,
            check_namespace=self._check_namespace,
            spawn=self._spawn,
        )
        # What the memory layer may trust while other processes write (see coherence.py).
        self._coherence = coherence_for(
            self.config, chain.memory, reader.tracker, [g.store for g in chain.layers]
        )
        # The read hot path, bound once: get() inlines the memory hit against these.
        self._namespace_reads = reader.namespaces
        self._decode_any = reader.decode_any
        self._from_memory = reader.from_memory
        self._read_through = reader.read
        self._writes = writes = WritePath(
            chain,
            codec=codec,
            clock=self._clock,
            random=self._random,
            stats=self._stats,
            policy=policy,
            tracker=reader.tracker,
            check_namespace=self._check_namespace,
            adopt=self._adopt,
        )
        self._loads = LoadCoordinator(
            peek=reader.peek_entry,
            read=reader.read_entry,
            write=writes.write_loaded,
            landing=lambda namespace, key: writes.landing.get((namespace, key)),
            lock_for=chain.lock_for,
            policy=policy,
            counters=self._stats.counters,
            clock=self._clock,
            random=self._random,
            track=self._adopt,
        )

    @classmethod
    def from_env(cls, **overrides: Any) -> AsyncToolCache:
        """A cache configured from ``USE_REDIS``, ``REDIS_URL``, ``REDIS_PASSWORD``,
        ``TOOLWEAVER_CACHE_DIR`` and ``TOOLWEAVER_CACHE_PREFIX``; keyword overrides win."""
        clock = overrides.pop("clock", None)
        return cls(CacheConfig.from_env(**overrides), clock=clock)

    # -- lifetime -------------------------------------------------------------------------
    async def __aenter__(self) -> AsyncToolCache:
        await self.connect()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Load the outage journal a previous run left (its replay starts by itself), then ping
        every remote store once; one that does not answer starts with its breaker open, so the
        first agent steps do not each wait on a dead server."""

        await self._chain.open()
        logger.info("cache %s", self.config.describe_chain())
        # Open the invalidation channel and give it a moment, so that the first reads are
        # already vouched for; a Redis that is down leaves the memory layer in window mode.
        self._coherence.start()
        if all(layer.breaker.state is BreakerState.CLOSED for layer in self._layers):
            await self._coherence.wait_live(
                self.config.redis_connect_timeout + self.config.redis_command_timeout
            )

    def breakers(self) -> dict[str, CircuitBreaker]:
        """The circuit breaker of every guarded store (Redis, file), by store name."""
        return {layer.name: layer.breaker for layer in self._layers}

    def journal_sizes(self) -> dict[str, int]:
        """Writes waiting in each store's outage journal (Redis keeps one), by store name."""
        return self._chain.journal_sizes()

    def add_listener(self, listener: CacheListener) -> None:
        """Tell ``listener`` of every loader call and breaker state change. Hits, misses,
        sets and errors are counters read from :meth:`stats` when needed: the read and write
        paths do no extra work for listeners (see :mod:`toolweaver_async.metrics`)."""
        attach_listener(listener, self._loads, self.breakers())

    async def aclose(self) -> None:
        """Stop background work and release every store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            landing = list(self._writes.landing.values())
            if landing:  # loaded values on their way to Redis and files: let them arrive
                await asyncio.wait(landing, timeout=_CLOSE_GRACE_SECONDS)
            await self._coherence.aclose()
            for task in list(self._background):
                task.cancel()
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
            await self._chain.aclose()
            if self.config.stats_file is not None:
                await record_run(
                    self.config.stats_file, self.stats(), within=self.config.file_timeout
                )

    # -- reads ----------------------------------------------------------------------------
    async def get(
        self, key: str, *, namespace: str = "default", default: Any = None, type: Any = None
    ) -> Any:
        """The cached value of ``key``, or ``default`` on a miss. ``type=`` decodes into a
        typed value (a msgspec Struct, a dataclass, ``list[float]`` ...)."""
        # The memory hit is the hot path: one dict lookup for the namespace, one clock read,
        # one LRU lookup, then the payload decode (the copy each caller owns) or the object
        # decoded once (an immutable value, or any value of a share_objects namespace).
        # No locks, tasks or awaits.
        # (_from_memory is inlined here: a method call is ~5 % of a 1 KB hit; so is the FRESH
        # case of freshness.entry_state, `expires_at is None or expires_at > now`.)
        reads = self._namespace_reads.get(namespace)
        if reads is None or key.__class__ is not str:
            key = check_key(key)
            reads = self._reader.reads_of(namespace)
        memory = self._memory
        if memory is not None:
            now = self._clock()
            entry = memory.lookup_entry(namespace, key, now)
            if entry is not None:
                header = entry.header
                if header is not None and (header.expires_at is None or header.expires_at > now):
                    # The object decoded once: share_objects, or a value nobody can mutate.
                    shared = entry.shared
                    # `==` too: each `list[float]` written in a call is a new object
                    if shared is not None and (shared[0] is type or shared[0] == type):
                        reads.hits["memory"] += 1
                        return shared[1]
                    if type is None and not reads.share:
                        try:
                            value = self._decode_any(header.payload)
                        except PayloadDecodeError:
                            pass  # counted and handled by _from_memory below
                        else:
                            if is_immutable(value):
                                entry.shared = (None, value)
                            reads.hits["memory"] += 1
                            return value
                value = self._from_memory(memory, namespace, key, type, reads)
                if value is WRONG_TYPE:
                    reads.counters.misses += 1
                    return default
                if value is not MISSING:
                    return value
        if self._layers:
            found = await self._read_through(namespace, key, type, reads.counters)
            if found is not None:
                return found[0].payload
        reads.counters.misses += 1
        return default

    async def get_many(
        self, keys: Iterable[str], *, namespace: str = "default", type: Any = None
    ) -> dict[str, Any]:
        """The hits among ``keys`` (misses are left out), one round trip per store."""
        return await self._reader.get_many(keys, namespace, type)

    # -- writes ---------------------------------------------------------------------------
    async def set(
        self, key: str, value: Any, *, namespace: str = "default", ttl: float | None = None
    ) -> None:
        """Cache ``value`` under ``key`` in every store. ``ttl`` in seconds; ``None`` takes
        the namespace policy. Raises ``SerializationError``/``ValueTooLargeError`` (nothing is
        written anywhere) and ``InvalidTTLError`` for ``ttl <= 0``."""
        writes = self._writes
        if writes.landing:  # a loaded value of this key still landing goes first
            await writes.settle(namespace, key)
        await writes.set_now(key, value, namespace=namespace, ttl=ttl)

    async def set_many(
        self,
        mapping: Mapping[str, Any],
        *,
        namespace: str = "default",
        ttl: float | None = None,
    ) -> None:
        """Cache every item; all values are encoded first, so one bad value writes nothing."""
        self._check_namespace(namespace)
        await self._writes.set_many(mapping, namespace, ttl)

    async def delete(self, key: str, *, namespace: str = "default") -> bool:
        """Remove ``key`` from every store; ``True`` when any store held it."""
        key = check_key(key)
        self._check_namespace(namespace)
        await self._writes.make_way(namespace, key)
        self._loads.forget(namespace, key)  # a remembered loader failure goes with the entry
        return await self._writes.delete(namespace, key)

    async def invalidate(self, namespace: str) -> None:
        """Make every entry of ``namespace`` unreadable, in every store, at once."""
        self._check_namespace(namespace)
        await self._writes.make_way(namespace)
        self._loads.forget_namespace(namespace)
        await self._writes.invalidate(namespace)

    async def clear(self) -> None:
        """Remove every entry of this cache (its key prefix) from every store; nothing else."""
        await self._writes.make_way()
        self._loads.forget_namespace(None)
        await self._writes.clear()

    # -- loaders --------------------------------------------------------------------------
    async def get_or_set(
        self,
        key: str,
        loader: Callable[[], Awaitable[Any]],
        *,
        namespace: str = "default",
        ttl: float | None = None,
        type: Any = None,
        lock: bool | None = None,
        lock_ttl: float = DEFAULT_LOCK_TTL,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> Any:
        """The cached value of ``key``, or what ``await loader()`` returns (then cached).

        Concurrent misses of one key run ``loader`` once and share its result or exception.
        ``lock`` (default: on whenever Redis is in the chain) elects one loader across
        processes; the lock lives ``lock_ttl`` seconds past a holder that died, and others
        wait up to ``lock_timeout`` seconds for its value before loading themselves. See
        :mod:`toolweaver_async.loading` for stale-while-revalidate, early refresh and negative
        caching.
        """
        key = check_key(key)
        self._check_namespace(namespace)
        options = LoadOptions(ttl, type, lock=lock, lock_ttl=lock_ttl, lock_timeout=lock_timeout)
        return await self._loads.get_or_set(namespace, key, loader, options)

    def cached(
        self,
        *,
        namespace: str = "results",
        ttl: float | None = None,
        key: Callable[..., str] | None = None,
        lock: bool | None = None,
        lock_ttl: float = DEFAULT_LOCK_TTL,
        lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    ) -> Callable[[Callable[P, Awaitable[R]]], CachedFunction[P, R]]:
        """Decorate an async function so equal calls share one cached result (and one
        loader, as :meth:`get_or_set`). The key is the function's qualified name and a stable
        hash of its arguments unless ``key=`` builds it; see :class:`CachedFunction`."""
        self._check_namespace(namespace)
        options = LoadOptions(ttl, lock=lock, lock_ttl=lock_ttl, lock_timeout=lock_timeout)

        def decorate(fn: Callable[P, Awaitable[R]]) -> CachedFunction[P, R]:
            return CachedFunction(
                fn, cache=self, loads=self._loads, namespace=namespace, key=key, options=options
            )

        return decorate

    def _adopt(self, task: asyncio.Future[Any]) -> None:
        """Keep a load or refresh task referenced until done; aclose cancels it."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- introspection --------------------------------------------------------------------
    def keys(self, *, namespace: str = "default", prefix: str = "") -> AsyncIterator[str]:
        """Each key of a fresh entry of ``namespace`` that starts with ``prefix``, once,
        whichever stores hold it; streamed in pages (see :mod:`toolweaver_async._listing`)."""
        self._check_namespace(namespace)
        return list_keys(
            memory=self._memory,
            layers=self._layers,
            codec=self._codec,
            clock=self._clock,
            counters=self._stats.counters(namespace),
            namespace=namespace,
            prefix=check_key(prefix),
        )

    def stats(self) -> CacheStats:
        """Counters per namespace and overall: hits per store, misses, errors, loaders ..."""
        snapshot = self._stats.snapshot(self._chain.corrupt_in_stores(), self._chain.bugs())
        snapshot = with_savings(snapshot, self.config.policy)
        return dataclasses.replace(
            snapshot,
            coherence=self._coherence.counters(),
            write_queue=self._chain.write_queue(),
        )

    async def health_check(self) -> dict[str, Any]:
        """Which stores answer now, their breaker states, why Redis is not in use, and the
        memory layer's coherence (``live``, ``reconnecting``, ``window`` ...)."""
        report = await self._chain.health(self.config, self.stats().overall.errors)
        report["coherence"] = self._coherence.describe()
        return report

    # -- small helpers --------------------------------------------------------------------
    def _check_namespace(self, namespace: str) -> None:
        if namespace not in self._known_namespaces:
            if len(self._known_namespaces) >= MAX_TRACKED_NAMESPACES:
                self._known_namespaces.clear()  # a memo of checked names: bounded, not kept
            check_name(namespace, what="namespace")
            self._known_namespaces.add(namespace)

    def _spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background; kept referenced until done, cancelled by aclose."""
        if self._closed:
            if asyncio.iscoroutine(work):
                work.close()
            return
        self._adopt(asyncio.ensure_future(work))
