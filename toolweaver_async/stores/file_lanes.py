"""The file store's two worker lanes: reads beside writes, never overtaking a write of their own.

Reads and writes used to share one lane, first come first served, and a read waited for every
write asked before it: with Redis away, 200 agents' reads queued behind write-through writes
(~150-300 us each against ~10 us for a 1 KB read), 100 ms and more a get. Reads now have a lane
(and a thread) of their own. What must not change is what a read can see, so a read goes to the
write lane instead, behind the steps there, whenever one of them that has not returned yet may
change the very entry it reads (a queued write-behind batch, a delete): a read asked after a
write or delete of its entry still sees it, exactly as in one lane. Steps the lane cannot place
(none of the store's own) count as changing every entry.

Both lanes share one stall (see ``worker_lane.Stall``): a step stuck past the deadline in either
makes both refuse new steps until it returns, as a dead mount would hang both anyway. Both
threads are daemon threads, started at the first step of their kind: neither keeps the process
from exiting.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from .worker_lane import DaemonWorker, Stall, Touches, WorkerLane

__all__ = ["FileLanes"]


class FileLanes:
    """This event loop's write lane and read lane of one file store, on two worker threads."""

    __slots__ = ("_deadline", "_loop", "_reader", "_reads", "_touches", "_writer", "_writes")

    def __init__(self, *, deadline: float | None, touches: Touches) -> None:
        self._deadline = deadline
        self._touches = touches  # (folder, key) entries each write-lane step may change
        self._writer: DaemonWorker | None = None
        self._reader: DaemonWorker | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._writes: WorkerLane | None = None
        self._reads: WorkerLane | None = None

    def writes(self) -> WorkerLane:
        """The lane of writes, deletes and every other step (its thread started at the first)."""
        self._here()
        if self._writes is None:
            if self._writer is None:
                self._writer = DaemonWorker("toolweaver-file")
            assert self._loop is not None
            self._writes = WorkerLane(
                self._loop,
                self._writer,
                deadline=self._deadline,
                touches=self._touches,
                stall=self._stall(),
            )
        return self._writes

    def for_reading(self, folder: str, keys: Iterable[str]) -> WorkerLane:
        """Where a read of ``keys`` (in ``folder``) goes: the read lane, unless a write-lane
        step not yet returned may change one of them; then behind it, in the write lane."""
        writes = self.writes()
        for key in keys:
            if writes.busy_with((folder, key)):
                return writes
        reads = self._reads
        if reads is None:
            if self._reader is None:
                self._reader = DaemonWorker("toolweaver-file-read")
            assert self._loop is not None
            reads = self._reads = WorkerLane(
                self._loop, self._reader, deadline=self._deadline, stall=self._stall()
            )
        return reads

    def close(self) -> None:
        """Stop both threads once their last hop is done, without waiting for it (a hop stuck
        on a dead mount must not hang the caller). Used again, the lanes start new threads."""
        workers = (self._writer, self._reader)
        self._writer = self._reader = None
        self._writes = self._reads = None
        self._loop = None
        for worker in workers:
            if worker is not None:
                worker.shutdown(wait=False)

    def _here(self) -> None:
        """A store may serve one event loop after another: new lanes for a new loop (on the
        same threads)."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop = loop
            self._writes = self._reads = None

    def _stall(self) -> Stall:
        """The stall both lanes of this loop share."""
        for lane in (self._writes, self._reads):
            if lane is not None:
                return lane.stall
        assert self._loop is not None
        return Stall(self._loop)
