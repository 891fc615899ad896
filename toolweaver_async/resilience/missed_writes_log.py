"""The record of what the file store missed, kept on disk so that a restart honours it.

Without it, a process that could not delete ``k`` from the file store (a read-only folder, an
open breaker, a cancelled write) and then restarts (or is killed) would serve the older value
still on disk, and promote it into Redis. So every mark is written here before the write or
delete that made it is acknowledged, and the next process loads the marks before its file store
serves anything.

Layout and crash safety are the outage journal's (:mod:`.journal.log`): one slot file per live
process, claimed with ``flock``; a new process adopts the files dead processes left. Records are
framed with their length and CRC, so a torn tail is ignored; the file is rewritten whole
(atomically) after a load, when it has grown past :data:`_COMPACT_AFTER`, and when the record
empties. Lifts ride along with the next mark, or with the last write at close: a lift lost in a
crash only makes that key a miss in the file store until it is written again.

A disk that refuses or hangs does not hold writers up for more than ``timeout`` seconds (and not
at all while an earlier write is stuck); the marks then live in memory only, logged once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, Final

import msgspec

from ..stores.worker_lane import DaemonWorker
from .journal.log import JournalFile
from .journal.records import Origin, frame, unframe
from .missed_writes import Change, MissedWrites

__all__ = ["MissedWritesLog"]

logger = logging.getLogger("toolweaver_async.cache")

_ORIGIN: Final = Origin("missed-writes")
_DECODER: Final = msgspec.msgpack.Decoder(Change | Origin)
_COMPACT_AFTER: Final = 256 * 1024


class MissedWritesLog:
    """The on-disk half of one store's :class:`~.missed_writes.MissedWrites`."""

    def __init__(self, folder: Path, *, name: str = "file", timeout: float = 1.0) -> None:
        self.folder = folder
        self.timeout = timeout
        self.loaded = False
        self.last_error: str | None = None
        self._file = JournalFile(folder, f"missed-{name}", _ORIGIN)
        self._worker = DaemonWorker(f"toolweaver-missed-{name}")
        self._claimed = False
        self._claiming: asyncio.Task[list[Change]] | None = None
        self._log_bytes = 0
        self._rewrite_due = False
        self._durable = 0  # changes (counted by MissedWrites.recorded) written or given up on
        self._writing: asyncio.Task[None] | None = None
        self._started_at = 0.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._closed = False

    async def _in_worker(self, fn: Any, *args: Any) -> Any:
        return await asyncio.wrap_future(self._worker.submit(fn, *args))

    async def load(self) -> list[Change]:
        """The marks earlier runs left (their logs and dead processes'), as changes whose
        replay rebuilds them. A folder holding no marks is not touched: a slot is claimed
        only once there is something to keep."""
        try:
            left = await asyncio.wait_for(self._in_worker(self._marks_left), self.timeout)
        except (OSError, TimeoutError) as exc:
            left = None
            self._failed(exc)
        if left:  # claim now: the files of dead processes are merged into ours
            left = await self._claim()
        self.loaded = True  # a disk that cannot say: what it holds is served, as before
        return left or []

    def _marks_left(self) -> bool:
        """On the worker thread: whether any log in the folder may hold marks."""
        try:
            names = os.listdir(self.folder)
        except FileNotFoundError:
            return False
        prefix = f"{self._file.name}-"
        for name in names:
            if name.startswith(prefix) and name.endswith(".jrnl"):
                try:
                    if os.stat(self.folder / name).st_size > 0:
                        return True
                except FileNotFoundError:  # an adopted log its new owner just removed
                    continue
        return False

    async def _claim(self) -> list[Change]:
        try:
            contents: list[bytes] = await asyncio.wait_for(
                self._in_worker(self._file.claim), self.timeout
            )
        except (OSError, TimeoutError) as exc:
            self._failed(exc)
            return []
        self._claimed = True
        left: list[Change] = []
        for content in contents:
            records, _torn = unframe(content, _DECODER)  # a torn tail: its records are lost
            # Each file rebuilt on its own, then only its marks kept: a lift in one process's
            # log says nothing about another's marks, and marks of different runs commute.
            left += [r for r in _replayed(records) if r.marked]
        self._log_bytes = len(contents[0])
        self._rewrite_due = any(contents)  # merged into ours: the adopted files can go
        if left:
            logger.warning(
                "file store: %d writes or deletes that earlier runs could not make there are "
                "held back (%s): those keys are misses there until written again",
                len(left),
                self.folder,
            )
        return left

    async def save(self, missed: MissedWrites) -> None:
        """Return once every change ``missed`` recorded so far is on disk, the disk failed, or
        ``timeout`` passed; writers arriving meanwhile share one write (group commit)."""
        changes = missed.changes
        assert changes is not None
        if not self._claimed:
            if not missed and not self._log_bytes:  # nothing marked, nothing on disk
                changes.clear()
                missed.unsaved_marks = False
                self._durable = missed.recorded
                return
            if self._claiming is None:
                self._claiming = asyncio.get_running_loop().create_task(self._claim())
                for change in await asyncio.shield(self._claiming):
                    missed.apply(change)
            else:
                await asyncio.shield(self._claiming)
            if not self._claimed:
                return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        target = missed.recorded
        while self._durable < target and not self._closed:
            writing = self._writing
            if writing is None:
                writing = self._writing = loop.create_task(self._write(missed))
                self._started_at = loop.time()
            elif loop.time() - self._started_at > self.timeout:
                return  # stuck on an earlier write (a dead mount): do not queue behind it
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            done, _ = await asyncio.wait({writing}, timeout=remaining)
            if not done:
                return

    async def _write(self, missed: MissedWrites) -> None:
        changes = missed.changes
        assert changes is not None
        upto = missed.recorded
        missed.unsaved_marks = False
        try:
            if self._rewrite_due or self._log_bytes > _COMPACT_AFTER or not missed:
                chunk = b"".join(frame(c) for c in missed.snapshot())
                chunk = _ORIGIN_FRAME + chunk if chunk else b""
                changes.clear()
                self._rewrite_due = False
                await self._in_worker(self._file.rewrite, chunk)
                self._log_bytes = len(chunk)
            else:
                chunk = b"".join(frame(c) for c in changes)
                changes.clear()
                self._log_bytes += await self._in_worker(
                    self._file.append, chunk, not self._log_bytes
                )
            if self.last_error is not None:
                logger.info("file store's missed-writes record is written to disk again")
                self.last_error = None
        except OSError as exc:
            self._rewrite_due = True  # the log may end torn: the next write replaces it whole
            self._failed(exc)
        finally:
            self._durable = max(self._durable, upto)
            self._writing = None

    def spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` in the background; :meth:`aclose` waits for it."""
        if self._closed:
            work.close()
            return
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def aclose(self, missed: MissedWrites) -> None:
        """Write the record whole one last time (lifts included) and release the slot; each
        step bounded by ``timeout``. Idempotent."""
        if self._closed:
            return
        if self._claimed:
            busy = [*self._tasks, *([self._writing] if self._writing is not None else [])]
            if busy:
                await asyncio.wait(busy, timeout=self.timeout)
            if self._writing is None:
                self._rewrite_due = True
                self._writing = asyncio.get_running_loop().create_task(self._write(missed))
                await asyncio.wait({self._writing}, timeout=self.timeout)
        self._closed = True
        if self._claimed and self._writing is None:  # else stuck: the slot goes with us
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(self._in_worker(self._file.release), self.timeout)
        self._worker.shutdown(wait=False)

    def _failed(self, exc: BaseException) -> None:
        if self.last_error is None:
            logger.warning(
                "file store's missed-writes record kept in memory only (%s): %s: %s",
                self.folder,
                type(exc).__name__,
                exc,
            )
        self.last_error = f"{type(exc).__name__}: {exc}"


_ORIGIN_FRAME: Final = frame(_ORIGIN)


def _replayed(records: list[Any]) -> list[Change]:
    """The marks ``records`` (one file's, in order) leave standing, as changes."""
    rebuilt = MissedWrites(max_keys=1 << 62)  # no collapsing while rebuilding
    for record in records:
        if isinstance(record, Change):
            rebuilt.apply(record)
    return list(rebuilt.snapshot())
