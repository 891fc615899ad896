"""Replaying an outage journal: one background task delivers it in order once the store is back.

The task sends a batch per call through the store's breaker (the guard's own call path), so the
replay itself is the half-open probe when no caller comes; while the breaker is open it sleeps
until the next probe is due, or until the breaker changes state. A batch the store took only in
part (a cluster with one primary down) keeps only what failed: the rest is forgotten at once,
and what the down part refused is parked (later batches go past it; it is retried after a
pause once nothing else is left), so a dead node's operations at the head, however many, never
hold back the other nodes' keys.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from ..errors import StoreError
from ..stores.base import Store, StoreItem
from .breaker import BreakerState, CircuitBreaker
from .journal import (
    JournalClear,
    JournalDelete,
    JournalInvalidate,
    JournalOp,
    JournalSet,
    OutageJournal,
)

__all__ = ["JournalReplay"]

logger = logging.getLogger("toolweaver_async.cache")

# How long the replayer waits before trying again after a refused or failed batch while the
# breaker is not open (when it is open, the replayer sleeps until the breaker's next probe).
_REPLAY_RETRY_SECONDS: Final = 0.05

# ``call(fn, args, deadline)``: run ``fn(*args)`` through the breaker; an ``Unreachable``
# marker when it was refused or failed (the guard's seam).
GuardedCall = Callable[
    [Callable[..., Awaitable[Any]], tuple[Any, ...], float | None], Awaitable[Any]
]


class JournalReplay:
    """Delivers ``journal`` to ``store`` whenever it holds something (one task at most)."""

    __slots__ = (
        "_breaker",
        "_call",
        "_closed",
        "_deadline",
        "_idle",
        "_in_flight",
        "_is_unreachable",
        "_journal",
        "_skipped",
        "_store",
        "_task",
        "_wake",
    )

    def __init__(
        self,
        journal: OutageJournal,
        store: Store,
        breaker: CircuitBreaker,
        call: GuardedCall,
        *,
        deadline: float | None,
        is_unreachable: Callable[[Any], bool],
        skipped: object,
    ) -> None:
        self._journal = journal
        self._store = store
        self._breaker = breaker
        self._call = call
        self._deadline = deadline
        self._is_unreachable = is_unreachable
        self._skipped = skipped  # the outcome of a call refused without I/O
        self._task: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._in_flight: asyncio.Event | None = None  # set when the batch on the wire ended
        self._idle = False  # waiting for writes that overtook the journal to settle
        self._closed = False
        journal.on_pending = self.start
        journal.on_overtaken = self._overtaken
        breaker.add_listener(self._breaker_changed)

    @property
    def running(self) -> bool:
        """Whether a replay task is under way."""
        return self._task is not None and not self._task.done()

    def probing(self) -> bool:
        """While a replay is pending, the replay alone probes a half-open store: a caller
        never waits out a probe on a store that may still be down (it reads the next store)."""
        return self.running and self._breaker.state is BreakerState.HALF_OPEN

    def start(self) -> None:
        if self._closed or self.running:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # recorded outside a loop: the next open() or record starts it
            return
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._replay(), name=f"replay {self._store.name} journal")

    async def aclose(self) -> None:
        """Stop replaying (what is left stays in the journal)."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    async def batch_ended(self) -> None:
        """Wait until the replay batch on the wire now (if any) has landed or failed."""
        if self._in_flight is not None:
            await self._in_flight.wait()

    def _breaker_changed(self, _name: str, _old: BreakerState, _new: BreakerState) -> None:
        if self._wake is not None:
            self._wake.set()

    def _overtaken(self) -> None:
        if self._idle and self._wake is not None:
            self._wake.set()

    async def _replay(self) -> None:
        """Deliver the journal in order, a batch per call through the breaker, until empty."""
        journal = self._journal
        name = self._store.name
        logger.info("%s store: replaying %d journaled operations", name, len(journal))
        while journal:
            breaker = self._breaker
            if breaker.state is BreakerState.OPEN:
                await self._sleep(breaker.snapshot()["seconds_until_probe"])
                continue
            batch = journal.next_batch()
            if not batch:
                if journal.unpark():
                    # Only keys of the part of the store that is down are left: retry them soon.
                    await self._sleep(_REPLAY_RETRY_SECONDS)
                    continue
                # Only operations that newer writes are overtaking are left: wait for those.
                self._idle = True
                try:
                    await self._sleep(_REPLAY_RETRY_SECONDS)
                finally:
                    self._idle = False
                continue
            delivery = _Delivery()
            journal.sending(batch)
            self._in_flight = in_flight = asyncio.Event()
            try:
                outcome = await self._deliver(batch, delivery)
            finally:
                self._in_flight = None
                in_flight.set()
            failed = self._is_unreachable(outcome)
            journal.delivered(
                batch,
                delivery.landed if failed else batch,
                sent=outcome is not self._skipped,  # skipped: refused without I/O
                parked=delivery.parked,
            )
            if failed and len(delivery.landed) + len(delivery.parked) < len(batch):
                await self._sleep(_REPLAY_RETRY_SECONDS)  # else: go on with the other keys
        logger.info("%s store: outage journal replayed", name)

    def _deliver(self, batch: list[JournalOp], delivery: _Delivery) -> Awaitable[Any]:
        first = batch[0]
        store = self._store
        if isinstance(first, JournalClear):
            return self._call(store.clear, (), None)
        if isinstance(first, JournalInvalidate):
            return self._call(store.invalidate, (first.namespace,), self._deadline)
        return self._call(self._write_batch, (batch, delivery), self._deadline)

    async def _write_batch(self, batch: list[JournalOp], delivery: _Delivery) -> None:
        """One pipelined ``set_many`` per namespace; deletes (and sets that expired while
        journaled: the store may still hold an older, longer-lived value) concurrently. What
        reached the store is noted in ``delivery`` as it lands, even when the batch fails."""
        sets: dict[str, tuple[list[JournalSet], list[StoreItem]]] = {}
        deletes: list[JournalSet | JournalDelete] = []
        for op in batch:
            if isinstance(op, JournalDelete):
                deletes.append(op)
                continue
            assert isinstance(op, JournalSet)
            ttl = self._journal.remaining_ttl(op)
            if ttl is not None and ttl <= 0:
                deletes.append(op)
            else:
                ops, items = sets.setdefault(op.namespace, ([], []))
                ops.append(op)
                items.append((op.key, op.data, ttl))
        store = self._store
        calls = [
            _noting(store.set_many, (ns, items), ops, delivery) for ns, (ops, items) in sets.items()
        ]
        calls += [_noting(store.delete, (op.namespace, op.key), [op], delivery) for op in deletes]
        for result in await asyncio.gather(*calls, return_exceptions=True):
            if isinstance(result, BaseException):
                raise result

    async def _sleep(self, seconds: float) -> None:
        """Sleep up to ``seconds``, or until the breaker changes state."""
        wake = self._wake
        assert wake is not None
        wake.clear()
        try:
            async with asyncio.timeout(max(seconds, 0.001)):
                await wake.wait()
        except TimeoutError:
            pass


class _Delivery:
    """What became of a replayed batch's key operations: ``landed`` in the store, or
    ``parked``: refused by the part of the store that is down (a dead cluster node)."""

    __slots__ = ("landed", "parked")

    def __init__(self) -> None:
        self.landed: list[JournalOp] = []
        self.parked: list[JournalOp] = []


async def _noting(
    write: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...],
    ops: Sequence[JournalSet | JournalDelete],
    delivery: _Delivery,
) -> None:
    """``write(*args)`` (of ``ops``), noting in ``delivery`` what reached the store: all of
    them, or when it failed, those the store says it wrote anyway (``StoreError.written``);
    when the failure concerns only part of the store (it says what landed, and refused the
    rest), the others are parked. A store that refused everything (out of memory, say) is
    retried from the head after a pause instead: every retry of it is real I/O."""
    try:
        await write(*args)
    except StoreError as exc:
        written = [op for op in ops if op.key in exc.written] if exc.written else []
        delivery.landed += written
        if exc.refused and exc.written is not None:
            delivery.parked += [op for op in ops if op not in written]
        raise
    delivery.landed += ops
