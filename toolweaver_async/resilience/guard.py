"""A store behind its circuit breaker, with its outage journal: what callers of a store use.

The calls themselves go through :class:`~.guarded_calls.GuardedCalls` (the breaker, the markers
:data:`SKIPPED`, :data:`FAILED` and :data:`BUG`: the coordinator never sees a store exception).

A guarded store may carry an :class:`~toolweaver_async.resilience.journal.OutageJournal` (Redis
does): writes it could not deliver are journaled, reads of journaled keys skip it, and
:class:`~toolweaver_async.resilience.replay.JournalReplay` replays the journal in order as soon
as the breaker lets a call through, the replay itself serving as the half-open probe when no
caller does. Once the store is back, a new write of a journaled key goes straight to it,
overtaking the journaled operation (see ``journal/handoff.py``), so the journal drains even
while agents keep rewriting the same keys.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from ..errors import StoreError
from ..stores.base import HousekeepingStore, Store, StoreItem
from .breaker import BreakerState, CircuitBreaker
from .guarded_calls import (
    BUG,
    FAILED,
    SKIPPED,
    SKIPPED_NOW,
    GuardedCalls,
    Unreachable,
    answered_at_once,
)
from .journal import JournalOp, JournalSet, OutageJournal
from .recovery_watch import RecoveryWatch
from .replay import JournalReplay

__all__ = ["BUG", "FAILED", "SKIPPED", "GuardedStore", "Unreachable", "answered_at_once"]

T = TypeVar("T")

_CLOSED = BreakerState.CLOSED


class _Route(enum.Enum):
    """Where a write of a journaled key goes (see ``GuardedStore._route``)."""

    JOURNAL = "journal"
    SEND = "send"
    WAIT = "wait"


class GuardedStore(GuardedCalls):
    """Wraps one store with its breaker (see :class:`GuardedCalls`) and optionally an outage
    journal.

    ``watch_interval``, when set, pings the store that often while the breaker is open and
    ends the open period at the first answer (see ``recovery_watch.py``). ``deadline`` bounds
    every call but ``clear`` (a scan that may legitimately take longer).
    """

    __slots__ = ("_closed", "_housekeeping", "_watch", "journal", "replay")

    def __init__(
        self,
        store: Store,
        breaker: CircuitBreaker,
        *,
        journal: OutageJournal | None = None,
        deadline: float | None = None,
        watch_interval: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(store, breaker, deadline=deadline, clock=clock)
        self.journal = journal
        self._housekeeping = store if isinstance(store, HousekeepingStore) else None
        self._closed = False
        self.replay: JournalReplay | None = None
        if journal is not None:
            self.replay = JournalReplay(
                journal,
                store,
                breaker,
                self._call,
                deadline=deadline,
                is_unreachable=lambda outcome: isinstance(outcome, Unreachable),
                skipped=SKIPPED,
            )
        self._watch = None
        if watch_interval is not None:
            self._watch = RecoveryWatch(
                breaker, store.ping, interval=watch_interval, name=store.name
            )

    # -- the one seam ----------------------------------------------------------------------

    # -- reads -----------------------------------------------------------------------------

    def get(self, namespace: str, key: str) -> Awaitable[bytes | Unreachable | None]:
        journal = self.journal
        if journal is not None and journal.covers(namespace, key):
            return SKIPPED_NOW  # the store may hold an older value than the journaled write
        if self.breaker.state is _CLOSED:  # the hot path: nothing to refuse (see attempt)
            return self._call(self.store.get, (namespace, key), self.deadline)
        return self.attempt(self.store.get, namespace, key)

    def admit_get(self, namespace: str, key: str) -> int | None:
        """:meth:`admit` for a ``get`` of ``key`` its caller awaits itself (``direct`` stores):
        ``None`` also when the journal holds a newer write of ``key``."""
        journal = self.journal
        if journal is not None and journal.covers(namespace, key):
            return None
        return self.admit()

    def get_many(
        self, namespace: str, keys: Sequence[str]
    ) -> Awaitable[list[bytes | None] | Unreachable]:
        journal = self.journal
        if journal is not None and journal.touches(namespace):
            return self._get_many_uncovered(journal, namespace, keys)
        return self.attempt(self.store.get_many, namespace, keys)

    async def _get_many_uncovered(
        self, journal: OutageJournal, namespace: str, keys: Sequence[str]
    ) -> list[bytes | None] | Unreachable:
        """``get_many`` of the keys the journal does not hold back; ``None`` for the others."""
        asked = [key for key in keys if not journal.covers(namespace, key)]
        if not asked:
            return SKIPPED
        answers = await self.attempt(self.store.get_many, namespace, asked)
        if isinstance(answers, Unreachable):
            return answers
        found = dict(zip(asked, answers, strict=True))
        return [found.get(key) for key in keys]

    # -- writes ----------------------------------------------------------------------------

    def set(
        self, namespace: str, key: str, data: bytes, ttl: float | None
    ) -> Awaitable[Unreachable | None]:
        journal = self.journal
        if journal is None:
            return self.attempt(self.store.set, namespace, key, data, ttl)
        return self._set(journal, namespace, key, data, ttl, waited=False)

    def _set(
        self,
        journal: OutageJournal,
        namespace: str,
        key: str,
        data: bytes,
        ttl: float | None,
        *,
        waited: bool,
    ) -> Awaitable[Unreachable | None]:
        if self._refusing() or journal.covers(namespace, key):
            route = self._route(journal, namespace, key, waited=waited)
            if route is _Route.WAIT:
                return self._after_replay_batch(
                    lambda: self._set(journal, namespace, key, data, ttl, waited=True),
                    lambda: journal.record_set(namespace, key, data, ttl),
                )
            if route is _Route.JOURNAL:
                # Journaled at once, no task: during an outage every write takes this path
                # (~40 us less per cache.set, issue 3).
                journal.record_set(namespace, key, data, ttl)
                return SKIPPED_NOW
        return self._journaled(
            False,
            lambda: (journal.begin_set(namespace, key, data, ttl),),
            self.store.set,
            (namespace, key, data, ttl),
            self.deadline,
        )

    def add(
        self, namespace: str, key: str, data: bytes, ttl: float | None
    ) -> Awaitable[bool | Unreachable]:
        journal = self.journal
        if journal is not None and journal.covers(namespace, key):
            return SKIPPED_NOW  # promotion must not race the replay of a newer write
        return self.attempt(self.store.add, namespace, key, data, ttl)

    def set_many(self, namespace: str, items: Sequence[StoreItem]) -> Awaitable[Unreachable | None]:
        journal = self.journal
        if journal is None:
            return self.attempt(self.store.set_many, namespace, items)
        return self._set_many_journaled(journal, namespace, items)

    async def _set_many_journaled(
        self, journal: OutageJournal, namespace: str, items: Sequence[StoreItem]
    ) -> Unreachable | None:
        replay = self.replay
        if (
            journal
            and replay is not None
            and not self._refusing()
            and any(journal.on_wire(namespace, item[0]) for item in items)
        ):
            try:
                await replay.batch_ended()  # the older values must land first (see _route)
            except asyncio.CancelledError:
                for item in items:
                    journal.record_set(namespace, *item)  # made all the same
                raise
        refusing = self._refusing()
        direct: list[StoreItem] = []
        for item in items:
            if refusing or (
                journal.covers(namespace, item[0])
                and self._route(journal, namespace, item[0], waited=True) is not _Route.SEND
            ):
                journal.record_set(namespace, *item)
            else:
                direct.append(item)
        if not direct:
            return SKIPPED
        return await self._journaled(
            False,
            lambda: [journal.begin_set(namespace, *item) for item in direct],
            self.store.set_many,
            (namespace, direct),
            self.deadline,
            partial=True,
        )

    def delete(self, namespace: str, key: str) -> Awaitable[bool | Unreachable]:
        journal = self.journal
        if journal is None:
            return self.attempt(self.store.delete, namespace, key)
        return self._delete(journal, namespace, key, waited=False)

    def _delete(
        self, journal: OutageJournal, namespace: str, key: str, *, waited: bool
    ) -> Awaitable[bool | Unreachable]:
        if self._refusing() or journal.covers(namespace, key):
            route = self._route(journal, namespace, key, waited=waited)
            if route is _Route.WAIT:
                return self._after_replay_batch(
                    lambda: self._delete(journal, namespace, key, waited=True),
                    lambda: journal.record_delete(namespace, key),
                )
            if route is _Route.JOURNAL:
                journal.record_delete(namespace, key)
                return SKIPPED_NOW
        return self._journaled(
            False,
            lambda: (journal.begin_delete(namespace, key),),
            self.store.delete,
            (namespace, key),
            self.deadline,
        )

    def _route(self, journal: OutageJournal, namespace: str, key: str, *, waited: bool) -> _Route:
        """Where a write of a key goes while the guard refuses calls or the journal holds the
        key: the journal, or straight to the store, overtaking the journaled operation once
        the store is back (see ``journal/handoff.py``), or after the replay batch that is
        carrying the key's older value now (once: if it is on the wire again, the journal)."""
        if self.breaker.state is not _CLOSED:
            return _Route.JOURNAL
        if journal.on_wire(namespace, key):
            return _Route.JOURNAL if waited or self.replay is None else _Route.WAIT
        return _Route.SEND if journal.may_overtake(namespace, key) else _Route.JOURNAL

    async def _after_replay_batch(
        self, write: Callable[[], Awaitable[T]], record: Callable[[], None]
    ) -> T:
        """``write()`` once the replay batch on the wire has ended (a few milliseconds). A
        caller cancelled meanwhile has made its write all the same: ``record()`` journals it
        (else the journal's older value would be replayed after the newer one went elsewhere)."""
        assert self.replay is not None
        try:
            await self.replay.batch_ended()
        except asyncio.CancelledError:
            record()
            raise
        return await write()

    def invalidate(self, namespace: str) -> Awaitable[Unreachable | None]:
        journal = self.journal
        if journal is None:
            return self.attempt(self.store.invalidate, namespace)
        # Behind journaled operations of this namespace: a replayed write landing after the
        # invalidation could otherwise move an older value into the new generation.
        return self._journaled(
            journal.touches(namespace) or self._refusing(),
            lambda: (journal.begin_invalidate(namespace),),
            self.store.invalidate,
            (namespace,),
            self.deadline,
        )

    def clear(self) -> Awaitable[Unreachable | None]:
        journal = self.journal
        if journal is None:
            return self._call(self.store.clear, (), None)
        return self._journaled(
            bool(journal) or self._refusing(),
            lambda: (journal.begin_clear(),),
            self.store.clear,
            (),
            None,
        )

    async def _journaled(
        self,
        queue: bool,
        begin: Callable[[], Sequence[JournalOp]],
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        deadline: float | None,
        *,
        partial: bool = False,
    ) -> T | Unreachable:
        """Send a write, or journal it: when ``queue`` (it must stay behind journaled ones, so
        only the replay may deliver it, or the guard refuses calls now), when the call fails,
        and when the caller is cancelled mid-call (it may or may not have landed; replaying it
        again is harmless). ``begin`` numbers the write as the caller makes it, so the journal
        keeps callers' order whatever order their failures are noticed in. Of a ``partial``
        write (several keys) that failed, the keys the store says it wrote anyway landed."""
        journal = self.journal
        assert journal is not None
        ops = begin()
        outcome: Any = FAILED  # cancelled mid-call: it may still land
        written: list[frozenset[str]] = []
        try:
            if queue:
                outcome = SKIPPED
                return SKIPPED
            outcome = await self._call(
                _noting_written(fn, written) if partial else fn, args, deadline
            )
            return outcome  # type: ignore[no-any-return]
        finally:
            failed = isinstance(outcome, Unreachable)
            sent = outcome is not SKIPPED  # skipped: refused without I/O, nothing can land
            landed = written[0] if written else frozenset()
            for op in ops:
                if landed and isinstance(op, JournalSet) and op.key in landed:
                    journal.settle(op, failed=False)
                else:
                    journal.settle(op, failed=failed, sent=sent)

    # -- the replay ------------------------------------------------------------------------

    async def open(self) -> None:
        """Load the journal a previous run left on disk (its replay starts by itself)."""
        if self.journal is not None:
            await self.journal.open()

    async def aclose(self) -> None:
        """Stop replaying and watching, write the journal to disk. The store stays open."""
        self._closed = True
        if self._watch is not None:
            await self._watch.aclose()
        if self.replay is not None:
            await self.replay.aclose()
        if self.journal is not None:
            await self.journal.aclose()

    def _probing(self) -> bool:
        """While a replay is pending, it alone probes a half-open store (see ``replay.py``)."""
        replay = self.replay
        return replay is not None and replay.probing()

    # -- health ----------------------------------------------------------------------------

    def describe(self) -> dict[str, Any]:
        """Plain data for ``health_check``: breaker, failures, journal."""
        info: dict[str, Any] = {
            "state": self.breaker.state.value,
            "failures": self.failures,
            "bugs": self.bugs,
            "last_error": self.last_error,
            "breaker": self.breaker.snapshot(),
        }
        # Counters a store that removes entries by itself keeps (the file store's broken,
        # expired and evicted entries, dropped by the store and never seen as corrupt here).
        store = self._housekeeping
        if store is not None:
            info["corrupt_removed"] = store.corrupt_removed
            info["expired_removed"] = store.expired_removed
            info["evicted"] = store.evicted
        if self.journal is not None:
            info["journal"] = self.journal.describe()
        return info


def _noting_written(
    fn: Callable[..., Awaitable[T]], written: list[frozenset[str]]
) -> Callable[..., Awaitable[T]]:
    """``fn``, noting in ``written`` the keys a failed multi-key write wrote anyway."""

    async def call(*args: Any) -> T:
        try:
            return await fn(*args)
        except StoreError as exc:
            if exc.written:
                written.append(exc.written)
            raise

    return call
