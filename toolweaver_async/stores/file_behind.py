"""The file store with its writes behind the caller: a bounded queue, drained in batches.

A ``set`` puts the entry in a queue and returns; the store's worker writes queued entries in
batches (each still a whole temp file renamed into place). A later write of a key still queued
replaces the earlier one (latest wins: a hot key costs one file write per batch, not one per
``set``). Why: an atomic 1 KB file write costs ~150 us here and every ``set`` waited for its own
behind everyone else's, although memory and Redis already held the value.

Guarantees, in this process: reads (``get``, ``get_many``, ``add``, listing) see queued entries
before they reach disk; a ``delete``, ``invalidate`` or ``clear`` drops queued entries it covers
and runs after the batch in flight, so a queued write never overtakes it; the queue is bounded
(entries and bytes) and a full queue makes writers wait, never drops; ``aclose`` drains it. A
process killed outright loses what was still queued (the queue drains continuously, so that is
the writes of the last batch interval) and never leaves a torn entry. A step stuck past the
deadline stalls the lane: the queue waits for it (one more deadline at most) and writes again
what the stall released unwritten, instead of failing it all at once. A write the disk refuses
is counted, reported to ``write_failed`` (the chain counts it as an error and marks the key as
missed) and the key's older entry removed, so no process serves what it was replacing. The sweep
of missed writes (``file_sweep``) first waits for the entries queued before it that it covers:
queued before the write that was missed, they are older than it, yet would land after the sweep
with a later file time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from ..config import CacheConfig
from .base import EntryPage, StoreItem
from .file import (
    _NEVER,
    FileStore,
    _entry_head,
    _Ledger,
    _publish_replacing,
    _write_entry,
)
from .file_queue import QueuedEntry as _Queued
from .file_queue import QueuedWritesStore, first_failure, queue_depth
from .file_sweep import Swept, SweptNames
from .worker_lane import WorkerLane

__all__ = ["QueuedWritesStore", "WriteBehindFileStore", "queue_depth"]

logger = logging.getLogger("toolweaver_async.file")

# Entries per batch: one lane step, which reads asked meanwhile wait behind (~150 us a 1 KB
# write, so ~10 ms a batch).
_BATCH = 64
# Bookkeeping per queued entry (tuple key, slot object), so tiny values are bounded by bytes too.
_ENTRY_OVERHEAD = 120


def _flush_row(ledger: _Ledger, folder: str, key: str, data: bytes, expires_at: float) -> None:
    """On the worker thread: write one queued entry as a whole file (temp file, rename)."""
    path, head = _entry_head(folder, key, data, expires_at)
    grown = _write_entry(path, head, data, _publish_replacing)
    ledger.wrote(grown or 0)


class WriteBehindFileStore(FileStore):
    """A :class:`FileStore` whose ``set``/``set_many`` return once the entry is queued."""

    def __init__(
        self,
        *,
        root: Path,
        key_prefix: str,
        max_bytes: int = 1024 * 1024 * 1024,
        step_timeout: float | None = 1.0,
        clock: Callable[[], float] = time.time,
        max_queued_entries: int = 2_000,
        max_queued_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        super().__init__(
            root=root,
            key_prefix=key_prefix,
            max_bytes=max_bytes,
            step_timeout=step_timeout,
            clock=clock,
        )
        self.max_queued_entries = max_queued_entries
        self.max_queued_bytes = max_queued_bytes
        # insertion order is flush order; a rewrite keeps its key's place (latest wins)
        self._queued: dict[tuple[str, str], _Queued] = {}
        self._queued_bytes = 0
        self._drain_task: asyncio.Task[None] | None = None
        self._in_flight: asyncio.Future[Any] | None = None  # the batch on the worker now
        # that batch's entries, still readable here: a read never waits for a write
        self._landing: dict[tuple[str, str], _Queued] = {}
        self._room: list[asyncio.Future[None]] = []  # writers waiting for the queue to shrink
        self._failing = False
        self._disk_hung = False  # the lane stayed stalled past a wait (see _wait_while_stalled)
        # Told (namespace, how many writes the disk refused after their callers returned,
        # [(key, entry bytes)] of those whose key was not written again since), so the chain
        # counts them and keeps older entries of those keys from being served.
        self.write_failed: Callable[[str, int, Sequence[tuple[str, bytes]]], None] | None = None
        self._counts = dict.fromkeys(
            ("flushed", "coalesced", "failed", "retried", "waits", "batches"), 0
        )
        self._seq = 0

    @classmethod
    def from_config(
        cls, config: CacheConfig, *, clock: Callable[[], float] | None = None
    ) -> WriteBehindFileStore:
        return cls(
            **cls._settings_of(config, clock),
            max_queued_entries=config.file_queue_max_entries,
            max_queued_bytes=config.file_queue_max_bytes,
        )

    @property
    def queued_writes(self) -> dict[str, int]:
        """Depth now (``entries``, ``bytes``) and totals: ``flushed``, ``coalesced`` (writes
        replaced before reaching disk), ``failed``, ``retried`` (written again after a stall
        released them), ``waits`` (writers held by a full queue)."""
        return {"entries": len(self._queued), "bytes": self._queued_bytes, **self._counts}

    # -- writes ------------------------------------------------------------------------------

    async def set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        await self.set_many(namespace, ((key, data, ttl),))

    async def set_many(self, namespace: str, items: Sequence[StoreItem]) -> None:
        if not items:
            return
        folder = self._folder(namespace)
        queued = self._queued
        for key, data, ttl in items:
            size = len(data) + len(key) + _ENTRY_OVERHEAD
            while queued and self._no_room_for((namespace, key), size):
                self._counts["waits"] += 1
                await self._wait_for_room()
            expires_at = _NEVER if ttl is None else self._clock() + ttl
            old = queued.get((namespace, key))
            if old is not None:
                self._queued_bytes -= old.size
                self._counts["coalesced"] += 1
            self._seq += 1
            queued[(namespace, key)] = _Queued(folder, data, expires_at, size, self._seq)
            self._queued_bytes += size
            if self._drain_task is None:
                self._drain_task = asyncio.ensure_future(self._drain())

    async def add(self, namespace: str, key: str, data: bytes, ttl: float | None) -> bool:
        if self._queued_fresh(namespace, key) is not None:
            return False  # promotion never overwrites a newer write, queued ones included
        return await super().add(namespace, key, data, ttl)

    async def delete(self, namespace: str, key: str) -> bool:
        # The lane is first come, first served: the delete runs after the batch in flight.
        dropped = self._unqueue(lambda k: k == (namespace, key))
        return await super().delete(namespace, key) or dropped

    async def invalidate(self, namespace: str) -> None:
        self._folder(namespace)
        self._unqueue(lambda k: k[0] == namespace)
        await self._batch_landed()  # invalidate runs on a thread of its own, not in the lane
        await super().invalidate(namespace)

    async def clear(self) -> None:
        self._unqueue(lambda k: True)
        await self._batch_landed()
        await super().clear()

    async def sweep_missed(
        self,
        namespace: str,
        marks: Sequence[tuple[str, bytes | None, int]],
        current: Callable[[str], bool] | None = None,
    ) -> list[Swept]:
        """As the write-through store, once the writes of these keys queued so far have landed;
        a key whose queued write does not land in time is ``BUSY`` (judged by a later sweep)."""
        keys = {mark[0] for mark in marks}
        upto = self._seq

        def covers(k: tuple[str, str]) -> bool:
            return k[0] == namespace and k[1] in keys

        await self._landed_before(upto, covers)
        busy = {k[1] for k in self._still_queued(upto, covers)}
        judged = iter(
            await super().sweep_missed(namespace, [m for m in marks if m[0] not in busy], current)
        )
        return [Swept.BUSY if mark[0] in busy else next(judged) for mark in marks]

    async def sweep_namespace(self, namespace: str | None, at_ns: int) -> SweptNames | None:
        """As the write-through store, once the writes queued so far of the namespace (of any,
        for None) have landed; None when they do not land in time."""
        if not await self._landed_before(
            self._seq, lambda k: namespace is None or k[0] == namespace
        ):
            return None
        return await super().sweep_namespace(namespace, at_ns)

    def _still_queued(
        self, upto: int, covers: Callable[[tuple[str, str]], bool]
    ) -> list[tuple[str, str]]:
        """Entries queued (or being written) whose write was queued by ``upto`` and that
        ``covers`` selects."""
        return [
            k
            for entries in (self._queued, self._landing)
            for k, entry in list(entries.items())
            if entry.seq <= upto and covers(k)
        ]

    async def _landed_before(self, upto: int, covers: Callable[[tuple[str, str]], bool]) -> bool:
        """Wait until no write queued by ``upto`` that ``covers`` selects is still queued or
        being written (woken at each batch the drain takes, and when it ends); False when
        that takes longer than a few step timeouts, or nothing drains the queue."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 4 * (self.step_timeout or 15.0)
        while self._still_queued(upto, covers):
            remaining = deadline - loop.time()
            if self._drain_task is None or remaining <= 0:
                return False
            waiter: asyncio.Future[None] = loop.create_future()
            self._room.append(waiter)
            try:
                await asyncio.wait([waiter], timeout=remaining)
            finally:
                if waiter in self._room:
                    self._room.remove(waiter)
        return True

    async def aclose(self) -> None:
        """Write what is queued (each batch bounded by ``step_timeout``), then close."""
        task = self._drain_task
        if task is not None and task.get_loop() is asyncio.get_running_loop():
            await asyncio.wait([task])
        await super().aclose()

    # -- reads -------------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> bytes | None:
        if self._queued or self._landing:
            entry = self._find((namespace, key))
            if entry is not None:
                return entry.data if not entry.expires_at <= self._clock() else None
        return await super().get(namespace, key)

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if not self._queued and not self._landing:
            return await super().get_many(namespace, keys)
        now = self._clock()
        found: dict[int, bytes | None] = {}
        rest: list[str] = []
        for index, key in enumerate(keys):
            entry = self._find((namespace, key))
            if entry is None:
                rest.append(key)
            else:
                found[index] = entry.data if not entry.expires_at <= now else None
        on_disk = iter(await super().get_many(namespace, rest) if rest else ())
        return [found[i] if i in found else next(on_disk) for i in range(len(keys))]

    async def list_entries(self, namespace: str, prefix: str) -> AsyncIterator[EntryPage]:
        """Queued entries first, then the files (less the keys already listed from the queue)."""
        now = self._clock()
        page = [
            (key, entry.data)
            for (ns, key), entry in list({**self._landing, **self._queued}.items())
            if ns == namespace and key.startswith(prefix) and not entry.expires_at <= now
        ]
        if page:
            yield page
        listed = {key for key, _data in page}
        async for files in super().list_entries(namespace, prefix):
            rest = [item for item in files if item[0] not in listed] if listed else files
            if rest:
                yield rest

    # -- the queue ---------------------------------------------------------------------------

    def _find(self, k: tuple[str, str]) -> _Queued | None:
        """The newest entry of ``k`` not yet on disk: queued, or in the batch being written."""
        entry = self._queued.get(k)
        return entry if entry is not None else self._landing.get(k)

    def _queued_fresh(self, namespace: str, key: str) -> _Queued | None:
        entry = self._find((namespace, key))
        if entry is None or entry.expires_at <= self._clock():
            return None
        return entry

    def _no_room_for(self, k: tuple[str, str], size: int) -> bool:
        old = self._queued.get(k)
        if old is not None:  # a rewrite takes the place of the entry it replaces
            return self._queued_bytes - old.size + size > self.max_queued_bytes
        return (
            len(self._queued) >= self.max_queued_entries
            or self._queued_bytes + size > self.max_queued_bytes
        )

    def _unqueue(self, covers: Callable[[tuple[str, str]], bool]) -> bool:
        # The batch in flight is still written; the removal queues behind it in the lane (or
        # waits for it), so its entries only stop being readable from here.
        for k in [k for k in self._landing if covers(k)]:
            del self._landing[k]
        doomed = [k for k in self._queued if covers(k)]
        for k in doomed:
            self._queued_bytes -= self._queued.pop(k).size
        if doomed:
            self._wake_writers()
        return bool(doomed)

    async def _wait_for_room(self) -> None:
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._room.append(waiter)
        try:
            await waiter
        finally:
            if waiter in self._room:
                self._room.remove(waiter)

    def _wake_writers(self) -> None:
        waiters, self._room = self._room, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _batch_landed(self) -> None:
        """Wait for the batch on the worker now (never cancelling it)."""
        batch = self._in_flight
        if batch is not None and not batch.done():
            await asyncio.wait([batch])

    async def _drain(self) -> None:
        """Write queued entries a batch at a time until the queue is empty. Taking a batch
        and handing it to the lane happen in one step of the loop, so a read or delete asked
        after it queues behind it in the lane and sees (or removes) what it wrote."""
        try:
            while self._queued:
                lane = self._lane_here()
                await self._wait_while_stalled(lane)
                taken: list[tuple[tuple[str, str], _Queued]] = []
                for k in self._queued:
                    taken.append((k, self._queued[k]))
                    if len(taken) == _BATCH:
                        break
                for k, entry in taken:
                    del self._queued[k]
                    self._queued_bytes -= entry.size
                # One lane step per entry: the lane's deadline is per step, and a batch of 64
                # writes on a loaded machine can outlast it while still progressing (cut short
                # as one step, all 64 failed). Only a write that itself hangs past it fails.
                batch = asyncio.gather(
                    *(
                        lane.run(_flush_row, self._ledger, e.folder, k[1], e.data, e.expires_at)
                        for k, e in taken
                    ),
                    return_exceptions=True,
                )
                self._in_flight = batch
                self._landing = dict(taken)
                self._wake_writers()
                outcomes = await batch
                failed: list[tuple[int, str]] = []
                for index, outcome in enumerate(outcomes):
                    if not isinstance(outcome, BaseException):
                        continue
                    if isinstance(outcome, TimeoutError) and not self._disk_hung:
                        self._retry(*taken[index])
                    else:
                        failed.append((index, f"{type(outcome).__name__}: {outcome}"))
                self._landing = {}
                self._counts["batches"] += 1
                self._counts["flushed"] += sum(
                    not isinstance(outcome, BaseException) for outcome in outcomes
                )
                # A refused flush withdrew the key's older entry itself, in its step (only
                # while it was still that file: a newer one another process wrote stays).
                self._report(taken, failed)
                await self._keep_bounded_quietly()
        finally:
            self._in_flight = None
            self._landing = {}
            self._drain_task = None
            # Cancelled with entries left, a later write starts a new drain; drained, a sweep
            # waiting for its entries to land is told they have.
            self._wake_writers()

    async def _wait_while_stalled(self, lane: WorkerLane) -> None:
        """Hand the lane no batch while a step in it (any caller's) is stuck past the
        deadline: it would fail every entry at once, unwritten, and the drain would go through
        the whole queue so in milliseconds, each key a miss from then on although its caller
        was told the write succeeded. A stall that ends within ``step_timeout`` more loses
        nothing; on a disk hung longer, writes fail and are reported as refused until the lane
        recovers, so neither writers waiting for room nor ``aclose`` wait longer than that."""
        if not lane.stalled:
            self._disk_hung = False
            return
        if self._disk_hung:
            return
        await asyncio.wait([lane.recovered()], timeout=self.step_timeout)
        self._disk_hung = lane.stalled

    def _retry(self, k: tuple[str, str], entry: _Queued) -> None:
        """Queue again an entry whose write a stall released: whether it landed is unknown
        (the stuck hop goes on with its steps; those behind it never ran), and writing the
        same bytes again is harmless. Not when the key was written again since (the newer
        write decides) or removed since (a delete, invalidate or clear took it out of
        ``_landing``: writing it again would bring the value back)."""
        if self._landing.get(k) is not entry or k in self._queued:
            return
        self._queued[k] = entry
        self._queued_bytes += entry.size
        self._counts["retried"] += 1

    def _report(
        self, taken: list[tuple[tuple[str, str], _Queued]], failed: list[tuple[int, str]]
    ) -> None:
        """Count and log refused writes, tell ``write_failed``."""
        if not failed:
            if self._failing:
                self._failing = False
                logger.info("file store writes land again")
            return
        self._counts["failed"] += len(failed)
        if not self._failing:
            self._failing = True
            logger.warning(
                "file store could not write %d queued entries: %s", *first_failure(failed)
            )
        # A key written again since is queued once more: that newer write decides what the
        # disk may be trusted with (its caller already cleared the key's mark).
        by_namespace: dict[str, tuple[list[int], list[tuple[str, bytes]]]] = {}
        for index, _error in failed:
            (namespace, key), entry = taken[index]
            count, entries = by_namespace.setdefault(namespace, ([0], []))
            count[0] += 1
            if (namespace, key) not in self._queued:
                entries.append((key, entry.data))
        if self.write_failed is not None:
            for namespace, (count, entries) in by_namespace.items():
                self.write_failed(namespace, count[0], entries)

    async def _keep_bounded_quietly(self) -> None:
        try:
            await self._keep_bounded()
        except Exception as exc:  # best effort: the next batch tries again
            logger.debug("file store maintenance failed: %s", exc)
