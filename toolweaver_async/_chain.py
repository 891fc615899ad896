"""From ``CacheConfig`` to a chain: the stores, their breakers, guards and outage journals.

This is the one module that knows which store is which. What a store can do beyond the
:class:`~toolweaver_async.stores.base.Store` protocol it declares with the capability protocols
of :mod:`toolweaver_async.stores.base`; they are checked here, once, and the answers kept in a
:class:`Chain`, so the read and write paths never ask a store what it is.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from .config import CacheConfig, redact_url
from .loading.locks import GuardedLock
from .resilience.breaker import CircuitBreaker
from .resilience.guard import FAILED, GuardedStore
from .resilience.journal import OutageJournal
from .resilience.missed_sweep import MissedSweep
from .resilience.missed_writes import MissedWrites
from .resilience.missed_writes_log import MissedWritesLog
from .stores.base import (
    CorruptionCountingStore,
    LockingStore,
    RemoteStore,
    SelfBoundedStore,
    Store,
    TimedStore,
    TopologyReportingStore,
)
from .stores.file import FileStore
from .stores.file_behind import QueuedWritesStore, WriteBehindFileStore, queue_depth
from .stores.memory import MemoryStore
from .stores.redis.store import RedisStore

__all__ = ["Chain", "build_chain", "build_stores"]

logger = logging.getLogger("toolweaver_async.cache")

# The clock of breakers and of the guards timing calls for them: intervals, never persisted.
_INTERVALS = time.monotonic


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
            file_store = WriteBehindFileStore if config.file_write_behind else FileStore
            built.append(file_store.from_config(config, clock=clock))
    return built


class Chain:
    """The built chain: the in-process L1 (if any), the slower stores behind their guards in
    order, and what the capabilities found when it was built."""

    __slots__ = ("_counting", "_locking", "layers", "memory", "missed", "sweeps")

    def __init__(
        self,
        memory: MemoryStore | None,
        layers: list[GuardedStore],
    ) -> None:
        self.memory = memory
        self.layers = layers
        # Per layer: what it missed (see resilience/missed_writes.py); None for a layer whose
        # outage journal already keeps it from serving what it missed.
        self.missed: list[MissedWrites | None] = [
            None if g.journal is not None else MissedWrites() for g in layers
        ]
        # By layer name: the sweeps that withdraw, for every process, what a layer on disk
        # missed once it answers again (see resilience/missed_sweep.py).
        self.sweeps: dict[str, MissedSweep] = {}
        # The first store that offers locks (Redis) elects one loader per key across processes.
        self._locking: tuple[LockingStore, GuardedStore] | None = next(
            ((g.store, g) for g in layers if isinstance(g.store, LockingStore)), None
        )
        self._counting = [g.store for g in layers if isinstance(g.store, CorruptionCountingStore)]

    @property
    def stores(self) -> list[Store]:
        """Every store, in chain order."""
        return ([self.memory] if self.memory is not None else []) + [g.store for g in self.layers]

    async def open(self) -> None:
        """Load the outage journals a previous run left (their replay starts by itself), then
        ping every slower store once; one that does not answer starts with its breaker open,
        so the first agent steps do not each wait on a dead server."""

        # What earlier runs' file stores missed, before anything is read from them.
        for missed in self.missed:
            if missed is not None:
                await missed.load()

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
            for layer in self.layers:
                tg.start_soon(probe, layer)
        # What earlier runs missed is still on disk for every other process: withdrawn in
        # the background now (skipped while a breaker is open: its closing sweeps).
        for sweep in self.sweeps.values():
            sweep.start()

    async def aclose(self) -> None:
        """Stop sweeps, journal replays and recovery watches, write journals to disk, then
        release every store; a failure to close one is logged and does not stop the others."""
        for sweep in self.sweeps.values():
            await sweep.aclose()
        for missed in self.missed:
            if missed is not None and missed.log is not None:
                await missed.log.aclose(missed)
        for layer in self.layers:
            try:
                await layer.aclose()
            except Exception as exc:
                logger.warning("closing %s store's guard failed: %s", layer.name, exc)
        for store in self.stores:
            try:
                await store.aclose()
            except Exception as exc:
                logger.warning("closing %s store failed: %s", store.name, exc)

    def lock_for(self, namespace: str, key: str, ttl: float) -> GuardedLock | None:
        """A lock on ``key`` from the first store that offers locks, behind that store's
        breaker; ``None`` when no store does."""
        if self._locking is None:
            return None
        store, layer = self._locking
        return GuardedLock(store.lock(namespace, key, ttl=ttl), layer.attempt)

    def journal_sizes(self) -> dict[str, int]:
        """Writes waiting in each store's outage journal, by store name."""
        return {g.name: len(g.journal) for g in self.layers if g.journal is not None}

    def bugs(self) -> dict[str, int]:
        """Exceptions each slower store raised that were not outages (see ``guard.py``)."""
        return {layer.name: layer.bugs for layer in self.layers}

    def write_queue(self) -> dict[str, int]:
        """The file store's write-behind queue: depth now and totals (empty without one)."""
        return queue_depth(self.stores)

    def corrupt_in_stores(self) -> dict[str, int]:
        """Broken entries stores found and dropped themselves (the file store judges its own
        headers), per namespace; the read path counts the broken payloads it decodes."""
        found: dict[str, int] = {}
        for store in self._counting:
            for namespace, count in store.corrupt_by_namespace.items():
                found[namespace] = found.get(namespace, 0) + count
        return found

    async def health(self, config: CacheConfig, errors: Mapping[str, int]) -> dict[str, Any]:
        """``health_check()``: ping every slower store now; their breaker states, outage
        journals and ``errors`` (as counted in ``stats()``), and why Redis is not in use."""
        stores: dict[str, dict[str, Any]] = {}
        if self.memory is not None:
            stores["memory"] = {
                "state": "closed",
                "ok": True,
                "error": None,
                "entries": len(self.memory),
                "bytes": self.memory.size_bytes,
            }

        async def ping(layer: GuardedStore) -> None:
            error: str | None = None
            try:
                with anyio.fail_after(max(config.redis_command_timeout * 4, 1.0)):
                    await layer.store.ping()
            except Exception as exc:
                error = f"{type(exc).__name__}: {exc}"
            # describe(): state, failures, last_error, breaker, and the outage journal if any
            stores[layer.name] = {"ok": error is None, "error": error, **layer.describe()}
            stores[layer.name]["errors"] = errors.get(layer.name, 0)
            if isinstance(layer.store, QueuedWritesStore):
                stores[layer.name]["write_queue"] = layer.store.queued_writes
            sweep = self.sweeps.get(layer.name)
            if sweep is not None:  # marks standing, and what the sweeps withdrew or kept
                stores[layer.name].update(sweep.describe())
            if isinstance(layer.store, TopologyReportingStore):
                with anyio.move_on_after(max(config.redis_command_timeout * 4, 1.0)):
                    stores[layer.name]["topology"] = await layer.store.describe()

        async with anyio.create_task_group() as tg:
            for layer in self.layers:
                tg.start_soon(ping, layer)
        redis = stores.get("redis")
        return {
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
            "stores": {s.name: stores[s.name] for s in self.stores if s.name in stores},
        }


