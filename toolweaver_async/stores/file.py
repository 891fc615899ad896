"""The file layer: one file per entry at ``<root>/<prefix>/<namespace>/<2 hex>/<hash>``.

``FileStore`` runs every operation as one plain synchronous step on a worker thread: writes and
deletes in the store's write lane, reads in its read lane (``file_lanes``: each on its own
thread, concurrent steps share a hop, a read never overtakes a write of its own entry), the long
ones (eviction, invalidate, clear) on a thread of their own, so that they never hold up a read.
All are daemon threads: a step hung on a dead mount never keeps the process from exiting. The
steps themselves live beside it, one concept each: where an entry lives and how it is read
(``file_entries``), written and deleted (``file_writes``), what a failed one leaves for other
processes (``file_withdrawal``), what a missed one left once the disk answers again
(``file_sweep``), invalidate and clear (``file_trash``), the size bound
(``file_eviction``), listing (``file_listing``). Nothing under ``<root>/<prefix>`` is reached
through a symbolic link (see ``file_tree``).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from ..config import MAX_TRACKED_NAMESPACES, CacheConfig, check_name
from ..errors import ConfigError, StoreError
from . import file_listing
from .base import EntryPage, StoreItem
from .file_entries import read_entries, read_entry
from .file_eviction import maintain
from .file_format import NEVER
from .file_lanes import FileLanes
from .file_ledger import Ledger
from .file_sweep import Swept, SweptNames, namespace_folders, sweep_entries, sweep_names
from .file_trash import trash_folders
from .file_tree import check_base
from .file_withdrawal import withdraw_entries
from .file_writes import (
    add_entry,
    delete_entry,
    entry_head,
    publish_replacing,
    write_entries,
    write_entry,
)
from .worker_lane import WorkerLane, in_daemon_thread

__all__ = ["FileStore"]

T = TypeVar("T")

# Errors with which a file system refuses a write at once while still serving reads.
_REFUSALS = frozenset(
    {errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
)
_REFUSABLE_STEPS = frozenset({"write", "delete"})

# Bulk calls (get_many, set_many) go to the lane in steps of at most this many entries: a step
# is what the lane's deadline bounds and what other callers may wait behind (a 1 KB write costs
# ~0.2 ms, so ~13 ms a step).
_ENTRIES_PER_STEP = 64


def _chunked(items: Sequence[T]) -> list[Sequence[T]]:
    return [items[i : i + _ENTRIES_PER_STEP] for i in range(0, len(items), _ENTRIES_PER_STEP)]


def _entries_touched(fn: Callable[..., Any], args: tuple[Any, ...]) -> Sequence[Any] | None:
    """The ``(folder, key)`` entries a write-lane step may change (see ``file_lanes``): none for
    reads and the probe, the rows of a bulk write, the one entry of a single-entry step (every
    one takes ``ledger, folder, key`` first: add, delete, a write-behind flush); None (any
    entry) for a step of another shape, which reads then queue behind."""
    if fn in _CHANGES_NOTHING:
        return ()
    if fn is write_entries:
        folder, rows = args[1], args[2]
        return [(folder, row[0]) for row in rows]
    if fn is withdraw_entries:
        folder, keys = args
        return [(folder, key) for key in keys]
    if fn is sweep_entries:
        folder, marks = args[1], args[2]
        return [(folder, mark[0]) for mark in marks]
    if len(args) >= 3 and type(args[0]) is Ledger and type(args[1]) is type(args[2]) is str:
        return ((args[1], args[2]),)
    return None


def _probe(base: str) -> None:
    """Whether the folder answers, by reading its metadata only: a read-only ``cache_dir`` is
    still a working store for reads, and a probe that wrote would trip its breaker (writes
    refused there are reported per call instead). A dead mount hangs here like anywhere."""
    check_base(base)


_CHANGES_NOTHING = frozenset(
    {
        read_entry,
        read_entries,
        _probe,
        file_listing.read_named_entries,
        file_listing.subfolders,
        file_listing.entry_names,
        namespace_folders,
    }
)

# The names other modules and tests imported from here before the steps moved out.
_NEVER = NEVER
_Ledger = Ledger
_write_entries = write_entries
_write_entry = write_entry
_entry_head = entry_head
_publish_replacing = publish_replacing
_delete_entry = delete_entry


# --- the store ------------------------------------------------------------------------------


class FileStore:
    """Entries as files under ``root/<key_prefix>``, bounded to about ``max_bytes``.

    Counters for the coordinator: ``corrupt_removed`` (broken or foreign files dropped),
    ``expired_removed``, ``evicted`` (dropped for space); ``approx_bytes`` is the size estimate.
    """

    name = "file"
    # Every disk step runs in a lane that fails it, and what waits behind it, once it has run
    # ``step_timeout`` without finishing (a hung disk); a backlog that keeps finishing steps is
    # not cut short, and is no failure of the disk. (No bound at all with ``step_timeout=None``.)
    bounds_calls: Final = True

    def __init__(
        self,
        *,
        root: Path,
        key_prefix: str,
        max_bytes: int = 1024 * 1024 * 1024,
        step_timeout: float | None = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        check_name(key_prefix, what="key_prefix")
        if not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigError(f"max_bytes must be a positive integer, got {max_bytes!r}")
        if step_timeout is not None and not step_timeout > 0:
            raise ConfigError(f"step_timeout must be None or > 0 seconds, got {step_timeout!r}")
        self.step_timeout = step_timeout
        self.root = Path(root)
        self.key_prefix = key_prefix
        self.max_bytes = max_bytes
        self.directory = self.root / key_prefix
        self._base = os.fspath(self.directory)
        self._clock = clock  # wall clock: expiry times are persisted and shared by processes
        self._folders: dict[str, str] = {}
        self._ledger = Ledger()
        self._lanes = FileLanes(deadline=step_timeout, touches=_entries_touched)
        # The withdrawal beside a hung write (see _withdraw_beside): one thread at most.
        self._withdrawal: asyncio.Future[None] | None = None

    @classmethod
    def from_config(
        cls, config: CacheConfig, *, clock: Callable[[], float] | None = None
    ) -> FileStore:
        """A store under ``config.cache_dir`` with its ``key_prefix`` and ``file_max_bytes``."""
        return cls(**cls._settings_of(config, clock))

    @staticmethod
    def _settings_of(config: CacheConfig, clock: Callable[[], float] | None) -> dict[str, Any]:
        """The constructor arguments ``config`` fixes for every file store."""
        return {
            "root": config.cache_dir,
            "key_prefix": config.key_prefix,
            "max_bytes": config.file_max_bytes,
            "step_timeout": config.file_timeout,
            "clock": clock if clock is not None else time.time,
        }

    @property
    def call_timeout(self) -> float | None:
        """The time budget of one disk step: ``step_timeout``."""
        return self.step_timeout

    @property
    def corrupt_removed(self) -> int:
        return self._ledger.corrupt_removed

    @property
    def corrupt_by_namespace(self) -> dict[str, int]:
        """Broken entry files (torn, foreign, another key's) that reads met, per namespace."""
        with self._ledger.lock:
            return dict(self._ledger.corrupt_read)

    @property
    def expired_removed(self) -> int:
        return self._ledger.expired_removed

    @property
    def evicted(self) -> int:
        return self._ledger.evicted

    @property
    def approx_bytes(self) -> int | None:
        """Estimated bytes under ``directory``; None before the first write's scan."""
        return self._ledger.size

    async def get(self, namespace: str, key: str) -> bytes | None:
        folder = self._folder(namespace)
        lane = self._lanes.for_reading(folder, (key,))
        return await self._in(lane, "read", read_entry, self._ledger, folder, key, self._clock())

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        folder = self._folder(namespace)
        now = self._clock()
        chunks: list[list[bytes | None]] = []
        for part in _chunked(keys):  # one step at a time, as in set_many
            lane = self._lanes.for_reading(folder, part)
            chunks.append(
                await self._in(lane, "read", read_entries, self._ledger, folder, part, now)
            )
        return chunks[0] if len(chunks) == 1 else [data for chunk in chunks for data in chunk]

    async def set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        await self.set_many(namespace, ((key, data, ttl),))

    async def add(self, namespace: str, key: str, data: bytes, ttl: float | None) -> bool:
        folder = self._folder(namespace)
        now = self._clock()
        expires_at = NEVER if ttl is None else now + ttl
        added = await self._step(
            "write", add_entry, self._ledger, folder, key, data, expires_at, now
        )
        if added:
            await self._keep_bounded()
        return added

    async def set_many(self, namespace: str, items: Sequence[StoreItem]) -> None:
        if not items:
            return
        folder = self._folder(namespace)
        now = self._clock()
        rows = [(key, data, NEVER if ttl is None else now + ttl) for key, data, ttl in items]
        parts = _chunked(rows)
        # One step at a time, not all queued at once: the lane is first come, first served,
        # and a set_many of thousands of entries must not hold up every other caller's read
        # for seconds. A read asked meanwhile waits for one step (64 entries) at most.
        abandoned = threading.Event()
        for index, part in enumerate(parts):
            try:
                await self._step("write", write_entries, self._ledger, folder, part, abandoned)
            except StoreError as exc:
                # No process may serve what the rows not written were replacing. A step that
                # failed withdrew its own from the failed row on; the steps after it never ran.
                rest = [row[0] for later in parts[index + 1 :] for row in later]
                if isinstance(exc.__cause__, TimeoutError):
                    # Hung (or refused behind a hung one): it publishes nothing more, and the
                    # lane is stuck behind it, so its rows and the rest go from another thread.
                    abandoned.set()
                    await self._withdraw_beside(folder, [row[0] for row in part] + rest)
                elif rest:
                    with contextlib.suppress(StoreError):  # best effort: the error is the news
                        await self._step("write", withdraw_entries, folder, rest)
                raise
        await self._keep_bounded()

    async def delete(self, namespace: str, key: str) -> bool:
        folder = self._folder(namespace)
        try:
            return await self._step("delete", delete_entry, self._ledger, folder, key)
        except StoreError as exc:
            if isinstance(exc.__cause__, TimeoutError):  # as in set_many
                await self._withdraw_beside(folder, [key])
            raise

    async def invalidate(self, namespace: str) -> None:
        self._folder(namespace)
        await self._run("invalidate", trash_folders, self._ledger, self._base, (namespace,))

    async def clear(self) -> None:
        await self._run("clear", trash_folders, self._ledger, self._base, None)

    async def sweep_missed(
        self,
        namespace: str,
        marks: Sequence[tuple[str, bytes | None, int]],
        current: Callable[[str], bool] | None = None,
    ) -> list[Swept]:
        """Withdraw, for every process, the entry of each marked ``(key, digest, mark time)``
        unless it may be served (see :mod:`.file_sweep`); up to ``_ENTRIES_PER_STEP`` keys a
        write-lane step, so reads and writes asked meanwhile wait for one step at most.

        A key is ``BUSY`` (left for a later sweep) when, as its step is asked, its mark no
        longer stands as judged (``current``: lifted or renewed by a write since) or a write of
        it asked earlier has not returned: its outcome, not the sweep, decides the mark."""
        folder = self._folder(namespace)
        judged: list[Swept] = []
        for part in _chunked(marks):
            lane = self._lane_here()
            ready = [
                mark
                for mark in part
                if (current is None or current(mark[0])) and not lane.busy_with((folder, mark[0]))
            ]
            # Asked in the same loop step as the check above: nothing slips in between.
            found = iter(
                await self._in(lane, "sweep", sweep_entries, self._ledger, folder, ready)
                if ready
                else ()
            )
            ready_keys = {mark[0] for mark in ready}
            judged += [next(found) if mark[0] in ready_keys else Swept.BUSY for mark in part]
        return judged

    async def sweep_namespace(self, namespace: str | None, at_ns: int) -> SweptNames | None:
        """Withdraw every entry of ``namespace`` (None: of every namespace) not written after
        ``at_ns``, one two-hex folder page a step; ``(withdrawn, kept, refused)``. None when
        it cannot be judged yet (see the write-behind store)."""
        if namespace is None:
            folders = await self._step("sweep", namespace_folders, self._base)
        else:
            folders = [self._folder(namespace)]
        totals = [0, 0, 0]
        for folder in folders:
            for subfolder in await self._step("sweep", file_listing.subfolders, folder):
                names = await self._step("sweep", file_listing.entry_names, subfolder)
                for part in _chunked(names):
                    counts = await self._step(
                        "sweep", sweep_names, self._ledger, subfolder, part, at_ns
                    )
                    totals = [total + count for total, count in zip(totals, counts, strict=True)]
        return (totals[0], totals[1], totals[2])

    async def ping(self) -> None:
        await self._step("write a probe file", _probe, self._base)

    async def aclose(self) -> None:
        """Stop the lanes' worker threads once their last hop is done (without waiting for it:
        a hop stuck on a dead mount must not hang the caller). No file stays open between
        calls. A store used after closing starts new threads."""
        self._lanes.close()

    async def list_entries(self, namespace: str, prefix: str) -> AsyncIterator[EntryPage]:
        """Each entry file of ``namespace`` read once (see :mod:`.file_listing`), one subfolder
        and at most ``_ENTRIES_PER_STEP`` files per worker step."""

        folder = self._folder(namespace)
        for subfolder in await self._run("list", file_listing.subfolders, folder):
            names = await self._run("list", file_listing.entry_names, subfolder)
            for part in _chunked(names):
                page = await self._step(
                    "list", file_listing.read_named_entries, subfolder, part, prefix, self._clock()
                )
                if page:
                    yield page

    async def _keep_bounded(self) -> None:
        """After a write: the first write scans (lazily, so constructing does no I/O); the write
        that crosses ``max_bytes`` evicts. Each pays one more hop; others skip while it runs."""
        ledger = self._ledger
        size = ledger.size
        if (size is None or size > self.max_bytes) and not ledger.maintenance.locked():
            await self._run("evict", maintain, ledger, self._base, self.max_bytes, self._clock())

    def _folder(self, namespace: str) -> str:
        folder = self._folders.get(namespace)
        if folder is None:
            check_name(namespace, what="namespace")  # no '/', '..' or '~trash'
            if len(self._folders) >= MAX_TRACKED_NAMESPACES:
                self._folders.clear()  # a memo, cheap to rebuild: bounded, not kept forever
            folder = self._folders[namespace] = os.path.join(self._base, namespace)
        return folder

    async def _step(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """A short step (one entry, or up to ``_ENTRIES_PER_STEP``) in this loop's write lane,
        bounded by ``step_timeout``."""
        return await self._in(self._lane_here(), what, fn, *args)

    async def _in(self, lane: WorkerLane, what: str, fn: Callable[..., T], *args: Any) -> T:
        try:
            result: T = await lane.run(fn, *args)
        except OSError as exc:  # TimeoutError included
            raise self._error(what, exc) from exc
        return result

    async def _withdraw_beside(self, folder: str, keys: list[str]) -> None:
        """Withdraw the entries of ``keys`` on a thread of their own, beside a write lane stuck
        on a hung step, waiting for it at most ``step_timeout`` more. At most one such thread:
        while the last one is stuck too, the disk is hung for this process and this is skipped
        (other processes' reads of it hang as well)."""
        last = self._withdrawal
        if last is not None and not last.done() and last.get_loop() is asyncio.get_running_loop():
            return
        self._withdrawal = asyncio.ensure_future(
            in_daemon_thread("toolweaver-file-withdraw", withdraw_entries, folder, keys)
        )
        await asyncio.wait([self._withdrawal], timeout=self.step_timeout)

    def _lane_here(self) -> WorkerLane:
        """This event loop's write lane (a store may serve one loop after another), on the
        store's writer thread, started at the first call; reads have a lane of their own."""
        return self._lanes.writes()

    async def _run(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """A long step (maintenance, invalidate, clear) in a hop of its own, unbounded."""
        try:
            result: T = await in_daemon_thread(f"toolweaver-long-{what}", fn, *args)
        except OSError as exc:
            raise self._error(what, exc) from exc
        return result

    def _error(self, what: str, exc: OSError) -> StoreError:
        """The one seam where OS errors become ``StoreError``. A write or delete the file
        system refused at once (read-only, full, no permission) is ``refused``: the store still
        serves reads, so its breaker must not open over it (the coordinator keeps the key's
        older entry from being served, see ``resilience/missed_writes.py``)."""
        refused = what in _REFUSABLE_STEPS and exc.errno in _REFUSALS
        return StoreError(
            f"file store could not {what} in {self._base}: {exc}", store="file", refused=refused
        )
