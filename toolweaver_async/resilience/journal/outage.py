"""The outage journal: the ledger of missed operations, kept in a log on disk when it has a folder.

Records are written by one worker-thread hop per 10 ms of changes, never on the event loop; a
process that dies loses at most the records of its last 10 ms, and a torn tail is ignored on
load. The log is compacted (rewritten to the live operations, also in the worker thread) when it
grows past twice their size (or when sets were turned into deletes to stay under
``max_bytes``), and emptied when the journal drains: on disk it stays under about twice
``max_bytes``.

The disk steps run on a daemon thread of the journal's own, each awaited at most ``timeout``
seconds: a hung step (a dead mount) leaves the journal in memory only and neither holds
``aclose()`` up nor keeps the interpreter from exiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any, Final

from ...stores.worker_lane import DaemonWorker
from .handoff import ReplayLedger
from .ledger import UNBOUNDED, live_operations
from .log import JournalFile
from .records import (
    JournalClear,
    JournalDelete,
    JournalInvalidate,
    JournalOp,
    JournalSet,
    Origin,
    Record,
    frame,
    unframe,
)

__all__ = ["OutageJournal"]

logger = logging.getLogger("toolweaver_async.journal")

# Compaction waits until the log is this large and more than twice the live operations.
_COMPACT_AFTER: Final = 256 * 1024
# Records are handed to the disk at most this often: one thread hop per 10 ms, not per write,
# so a journal under load does not crowd the file store out of the worker threads. A process
# that dies loses at most the records of its last 10 ms.
_FLUSH_EVERY: Final = 0.01


class OutageJournal(ReplayLedger):
    """Operations one store missed, latest per key, in order, bounded, optionally on disk.

    ``clock`` is the wall clock the cache stamps entries with (expiry survives restarts).
    ``on_pending`` is called when the journal goes from empty to non-empty, so the owner can
    start replaying. ``timeout`` bounds the wait for each disk step. Not thread-safe: one event
    loop owns it.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        clock: Callable[[], float],
        max_bytes: int = UNBOUNDED,
        folder: Path | None = None,
        name: str = "redis",
        server: str = "",
        timeout: float = 1.0,
    ) -> None:
        super().__init__(max_entries=max_entries, max_bytes=max_bytes, clock=clock, name=name)
        self._folder = folder
        self.server = server
        self._file: JournalFile | None = None
        self._pending: list[bytes] = []
        self._log_bytes = 0
        self._rewrite_due = False
        self._flusher: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self._closed = False
        self.timeout = timeout
        self._worker = DaemonWorker(f"toolweaver-journal-{name}")
        self._stuck: Future[Any] | None = None  # a disk step that outlived its wait

    async def _in_worker(self, fn: Callable[..., Any], *args: Any) -> Any:
        """``fn(*args)`` on the journal's daemon thread, awaited at most ``timeout`` seconds.
        While a step that timed out is still running, later steps fail at once rather than
        queue behind a hung disk."""
        if self._stuck is not None:
            if not self._stuck.done():
                raise TimeoutError("an earlier outage journal disk step is still running")
            self._stuck = None
        step = self._worker.submit(fn, *args)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(step), self.timeout)
        except TimeoutError:
            self._stuck = step
            raise TimeoutError(
                f"outage journal disk step took more than {self.timeout} s"
            ) from None

    @property
    def path(self) -> Path | None:
        """The log file this process claimed, None while the journal lives in memory only."""
        return None if self._file is None else self._file.path

    async def open(self) -> None:
        """Claim a journal file and load what a previous run left in it (sets become deletes,
        see the package docstring). Without a folder, or when the disk fails, the journal stays
        in memory. Operations recorded before this call come after the loaded ones."""
        if self._folder is None or self._file is not None or self._closed:
            return
        # Logs are named after the server they are for, so a cache pointed at another server
        # (or database) never even opens them; the origin record inside catches the rest.
        digest = hashlib.sha256(self.server.encode()).hexdigest()[:12]
        file = JournalFile(self._folder, f"{self.name}-{digest}", Origin(self.server))
        try:
            contents: list[bytes] = await self._in_worker(file.claim)
        except (OSError, TimeoutError) as exc:
            self._disk_failed(exc)
            return
        self._file = file
        current = list(self._ops.values())
        self._reset()
        torn = False
        left: list[JournalOp] = []
        for content in contents:
            records, torn_here = unframe(content)
            torn = torn or torn_here
            if records and records[0] != Origin(self.server):
                logger.warning(
                    "outage journal for %s in %s was recorded for another server: discarded",
                    self.name,
                    file.folder,
                )
                continue
            left += live_operations(records, clock=self._clock, name=self.name)
        # Numbered below every operation of this run, which come after them.
        for seq, op in enumerate(left, start=-len(left)):
            self._apply(self._as_removal(op, seq))
        loaded = len(self._ops)
        for op in current:
            self._apply(op)
        if loaded or torn:
            logger.warning(
                "outage journal for %s: %d operations left by previous runs in %s%s",
                self.name,
                loaded,
                file.folder,
                " (a torn tail was dropped)" if torn else "",
            )
        self._log_bytes = len(contents[0])
        self._rewrite_due = any(contents) or bool(self._ops)
        self._schedule_flush()
        if self._ops and self.on_pending is not None:
            self.on_pending()

    @staticmethod
    def _as_removal(op: JournalOp, seq: int) -> JournalOp:
        """A loaded operation, renumbered ``seq`` (seqs of different files collide). A set
        becomes a delete (package doc); every loaded op is then a removal, and removals
        commute, so the files may be merged in any order."""
        if isinstance(op, JournalSet | JournalDelete):
            return JournalDelete(seq, op.namespace, op.key)
        if isinstance(op, JournalInvalidate):
            return JournalInvalidate(seq, op.namespace)
        return JournalClear(seq)

    async def aclose(self) -> None:
        """Write what is pending and release the journal file. Idempotent."""
        if self._closed:
            return
        self._closed = True
        flusher = self._flusher
        if flusher is not None and not flusher.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(flusher)
        if self._file is not None:
            await self._flush(linger=0)
            with contextlib.suppress(OSError, TimeoutError):
                await self._in_worker(self._file.release)
        # Not joined: a step hung on a dead mount is left behind (a daemon thread).
        self._worker.shutdown(wait=False)

    def _persist(self, record: Record) -> None:
        if self._file is None:
            return
        self._pending.append(frame(record))
        self._schedule_flush()

    def _persist_shed(self) -> None:
        # Sets turned into deletes in place: only a rewrite drops their bytes from the log.
        if self._file is not None:
            self._rewrite_due = True
            self._schedule_flush()

    def _schedule_flush(self) -> None:
        if self._closed or self._file is None:
            return
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())

    def _compaction_due(self) -> bool:
        if self._rewrite_due or (self._log_bytes and not self._ops):
            return True
        return self._log_bytes > _COMPACT_AFTER and self._log_bytes > 2 * self._live_bytes

    async def _flush(self, *, linger: float = _FLUSH_EVERY) -> None:
        """Write pending records in one hop per batch, gathering what arrives for ``linger``
        seconds first; rewrite the whole log instead when it is due for compaction."""
        file = self._file
        while file is not None and (self._pending or self._compaction_due()):
            if linger and not self._closed:
                await asyncio.sleep(linger)
            try:
                if self._compaction_due():
                    # The live operations (immutable) are encoded in the worker thread too: a
                    # journal of thousands of 1 KB writes takes milliseconds to encode.
                    live = list(self._ops.values())
                    self._pending.clear()
                    self._rewrite_due = False
                    self._log_bytes = await self._in_worker(file.rewrite_ops, live)
                else:
                    chunk = b"".join(self._pending)
                    self._pending.clear()
                    fresh = not self._log_bytes
                    self._log_bytes += await self._in_worker(file.append, chunk, fresh)
            except (OSError, TimeoutError) as exc:
                # The log may now end in a torn frame: the next flush rewrites it whole.
                self._rewrite_due = True
                self._disk_failed(exc)
                return
            if self.last_error is not None:
                logger.info("outage journal for %s is written to disk again", self.name)
                self.last_error = None

    def _disk_failed(self, exc: OSError | TimeoutError) -> None:
        if self.last_error is None:
            logger.warning(
                "outage journal for %s kept in memory only: %s: %s",
                self.name,
                type(exc).__name__,
                exc,
            )
        self.last_error = f"{type(exc).__name__}: {exc}"

    def describe(self) -> dict[str, Any]:
        """Plain data for ``health_check``."""
        return {
            "entries": len(self._ops),
            "max_entries": self.max_entries,
            "bytes": self._live_bytes,
            "max_bytes": self.max_bytes,
            "sets_dropped": self.sets_dropped,
            "pending_namespaces": sorted(self._marked),
            "clear_pending": self._cleared,
            "recorded": self.recorded,
            "replayed": self.replayed,
            "overtaken": self.overtaken,
            "overflows": self.overflows,
            "path": None if self.path is None else str(self.path),
            "last_error": self.last_error,
        }