def build_chain(
    config: CacheConfig, stores: Sequence[Store] | None, clock: Callable[[], float]
) -> Chain:
    """The chain of ``stores`` (by default the stores ``config`` enables), each slower store
    behind its breaker. ``clock`` is the wall clock entries are written with."""
    chain = list(stores) if stores is not None else build_stores(config, clock)
    # The first store, when it is a MemoryStore, is the lock-free synchronous L1: the read
    # path is inlined against its entries (their header and shared-object memos), so this is
    # the concrete class, not a capability.
    first = chain[0] if chain else None
    memory = first if isinstance(first, MemoryStore) else None
    if memory is not None:
        chain.pop(0)
    built = Chain(memory, [guard(store, config, clock) for store in chain])
    for layer, missed in zip(built.layers, built.missed, strict=True):
        # A file store outlives the process: so must the record of what it missed.
        if missed is not None and isinstance(layer.store, FileStore):
            folder = layer.store.root / "~journal" / layer.store.key_prefix
            missed.attach(MissedWritesLog(folder, timeout=config.file_timeout))
            # ... and other processes must not read what it missed: swept when it answers.
            sweep = built.sweeps[layer.name] = MissedSweep(missed, layer, layer.store)
            layer.breaker.add_listener(sweep.on_breaker)
    return built


def guard(store: Store, config: CacheConfig, clock: Callable[[], float]) -> GuardedStore:
    """``store`` behind its breaker. A remote store (Redis), shared by processes and prone to
    outages, also gets an outage journal (on disk beside the file store when the chain has one)
    so that it never serves a value older than one written while it was down, and a deadline
    per call unless the store bounds its calls itself. Every guarded store is pinged while its
    breaker is open (``BreakerSettings.health_check_interval``)."""
    watch = config.breaker.health_check_interval
    breaker = breaker_for(store, config)
    if not isinstance(store, RemoteStore):
        return GuardedStore(store, breaker, watch_interval=watch, clock=_INTERVALS)
    folder = None
    if "file" in config.enabled_stores:
        # Beside the prefix folder, not in it: FileStore.clear() empties that one. '~' cannot
        # appear in a key prefix, so no cache's folder can be this one.
        folder = config.cache_dir / "~journal" / config.key_prefix
    journal = OutageJournal(
        max_entries=config.journal_max_entries,
        max_bytes=config.journal_max_bytes,
        clock=clock,
        folder=folder,
        # The server (and db) it is for: a journal never replays onto any other.
        server=store.identity,
        # It lives beside the file store: its disk steps get the file store's time budget.
        timeout=config.file_timeout,
    )
    # A store that bounds every call itself (RedisStore: one shared watchdog timer, queue wait
    # included) needs no second bound here: asyncio.timeout costs ~3.4 us a call on uvloop and
    # cut Redis-only gets at 100 coroutines from ~67k/s to ~37k/s.
    deadline = None
    if not isinstance(store, SelfBoundedStore):
        deadline = _call_timeout(store, default=config.redis_command_timeout)
    return GuardedStore(
        store,
        breaker,
        journal=journal,
        deadline=deadline,
        watch_interval=watch,
        clock=_INTERVALS,
    )


def breaker_for(store: Store, config: CacheConfig) -> CircuitBreaker:
    """A breaker for ``store`` from the shared settings. A call slower than the store's time
    budget counts as a failure, unless the store bounds its calls itself: it fails what its
    server or disk did not answer in time, and the rest of a slow success is time spent in
    this process (200 agents queued on one loop), not evidence against the store. Intervals
    are measured on the monotonic clock."""
    slow = None if isinstance(store, SelfBoundedStore) else _call_timeout(store, default=None)
    return CircuitBreaker.from_settings(
        config.breaker, name=store.name, slow_call_timeout=slow, clock=_INTERVALS
    )


def _call_timeout(store: Store, *, default: float | None) -> float | None:
    return store.call_timeout if isinstance(store, TimedStore) else default
