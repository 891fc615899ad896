"""One loader per key: what ``get_or_set`` and ``@cached`` do when the value is not there.

- In one process, concurrent misses of a key share one load (:class:`.SingleFlight`); every
  caller gets its result or its exception.
- Across processes, a lock in Redis (:class:`.RedisLock`) elects one loader. The others poll the
  cache (5 to 50 ms apart) until the value appears, take the lock over when it vanishes
  without a value (the holder died or failed), and load themselves after ``lock_timeout``.
- Stale-while-revalidate: an entry past its TTL but inside its ``stale_ttl`` grace period is
  served at once while one background refresh runs. Early refresh (XFetch) renews hot keys
  shortly before they expire, with a probability that rises as expiry nears.
- Negative caching: with ``negative_ttl``, a loader's exception is remembered in this process
  and raised again, without running the loader, until it expires.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar

import anyio

from ..config import NamespacePolicy
from ..errors import ConfigError, InvalidTTLError
from ..freshness import EntryState, entry_state
from ..serialization import Envelope
from ..stats import NamespaceCounters
from .locks import GuardedLock
from .singleflight import SingleFlight

__all__ = [
    "DEFAULT_LOCK_TIMEOUT",
    "DEFAULT_LOCK_TTL",
    "DEFAULT_OPTIONS",
    "LoadCoordinator",
    "LoadOptions",
]

logger = logging.getLogger("toolweaver_async.cache")

K = TypeVar("K")
V = TypeVar("V")
FlightKey = tuple[str, str]

# How long a lock outlives a holder that died: the holder extends it every third of this while
# its loader runs, so a long loader keeps it and a crashed one frees it within this time.
DEFAULT_LOCK_TTL: Final = 10.0
# The longest a caller waits for another process's loader before running its own.
DEFAULT_LOCK_TIMEOUT: Final = 30.0
# Polling another process's load: every tenth of the time waited so far, within 5..50 ms, so
# a waiter sees the value at most ~10 % (>= 5 ms) after it lands, and at most 50 ms for long
# loads. Each poll is one read and one SET NX: at most 20 polls a second per waiting process.
_MIN_POLL: Final = 0.005
_MAX_POLL: Final = 0.05
# Per-key memory of this coordinator (loader durations, failures), oldest dropped first.
_MAX_REMEMBERED: Final = 4096


Loader = Callable[[], Awaitable[Any]]
_FRESH, _REFRESH_DUE = EntryState.FRESH, EntryState.REFRESH_DUE
_STALE_SERVABLE = EntryState.STALE_SERVABLE


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """The options of a ``get_or_set`` call (or of every call of a ``@cached`` function)."""

    ttl: float | None = None
    type: Any = None
    lock: bool | None = None
    lock_ttl: float = DEFAULT_LOCK_TTL
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT

    def __post_init__(self) -> None:
        ttl = self.ttl
        if ttl is not None and not (_is_number(ttl) and ttl > 0):
            raise InvalidTTLError(f"ttl must be a number of seconds > 0, got {ttl!r}")
        if not (_is_number(self.lock_ttl) and self.lock_ttl > 0):
            raise ConfigError(f"lock_ttl must be > 0 seconds, got {self.lock_ttl!r}")
        if not (_is_number(self.lock_timeout) and self.lock_timeout >= 0):
            raise ConfigError(f"lock_timeout must be >= 0 seconds, got {self.lock_timeout!r}")


DEFAULT_OPTIONS: Final = LoadOptions()


class _Failure:
    __slots__ = ("error", "traceback", "until")

    def __init__(self, error: Exception, until: float) -> None:
        self.error = error
        self.traceback: TracebackType | None = error.__traceback__
        self.until = until


Peek = Callable[[str, str, Any, NamespaceCounters], Envelope[Any] | None]
Read = Callable[[str, str, Any, NamespaceCounters], Awaitable[tuple[Envelope[Any], str] | None]]
# Caches a loaded value: does the part that cannot wait (validation, encoding, memory) at once
# and returns the writes to the slower stores still to be awaited, or None when they land in
# the background (write-behind, tracked by the write path: see ``Landing``).
Write = Callable[..., Awaitable[Any] | None]
# The write-behind of a loaded value of (namespace, key) still landing, if any.
Landing = Callable[[str, str], "asyncio.Task[Any] | None"]
LockFor = Callable[[str, str, float], GuardedLock | None]


class LoadCoordinator:
    """Serves ``get_or_set``: a usable entry at once, else one load per key.

    It works through the callables it is given: ``peek`` (the memory entry, fresh or stale),
    ``read`` (the first entry of the slower stores and its store's name), ``write`` (caches a
    loaded value), ``landing`` (that value's writes still on their way to the slower stores)
    and ``lock_for`` (a lock on a key, or ``None`` without Redis).
    """

    def __init__(
        self,
        *,
        peek: Peek,
        read: Read,
        write: Write,
        landing: Landing,
        lock_for: LockFor,
        policy: Callable[[str], NamespacePolicy],
        counters: Callable[[str], NamespaceCounters],
        clock: Callable[[], float],
        random: Callable[[], float],
        track: Callable[[asyncio.Task[Any]], None] | None = None,
    ) -> None:
        self._peek = peek
        self._read = read
        self._write = write
        self._landing = landing
        self._lock_for = lock_for
        self._policy = policy
        self._counters = counters
        self._clock = clock
        self._random = random
        self._track = track
        # called as on_load(namespace, seconds, failed) after every loader call (metrics/hooks.py)
        self.on_load: Callable[[str, float, bool], None] | None = None
        # a foreground load's outcome: the value, and whether it is a stale entry's
        self._loads: SingleFlight[FlightKey, tuple[Any, bool]] = SingleFlight(track)
        self._refreshes: SingleFlight[FlightKey, Any] = SingleFlight(track)
        self._durations: OrderedDict[FlightKey, float] = OrderedDict()
        self._failures: OrderedDict[FlightKey, _Failure] = OrderedDict()
        self._failing_refreshes: OrderedDict[FlightKey, None] = OrderedDict()

    async def get_or_set(
        self, namespace: str, key: str, loader: Loader, options: LoadOptions = DEFAULT_OPTIONS
    ) -> Any:
        """The usable cached value of ``key``, or the result of one load shared by every
        concurrent caller in this process (and, with a lock, in every process)."""
        counters = self._counters(namespace)
        envelope = self._peek(namespace, key, options.type, counters)
        if envelope is not None and self._serve(namespace, key, envelope, loader, options):
            counters.hits["memory"] += 1
            return envelope.payload
        work = functools.partial(self._load, namespace, key, loader, options, counters)
        (value, stale), started = await self._loads.join((namespace, key), work)
        if not started:
            counters.coalesced += 1
            counters.stale_served += stale
        return value

    def forget(self, namespace: str, key: str) -> None:
        """Drop what this process remembers of ``key``: a cached failure, a loader duration."""
        self._failures.pop((namespace, key), None)
        self._durations.pop((namespace, key), None)

    def forget_namespace(self, namespace: str | None) -> None:
        """``forget`` every key of ``namespace`` (of every namespace when ``None``)."""
        for table in (self._failures, self._durations):
            for flight in [f for f in table if namespace is None or f[0] == namespace]:
                del table[flight]

    # -- serving what is there -----------------------------------------------------------------

    def _serve(
        self,
        namespace: str,
        key: str,
        envelope: Envelope[Any],
        loader: Loader,
        options: LoadOptions,
    ) -> bool:
        """Whether ``envelope`` may be returned now; starts a refresh when it is stale or,
        by XFetch's draw, close enough to expiry."""
        window = 0.0 if envelope.expires_at is None else self._refresh_window(namespace, key)
        state = entry_state(envelope, self._clock(), window)
        if state is _FRESH:
            return True
        if state is _REFRESH_DUE:
            self._refresh(namespace, key, loader, options)
            return True
        if state is _STALE_SERVABLE:
            self._counters(namespace).stale_served += 1
            self._refresh(namespace, key, loader, options)
            return True
        return False

    def _fresh(self, envelope: Envelope[Any]) -> bool:
        return entry_state(envelope, self._clock()) is _FRESH

    def _refresh_window(self, namespace: str, key: str) -> float:
        """XFetch (Vattani et al., 2015): refresh when ``now - delta * beta * ln(u) >= expiry``
        for ``u`` uniform in (0, 1], ``delta`` the time a load of this key takes; the window
        is ``-delta * beta * ln(u)`` seconds before expiry."""
        beta = self._policy(namespace).early_refresh_beta
        if beta <= 0:
            return 0.0
        delta = self._durations.get((namespace, key))
        if delta is None:  # loaded by another process: this namespace's mean loader time
            counters = self._counters(namespace)
            calls = counters.loader_calls
            delta = counters.loader_seconds / calls if calls else 0.0
        if delta <= 0:
            return 0.0
        return -(delta * beta * math.log(1.0 - self._random()))

    def _refresh(self, namespace: str, key: str, loader: Loader, options: LoadOptions) -> None:
        """Start the one background refresh of ``key`` unless it runs already or has just
        failed with a remembered (negative-cached) error."""
        flight = (namespace, key)
        if self._remembered_failure(flight) is not None:
            return
        work = functools.partial(self._refresh_in_background, namespace, key, loader, options)
        self._refreshes.start_detached(flight, work)

    async def _refresh_in_background(
        self, namespace: str, key: str, loader: Loader, options: LoadOptions
    ) -> Any:
        """A refresh nobody awaits: its failure is counted and logged once per failing key,
        and raised only to callers that joined it for want of any usable entry."""
        flight = (namespace, key)
        try:
            counters = self._counters(namespace)
            value = await self._elect_and_load(namespace, key, loader, options, counters)
        except Exception as exc:
            if flight not in self._failing_refreshes:
                _remember(self._failing_refreshes, flight, None)
                logger.warning(
                    "background refresh of %r in namespace %r failed (%s: %s); serving the "
                    "stale value meanwhile",
                    key,
                    namespace,
                    type(exc).__name__,
                    exc,
                )
            raise
        if flight in self._failing_refreshes:
            del self._failing_refreshes[flight]
            logger.info("background refresh of %r in namespace %r works again", key, namespace)
        return value

    # -- loading ---------------------------------------------------------------------------

    async def _load(
        self,
        namespace: str,
        key: str,
        loader: Loader,
        options: LoadOptions,
        counters: NamespaceCounters,
    ) -> tuple[Any, bool]:
        """The work of one foreground flight: the slower stores, then one loader. Returns the
        value and whether it is a stale entry's (served while a refresh runs)."""
        found = await self._read(namespace, key, options.type, counters)
        if found is not None:
            envelope, store = found
            if self._serve(namespace, key, envelope, loader, options):
                counters.hits[store] += 1
                return envelope.payload, not self._fresh(envelope)
        counters.misses += 1
        failure = self._remembered_failure((namespace, key))
        if failure is not None:
            raise failure.error.with_traceback(failure.traceback)
        if self._refreshes.running((namespace, key)):
            # The stale entry expired while its refresh runs: wait for that one.
            value, _ = await self._refreshes.join((namespace, key), _never_started)
            return value, False
        return await self._elect_and_load(namespace, key, loader, options, counters), False

    async def _elect_and_load(
        self,
        namespace: str,
        key: str,
        loader: Loader,
        options: LoadOptions,
        counters: NamespaceCounters,
    ) -> Any:
        """Run the loader here, or wait for the process that holds the key's lock to do so."""
        lock = None if options.lock is False else self._lock_for(namespace, key, options.lock_ttl)
        if lock is None:
            return await self._run_loader(namespace, key, loader, options, counters)
        waiting_since = time.monotonic()
        deadline = waiting_since + options.lock_timeout
        while True:
            acquired = await lock.acquire()
            if acquired is None:  # Redis unreachable: coordinate within this process only
                return await self._run_loader(namespace, key, loader, options, counters)
            if acquired:
                return await self._load_holding(lock, namespace, key, loader, options, counters)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                logger.warning(
                    "waited %.1f s for another process to load %r in namespace %r; loading it here",
                    options.lock_timeout,
                    key,
                    namespace,
                )
                return await self._run_loader(namespace, key, loader, options, counters)
            waited = time.monotonic() - waiting_since
            await asyncio.sleep(min(max(_MIN_POLL, waited / 10), _MAX_POLL, remaining))
            found = await self._read(namespace, key, options.type, counters)
            if found is not None and self._fresh(found[0]):
                counters.hits[found[1]] += 1
                return found[0].payload

    async def _load_holding(
        self,
        lock: GuardedLock,
        namespace: str,
        key: str,
        loader: Loader,
        options: LoadOptions,
        counters: NamespaceCounters,
    ) -> Any:
        loop = asyncio.get_running_loop()
        keeper = loop.create_task(_keep_extending(lock, key))
        try:
            # Another process may have stored the value and released the lock between our
            # last read and taking the lock: look once more before paying for the loader.
            found = await self._read(namespace, key, options.type, counters)
            if found is not None and self._fresh(found[0]):
                counters.hits[found[1]] += 1
                value = found[0].payload
            else:
                value = await self._run_loader(namespace, key, loader, options, counters)
        except asyncio.CancelledError:
            with anyio.CancelScope(shield=True):
                await _let_go(lock, keeper)
            raise
        except BaseException:
            self._in_background(_let_go(lock, keeper))
            raise
        # Callers here need not wait for the release; other processes poll for the value, not
        # for the lock, which is let go only once the value has reached Redis.
        self._in_background(_let_go(lock, keeper, self._landing(namespace, key)))
        return value

    def _in_background(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(work)
        if self._track is not None:
            self._track(task)

    async def _run_loader(
        self,
        namespace: str,
        key: str,
        loader: Loader,
        options: LoadOptions,
        counters: NamespaceCounters,
    ) -> Any:
        """Call the loader once, count it, and cache what it returns (or remember its error
        when the namespace caches failures)."""
        flight = (namespace, key)
        counters.loader_calls += 1
        started = time.monotonic()
        failed = True
        try:
            value = await loader()
            failed = False
        except Exception as exc:
            counters.loader_errors += 1
            self._remember_failure(flight, exc)
            raise
        finally:
            elapsed = time.monotonic() - started
            counters.loader_seconds += elapsed
            if self.on_load is not None:  # listeners (metrics): loads only, never hits
                self.on_load(namespace, elapsed, failed)
        _remember(self._durations, flight, elapsed)
        # With a memory layer the value is readable in this process as soon as memory has it:
        # the callers sharing this load are released then, and the writes to Redis and files
        # land in the background (a Redis lock is held until they have, see _let_go).
        remote_writes = self._write(key, value, namespace=namespace, ttl=options.ttl)
        self._failures.pop(flight, None)
        if remote_writes is not None:
            await remote_writes
        return value

    # -- negative caching ------------------------------------------------------------------

    def _remember_failure(self, flight: FlightKey, error: Exception) -> None:
        negative_ttl = self._policy(flight[0]).negative_ttl
        if negative_ttl is not None:
            _remember(self._failures, flight, _Failure(error, self._clock() + negative_ttl))

    def _remembered_failure(self, flight: FlightKey) -> _Failure | None:
        failure = self._failures.get(flight)
        if failure is not None and failure.until <= self._clock():
            del self._failures[flight]
            return None
        return failure


async def _keep_extending(lock: GuardedLock, key: str) -> None:
    """Extend ``lock`` every third of its lifetime while the loader runs."""
    while True:
        await asyncio.sleep(lock.ttl / 3)
        if await lock.extend() is False:
            logger.warning(
                "lost the load lock of %r (it expired or was removed); another process may "
                "load it too",
                key,
            )
            return


async def _let_go(
    lock: GuardedLock, keeper: asyncio.Task[None], landing: asyncio.Task[Any] | None = None
) -> None:
    if landing is not None:
        await asyncio.gather(landing, return_exceptions=True)
    keeper.cancel()
    await asyncio.gather(keeper, return_exceptions=True)
    await lock.release()


async def _never_started() -> Any:
    raise AssertionError("joined a refresh that was not running")


def _remember(table: OrderedDict[K, V], key: K, value: V) -> None:
    table[key] = value
    table.move_to_end(key)
    if len(table) > _MAX_REMEMBERED:
        table.popitem(last=False)
