"""``AsyncToolCache``: reads and writes through the chain memory → Redis → file.

The coordinator decides order, promotion, fallback and coalescing. Stores move bytes, breakers
decide whether a call may go out (:mod:`.guard`), the codec turns values into bytes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from random import random as uniform_random
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import anyio
import msgspec

from .coherence import coherence_for
from .compat.helpers import ToolShapedHelpers
from .config import CacheConfig, check_name, redact_url
from .errors import InvalidTTLError
from .keys import check_key
from .loading.coordinator import (
    DEFAULT_LOCK_TIMEOUT,
    DEFAULT_LOCK_TTL,
    LoadCoordinator,
    LoadOptions,
)
from .loading.decorator import CachedFunction
from .loading.locks import GuardedLock
from .resilience.breaker import BreakerState, CircuitBreaker
from .resilience.guard import FAILED, GuardedStore, Unreachable, answered_at_once
from .resilience.journal import OutageJournal
from .serialization import EntryCodec, Envelope, PayloadDecodeError, TypeMismatchError
from .stats import CacheStats, NamespaceCounters, StatsRecorder
from .stores.base import Store, StoreItem
from .stores.file import FileStore
from .stores.memory import MemoryEntry, MemoryStore
from .stores.redis.store import RedisStore

__all__ = ["AsyncToolCache"]

P = ParamSpec("P")
R = TypeVar("R")
logger = logging.getLogger("toolweaver_async.cache")

_MISSING: Any = object()
# aclose waits this long at most for loaded values still being written to the slower stores
# (each write is bounded by its store's timeout anyway).
_CLOSE_GRACE_SECONDS = 2.0


class _WrongType:
    """Marks an entry that is ours and fresh but does not decode into the requested type."""


_WRONG_TYPE = _WrongType()
WRONG_TYPE: Any = _WRONG_TYPE  # the same marker, untyped, where values of any type flow


async def _settle(writes: asyncio.Future[Any]) -> None:
    """Wait for writes a cancelled caller left running (a task, so aclose can stop them)."""
    try:
        await writes
    except asyncio.CancelledError:
        writes.cancel()
        raise


def build_stores(config: CacheConfig, clock: Callable[[], float]) -> list[Store]:
    """The stores of ``config.enabled_stores``, in chain order."""
    built: list[Store] = []
    for name in config.enabled_stores:
        if name == "memory":
            built.append(
                MemoryStore(
                    max_entries=config.memory_max_entries,
                    max_bytes=config.memory_max_bytes,
                    clock=clock,
                )
            )
        elif name == "redis":
            built.append(RedisStore.from_config(config))
        else:
            built.append(FileStore.from_config(config, clock=clock))
    return built


class _ReadTracker:
    """Knows which keys are being read from a slower store right now, and whether they were
    written meanwhile, so a read never promotes a value older than a concurrent write."""

    __slots__ = ("_epoch", "_inflight")

    def __init__(self) -> None:
        self._inflight: dict[tuple[str, str], list[int]] = {}  # key -> [readers, writes]
        self._epoch = 0  # bumped by invalidate() and clear()

    def begin(self, namespace: str, key: str) -> tuple[list[int], int, int]:
        slot = self._inflight.get((namespace, key))
        if slot is None:
            slot = self._inflight[(namespace, key)] = [0, 0]
        slot[0] += 1
        return slot, slot[1], self._epoch

    def still_current(self, token: tuple[list[int], int, int]) -> bool:
        slot, writes, epoch = token
        return slot[1] == writes and self._epoch == epoch

    def end(self, namespace: str, key: str, token: tuple[list[int], int, int]) -> None:
        slot = token[0]
        slot[0] -= 1
        if slot[0] == 0:
            self._inflight.pop((namespace, key), None)

    def wrote(self, namespace: str, key: str) -> None:
        slot = self._inflight.get((namespace, key))
        if slot is not None:
            slot[1] += 1

    def wrote_everything(self) -> None:
        self._epoch += 1


class _NamespaceReads:
    """What a read needs about one namespace, found with one dict lookup per call."""

    __slots__ = ("counters", "hits", "share")

    def __init__(self, counters: NamespaceCounters, share: bool) -> None:
        self.counters = counters
        self.hits = counters.hits
        self.share = share  # NamespacePolicy.share_objects


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
    ) -> None:
        self.config = config if config is not None else CacheConfig()
        self._clock = clock if clock is not None else time.time
        self._codec = EntryCodec(max_value_bytes=self.config.max_value_bytes)
        self._decode_any = self._codec.payload_decoder(None)
        chain = list(stores) if stores is not None else build_stores(self.config, self._clock)
        # The first store, when it is a MemoryStore, is the lock-free synchronous L1.
        first = chain[0] if chain else None
        self._memory: MemoryStore | None = first if isinstance(first, MemoryStore) else None
        if self._memory is not None:
            chain.pop(0)
        self._layers = [self._guard(s) for s in chain]
        names = ([self._memory.name] if self._memory is not None else []) + [
            g.name for g in self._layers
        ]
        self._stats = StatsRecorder(names)
        self._reads = _ReadTracker()
        # What the memory layer may trust while other processes write (see coherence.py).
        self._coherence = coherence_for(
            self.config, self._memory, self._reads, [g.name for g in self._layers]
        )
        self._known_namespaces: set[str] = set()
        self._namespace_reads: dict[str, _NamespaceReads] = {}  # read hot path, see get()
        self._background: set[asyncio.Task[Any]] = set()
        self._closed = False
        # uniform in [0, 1): TTL jitter and early-refresh draws; injectable for tests
        self._random = random if random is not None else uniform_random
        self._loads = LoadCoordinator(
            peek=self._peek_entry,
            read=self._read_entry,
            write=self._set_now,
            write_behind=self._memory is not None,
            lock_for=self._lock_for,
            policy=self.config.policy,
            counters=self._stats.counters,
            clock=self._clock,
            random=self._random,
            track=self._adopt,
        )

    def _guard(self, store: Store) -> GuardedStore:
        """``store`` behind its breaker. Redis, shared by processes and prone to outages, also
        gets an outage journal (on disk beside the file store when the chain has one) so that
        it never serves a value older than one written while it was down, and a deadline per
        call unless the store bounds its calls itself. Every guarded store is pinged while its
        breaker is open (``BreakerSettings.health_check_interval``)."""
        config = self.config
        watch = config.breaker.health_check_interval
        if store.name != "redis":
            return GuardedStore(store, self._breaker_for(store), watch_interval=watch)
        folder = None
        if "file" in config.enabled_stores:
            # Beside the prefix folder, not in it: FileStore.clear() empties that one. '~' cannot
            # appear in a key prefix, so no cache's folder can be this one.
            folder = config.cache_dir / "~journal" / config.key_prefix
        journal = OutageJournal(
            max_entries=config.journal_max_entries, clock=self._clock, folder=folder
        )
        # [read hot path, issue 5] A store that bounds every call itself (RedisStore: one
        # shared watchdog timer, queue wait included) needs no second bound here:
        # asyncio.timeout costs ~3.4 us a call on uvloop and cut Redis-only gets at 100
        # coroutines from ~67k/s to ~37k/s.
        bounded = getattr(store, "bounds_calls", False)
        return GuardedStore(
            store,
            self._breaker_for(store),
            journal=journal,
            deadline=None if bounded else config.redis_command_timeout,
            watch_interval=watch,
        )

    def _breaker_for(self, store: Store) -> CircuitBreaker:
        slow = {"redis": self.config.redis_command_timeout, "file": self.config.file_timeout}
        return CircuitBreaker.from_settings(
            self.config.breaker, name=store.name, slow_call_timeout=slow.get(store.name)
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

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def connect(self) -> None:
        """Load the outage journal a previous run left (its replay starts by itself), then ping
        every remote store once; one that does not answer starts with its breaker open, so the
        first agent steps do not each wait on a dead server."""

        async def probe(layer: GuardedStore) -> None:
            await layer.open()
            outcome = await layer.attempt(layer.store.ping)
            if outcome is FAILED:
                layer.breaker.trip()  # the breaker logs the state change once
                logger.info(
                    "%s store unavailable at start (%s); continuing without it",
                    layer.name,
                    layer.last_error,
                )

        async with anyio.create_task_group() as tg:
            for layer in self._layers:
                tg.start_soon(probe, layer)
        # Open the invalidation channel and give it a moment, so the first reads are already
        # vouched for; a Redis that is down leaves the memory layer in window mode.
        self._coherence.start()
        if all(layer.breaker.state is BreakerState.CLOSED for layer in self._layers):
            await self._coherence.wait_live(
                self.config.redis_connect_timeout + self.config.redis_command_timeout
            )

    async def aclose(self) -> None:
        """Stop background work and release every store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            landing = self._loads.writes_in_flight()
            if landing:  # loaded values on their way to Redis and files: let them arrive
                await asyncio.wait(landing, timeout=_CLOSE_GRACE_SECONDS)
            await self._coherence.aclose()
            for task in list(self._background):
                task.cancel()
            if self._background:
                await asyncio.gather(*self._background, return_exceptions=True)
            for layer in self._layers:  # stop journal replays, write journals to disk
                try:
                    await layer.aclose()
                except Exception as exc:
                    logger.warning("closing %s store's guard failed: %s", layer.name, exc)
            for store in self._all_stores():
                try:
                    await store.aclose()
                except Exception as exc:
                    logger.warning("closing %s store failed: %s", store.name, exc)

    def _all_stores(self) -> list[Store]:
        return ([self._memory] if self._memory is not None else []) + [
            g.store for g in self._layers
        ]

    # -- reads ----------------------------------------------------------------------------
    async def get(
        self, key: str, *, namespace: str = "default", default: Any = None, type: Any = None
    ) -> Any:
        """The cached value of ``key``, or ``default`` on a miss. ``type=`` decodes into a
        typed value (a msgspec Struct, a dataclass, ``list[float]`` ...)."""
        # The memory hit is the hot path: one dict lookup for the namespace, one clock read,
        # one LRU lookup, then the payload decode (the copy each caller owns) or, in a
        # share_objects namespace, the object decoded once. No locks, tasks or awaits.
        # (_from_memory is inlined here: a method call is ~5 % of a 1 KB hit.)
        reads = self._namespace_reads.get(namespace)
        if reads is None or key.__class__ is not str:
            key = check_key(key)
            reads = self._reads_of(namespace)
        memory = self._memory
        if memory is not None:
            now = self._clock()
            entry = memory.lookup_entry(namespace, key, now)
            if entry is not None:
                header = entry.header
                if header is not None and (header.expires_at is None or header.expires_at > now):
                    if reads.share:
                        shared = entry.shared
                        # `==` too: each `list[float]` written in a call is a new object
                        if shared is not None and (shared[0] is type or shared[0] == type):
                            reads.hits["memory"] += 1
                            return shared[1]
                    elif type is None:
                        try:
                            value = self._decode_any(header.payload)
                        except PayloadDecodeError:
                            pass  # counted and handled by _from_memory below
                        else:
                            reads.hits["memory"] += 1
                            return value
                value = self._from_memory(memory, namespace, key, type, reads)
                if value is WRONG_TYPE:
                    reads.counters.misses += 1
                    return default
                if value is not _MISSING:
                    return value
        if self._layers:
            found = await self._read_through(namespace, key, type, reads.counters)
            if found is not None:
                return found[0].payload
        reads.counters.misses += 1
        return default

    def _from_memory(
        self, memory: MemoryStore, namespace: str, key: str, type_: Any, reads: _NamespaceReads
    ) -> Any:
        """The value of a fresh memory entry of ``key``, or ``_MISSING``."""
        now = self._clock()
        entry = memory.lookup_entry(namespace, key, now)
        if entry is None:
            return _MISSING
        header = entry.header
        if header is None:
            header = self._check_memory_entry(memory, entry, namespace, key, reads.counters)
            if header is None:
                return _MISSING
        expires_at = header.expires_at
        if expires_at is not None and expires_at <= now:
            return _MISSING  # stale: only get_or_set may serve it, and only while it refreshes
        if reads.share:
            shared = entry.shared
            if shared is not None and (shared[0] is type_ or shared[0] == type_):
                reads.hits["memory"] += 1
                return shared[1]
        try:
            value = (self._decode_any if type_ is None else self._codec.payload_decoder(type_))(
                header.payload
            )
        except PayloadDecodeError as exc:
            if isinstance(exc, msgspec.ValidationError):
                reads.counters.type_mismatches += 1
                return WRONG_TYPE
            reads.counters.corrupt += 1
            memory.discard(namespace, key)
            return _MISSING
        if reads.share:
            entry.shared = (type_, value)
        reads.hits["memory"] += 1
        return value

    def _check_memory_entry(
        self,
        memory: MemoryStore,
        entry: MemoryEntry,
        namespace: str,
        key: str,
        counters: NamespaceCounters,
    ) -> Any:
        """The entry's envelope, with its payload still encoded, checked once and kept on the
        entry; ``None`` (and the entry removed) when the bytes are not this key's entry."""
        try:
            header = self._codec.decode_header(entry.data)
        except Exception:
            header = None
        if header is None or header.key != key or header.namespace != namespace:
            counters.corrupt += 1
            memory.discard(namespace, key)
            return None
        entry.header = header
        return header

    def _reads_of(self, namespace: str) -> _NamespaceReads:
        """The read state of ``namespace``, made (and the name checked) on its first read."""
        reads = self._namespace_reads.get(namespace)
        if reads is None:
            self._check_namespace(namespace)
            share = self.config.policy(namespace).share_objects
            reads = _NamespaceReads(self._stats.counters(namespace), share)
            self._namespace_reads[namespace] = reads
        return reads

    async def _read_through(
        self,
        namespace: str,
        key: str,
        type_: Any,
        counters: NamespaceCounters,
        *,
        until_hard_expiry: bool = False,
    ) -> tuple[Envelope[Any], str] | None:
        """The first usable entry of ``key`` in the slower stores and its store's name,
        promoted into the faster ones. Fresh entries only, unless ``until_hard_expiry`` (what
        get_or_set serves while it refreshes). An entry of another type ends the search."""
        layers = self._layers
        if self._memory is None and len(layers) == 1:
            # Nothing faster to promote into (Redis or file alone, as benchmarks run them), so
            # no read tracking: ~0.5 us of a batched Redis hit.
            layer = layers[0]
            data = await layer.get(namespace, key)
            if data is None or isinstance(data, Unreachable):
                if data is FAILED:
                    counters.errors[layer.name] += 1
                return None
            envelope = self._fresh(
                data, namespace, key, type_, counters, layer, until_hard_expiry=until_hard_expiry
            )
            if envelope is None or isinstance(envelope, _WrongType):
                return None
            counters.hits[layer.name] += 1
            return envelope, layer.name
        token = self._reads.begin(namespace, key)
        try:
            for index, layer in enumerate(layers):
                data = await layer.get(namespace, key)
                if isinstance(data, Unreachable):
                    if data is FAILED:
                        counters.errors[layer.name] += 1
                    continue
                if data is None:
                    continue
                envelope = self._fresh(
                    data,
                    namespace,
                    key,
                    type_,
                    counters,
                    layer,
                    until_hard_expiry=until_hard_expiry,
                )
                if envelope is None:
                    continue
                if isinstance(envelope, _WrongType):
                    return None  # the entry is there, in another shape: slower stores agree
                counters.hits[layer.name] += 1
                if self._reads.still_current(token):
                    self._drop_stale_memory_copy(namespace, key, envelope)
                    self._promote(index, namespace, key, data, envelope)
                return envelope, layer.name
            return None
        finally:
            self._reads.end(namespace, key, token)

    def _fresh(
        self,
        data: bytes,
        namespace: str,
        key: str,
        type_: Any,
        counters: NamespaceCounters,
        layer: GuardedStore | None,
        *,
        until_hard_expiry: bool = False,
    ) -> Envelope[Any] | _WrongType | None:
        """The decoded entry when it is ours, for this key, and fresh (or, with
        ``until_hard_expiry``, not yet past its grace period); ``WRONG_TYPE`` when it is ours
        but does not fit ``type_``; else ``None`` (a corrupt entry is removed from its store)."""
        try:
            envelope = self._codec.decode(data, type_)
        except TypeMismatchError:
            counters.type_mismatches += 1
            return _WRONG_TYPE
        except Exception:
            envelope = None
        if envelope is None or envelope.key != key or envelope.namespace != namespace:
            counters.corrupt += 1
            self._remove_corrupt(namespace, key, layer)
            return None
        limit = envelope.hard_expires_at if until_hard_expiry else envelope.expires_at
        if limit is not None and limit <= self._clock():
            return None
        return envelope

    def _remove_corrupt(self, namespace: str, key: str, layer: GuardedStore | None) -> None:
        if layer is None:
            if self._memory is not None:
                self._memory.discard(namespace, key)
        else:
            self._spawn(layer.delete(namespace, key))

    def _promote(
        self, found_at: int, namespace: str, key: str, data: bytes, envelope: Envelope[Any]
    ) -> None:
        """Copy a hit into the faster stores with its remaining lifetime; never overwrite."""
        if found_at == 0 and self._memory is None:
            return
        hard = envelope.hard_expires_at
        remaining = None if hard is None else hard - self._clock()
        if remaining is not None and remaining <= 0:
            return
        if self._memory is not None:
            self._memory.put_if_absent(namespace, key, data, remaining)
        for layer in self._layers[:found_at]:
            # Only into a healthy store: during an outage a task per hit would only be refused
            # by the open breaker (~15 us of loop time each), and a half-open store's probe
            # slot belongs to real traffic.
            if layer.breaker.state is BreakerState.CLOSED:
                self._spawn(layer.add(namespace, key, data, remaining))

    async def get_many(
        self, keys: Iterable[str], *, namespace: str = "default", type: Any = None
    ) -> dict[str, Any]:
        """The hits among ``keys`` (misses are left out), one round trip per store."""
        reads = self._reads_of(namespace)
        counters = reads.counters
        found: dict[str, Any] = {}
        missing: list[str] = []
        memory = self._memory
        for key in dict.fromkeys(check_key(k) for k in keys):
            value = (
                _MISSING
                if memory is None
                else self._from_memory(memory, namespace, key, type, reads)
            )
            if value is _MISSING:
                missing.append(key)
            elif value is WRONG_TYPE:
                counters.misses += 1
            else:
                found[key] = value
        for index, layer in enumerate(self._layers):
            if not missing:
                break
            answers = await layer.get_many(namespace, missing)
            if isinstance(answers, Unreachable):
                if answers is FAILED:
                    counters.errors[layer.name] += 1
                continue
            still_missing = []
            for key, data in zip(missing, answers, strict=True):
                envelope = (
                    None
                    if data is None
                    else self._fresh(data, namespace, key, type, counters, layer)
                )
                if envelope is None or data is None:
                    still_missing.append(key)
                    continue
                if isinstance(envelope, _WrongType):
                    counters.misses += 1
                    continue
                counters.hits[layer.name] += 1
                found[key] = envelope.payload
                self._promote(index, namespace, key, data, envelope)
            missing = still_missing
        counters.misses += len(missing)
        return found

    # -- writes ---------------------------------------------------------------------------
    async def set(
        self, key: str, value: Any, *, namespace: str = "default", ttl: float | None = None
    ) -> None:
        """Cache ``value`` under ``key`` in every store. ``ttl`` in seconds; ``None`` takes
        the namespace policy. Raises ``SerializationError``/``ValueTooLargeError`` (nothing is
        written anywhere) and ``InvalidTTLError`` for ``ttl <= 0``."""
        if self._loads.writes_pending(namespace, key):
            await self._loads.settle_writes(namespace, key)
        await self._set_now(key, value, namespace=namespace, ttl=ttl)

    def _set_now(
        self, key: str, value: Any, *, namespace: str, ttl: float | None
    ) -> Awaitable[list[Any]]:
        """The part of ``set`` that happens at once (checks, the one encode, memory); returns
        the writes to the slower stores, still to be awaited."""
        key = check_key(key)
        self._check_namespace(namespace)
        data, store_ttl = self._encode(namespace, key, value, ttl)
        self._reads.wrote(namespace, key)
        self._stats.counters(namespace).sets += 1
        if self._memory is not None:
            self._memory.put(namespace, key, data, store_ttl)
        return self._on_every_layer(lambda g: g.set(namespace, key, data, store_ttl), namespace)

    async def set_many(
        self,
        mapping: Mapping[str, Any],
        *,
        namespace: str = "default",
        ttl: float | None = None,
    ) -> None:
        """Cache every item; all values are encoded first, so one bad value writes nothing."""
        self._check_namespace(namespace)
        if self._loads.writes_pending(namespace):
            await self._loads.settle_writes(namespace)
        items: list[StoreItem] = []
        for key, value in mapping.items():
            key = check_key(key)
            data, store_ttl = self._encode(namespace, key, value, ttl)
            items.append((key, data, store_ttl))
        if not items:
            return
        self._stats.counters(namespace).sets += len(items)
        for key, data, store_ttl in items:
            self._reads.wrote(namespace, key)
            if self._memory is not None:
                self._memory.put(namespace, key, data, store_ttl)
        await self._on_every_layer(lambda g: g.set_many(namespace, items), namespace)

    def _encode(
        self, namespace: str, key: str, value: Any, ttl: float | None
    ) -> tuple[bytes, float | None]:
        """Entry bytes and how long stores may keep them."""
        policy = self.config.policy(namespace)
        if ttl is None:
            fresh_for = policy.ttl
        else:
            if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
                raise InvalidTTLError(f"ttl must be a number of seconds > 0, got {ttl!r}")
            fresh_for = float(ttl)
        if fresh_for is not None and policy.ttl_jitter > 0:
            # keys written together must not all expire together
            fresh_for *= 1.0 - policy.ttl_jitter * self._random()
        now = self._clock()
        expires_at = None if fresh_for is None else now + fresh_for
        stale_until = None
        if expires_at is not None and policy.stale_ttl > 0:
            stale_until = expires_at + policy.stale_ttl
        data = self._codec.encode(
            namespace, key, value, created_at=now, expires_at=expires_at, stale_until=stale_until
        )
        hard = stale_until if stale_until is not None else expires_at
        return data, None if hard is None else hard - now

    async def delete(self, key: str, *, namespace: str = "default") -> bool:
        """Remove ``key`` from every store; ``True`` when any store held it."""
        key = check_key(key)
        self._check_namespace(namespace)
        self._reads.wrote(namespace, key)
        if self._loads.writes_pending(namespace, key):
            await self._loads.settle_writes(namespace, key)
        self._stats.counters(namespace).deletes += 1
        self._loads.forget(namespace, key)  # a remembered loader failure goes with the entry
        removed = self._memory.discard(namespace, key) if self._memory is not None else False
        answers = await self._on_every_layer(lambda g: g.delete(namespace, key), namespace)
        return removed or any(a is True for a in answers)

    async def invalidate(self, namespace: str) -> None:
        """Make every entry of ``namespace`` unreadable, in every store, at once."""
        self._check_namespace(namespace)
        if self._loads.writes_pending(namespace):
            await self._loads.settle_writes(namespace)
        self._reads.wrote_everything()
        self._loads.forget_namespace(namespace)
        if self._memory is not None:
            self._memory.discard_namespace(namespace)
        await self._on_every_layer(lambda g: g.invalidate(namespace), namespace)

    async def clear(self) -> None:
        """Remove every entry of this cache (its key prefix) from every store; nothing else."""
        if self._loads.writes_pending():
            await self._loads.settle_writes()
        self._reads.wrote_everything()
        self._loads.forget_namespace(None)
        if self._memory is not None:
            self._memory.discard_all()
        await self._on_every_layer(lambda g: g.clear(), None)

    async def _on_every_layer(
        self, op: Callable[[GuardedStore], Awaitable[Any]], namespace: str | None
    ) -> list[Any]:
        """Run ``op`` on every remote layer concurrently; failures are counted, not raised.

        A caller cancelled mid-write never leaves some stores with the new value and some with
        the old: one layer's write runs in the caller's own task, so it has started (a Redis
        write cut short is journaled, a file write finishes in its thread); several run
        shielded and finish in the background (aclose still stops them)."""
        layers = self._layers
        if not layers:
            return []
        calls = [op(g) for g in layers]
        if sum(not answered_at_once(call) for call in calls) <= 1:
            # At most one store does I/O (the others journaled the write or were skipped):
            # it runs in the caller's task, as a lone store's write does.
            answers = [await call for call in calls]
        else:
            # gather wraps each write in a task that has not started yet: cancelling them with
            # the caller would skip those stores altogether.
            writes = asyncio.gather(*calls)
            try:
                answers = list(await asyncio.shield(writes))
            except asyncio.CancelledError:
                if not writes.done():
                    finishing = asyncio.ensure_future(_settle(writes))
                    self._background.add(finishing)
                    finishing.add_done_callback(self._background.discard)
                raise
        if namespace is not None and FAILED in answers:
            counters = self._stats.counters(namespace)
            for layer, answer in zip(layers, answers, strict=True):
                if answer is FAILED:
                    counters.errors[layer.name] += 1
        return answers

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
                fn,
                cache=self,
                loads=self._loads,
                namespace=namespace,
                key=key,
                options=options,
            )

        return decorate

    def _peek_entry(
        self, namespace: str, key: str, type_: Any, counters: NamespaceCounters
    ) -> Envelope[Any] | None:
        """The memory entry of ``key``, fresh or stale (until its hard expiry)."""
        memory = self._memory
        data = memory.lookup(namespace, key) if memory is not None else None
        if data is None:
            return None
        return self._usable_entry(data, namespace, key, type_, counters, None)

    async def _read_entry(
        self, namespace: str, key: str, type_: Any, counters: NamespaceCounters
    ) -> tuple[Envelope[Any], str] | None:
        """The first entry of ``key`` in the slower stores, fresh or stale, and the name of
        its store; promoted like a ``get`` hit (a fresh one replaces a stale memory copy)."""
        return await self._read_through(namespace, key, type_, counters, until_hard_expiry=True)

    def _usable_entry(
        self,
        data: bytes,
        namespace: str,
        key: str,
        type_: Any,
        counters: NamespaceCounters,
        layer: GuardedStore | None,
    ) -> Envelope[Any] | None:
        """As :meth:`_fresh`, but an entry past its TTL is returned until its hard expiry, and
        one of another type is a miss (the loader then replaces it)."""
        found = self._fresh(data, namespace, key, type_, counters, layer, until_hard_expiry=True)
        return None if isinstance(found, _WrongType) else found

    def _drop_stale_memory_copy(self, namespace: str, key: str, found: Envelope[Any]) -> None:
        """Before promoting a fresh ``found``: promotion never overwrites, so a stale copy in
        memory would go on shadowing it until its grace period ends."""
        memory = self._memory
        now = self._clock()
        if memory is None or (found.expires_at is not None and found.expires_at <= now):
            return
        data = memory.lookup(namespace, key)
        if data is None:
            return
        try:
            expires_at = self._codec.decode_header(data).expires_at
        except Exception:
            expires_at = now
        if expires_at is not None and expires_at <= now:
            memory.discard(namespace, key)

    def _lock_for(self, namespace: str, key: str, ttl: float) -> GuardedLock | None:
        """A lock on ``key`` from the first store that offers locks (Redis), behind that
        store's breaker; ``None`` when no store does."""
        for layer in self._layers:
            make_lock = getattr(layer.store, "lock", None)
            if make_lock is not None:
                return GuardedLock(make_lock(namespace, key, ttl=ttl), layer.attempt)
        return None

    def _adopt(self, task: asyncio.Task[Any]) -> None:
        """Keep a load or refresh task referenced until done; aclose cancels it."""
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # -- introspection --------------------------------------------------------------------
    def stats(self) -> CacheStats:
        """Counters per namespace and overall: hits per store, misses, errors, loaders ..."""
        snapshot = self._stats.snapshot(self._corrupt_in_stores())
        return dataclasses.replace(snapshot, coherence=self._coherence.counters())

    def _corrupt_in_stores(self) -> dict[str, int]:
        """Broken entries stores found and dropped themselves (the file store judges its own
        headers), per namespace; the coordinator counts the broken payloads it decodes."""
        found: dict[str, int] = {}
        for layer in self._layers:
            counts = getattr(layer.store, "corrupt_by_namespace", None)
            for namespace, count in (counts or {}).items():
                found[namespace] = found.get(namespace, 0) + count
        return found

    async def health_check(self) -> dict[str, Any]:
        """Which stores answer now, their breaker states, and why Redis is not in use."""
        config = self.config
        stores: dict[str, dict[str, Any]] = {}
        if self._memory is not None:
            stores["memory"] = {
                "state": "closed",
                "ok": True,
                "error": None,
                "entries": len(self._memory),
                "bytes": self._memory.size_bytes,
            }
        errors = self.stats().overall.errors

        async def ping(layer: GuardedStore) -> None:
            error: str | None = None
            try:
                with anyio.fail_after(max(config.redis_command_timeout * 4, 1.0)):
                    await layer.store.ping()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            # describe(): state, failures, last_error, breaker, and the outage journal if any
            stores[layer.name] = {"ok": error is None, "error": error, **layer.describe()}
            stores[layer.name]["errors"] = errors.get(layer.name, 0)  # as counted in stats()

        async with anyio.create_task_group() as tg:
            for layer in self._layers:
                tg.start_soon(ping, layer)
        redis = stores.get("redis")
        report: dict[str, Any] = {
            "redis_enabled": config.use_redis,
            "redis_available": bool(redis and redis["ok"]),
            "redis_url": redact_url(config.redis_url) if config.use_redis else None,
            "circuit_breaker_state": redis["state"] if redis else None,
            "fallback_enabled": any(name != "redis" for name in stores),
            "cache_dir": str(config.cache_dir) if "file" in stores else None,
            "redis_ping": (
                "disabled (USE_REDIS=false)"
                if redis is None
                else "OK"
                if redis["ok"]
                else f"FAILED: {redis['error']}"
            ),
            "stores": {name: stores[name] for name in self._store_order() if name in stores},
            "coherence": self._coherence.describe(),
        }
        return report

    def _store_order(self) -> list[str]:
        return [s.name for s in self._all_stores()]

    # -- small helpers --------------------------------------------------------------------
    def _check_namespace(self, namespace: str) -> None:
        if namespace not in self._known_namespaces:
            check_name(namespace, what="namespace")
            self._known_namespaces.add(namespace)

    def _spawn(self, work: Awaitable[Any]) -> None:
        """Run ``work`` in the background; kept referenced until done, cancelled by aclose."""
        if self._closed:
            if asyncio.iscoroutine(work):
                work.close()
            return
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
