"""The outage journal (hinted handoff): writes that could not reach Redis, replayed when it is back.

While Redis is unreachable, every ``set``, ``delete``, ``invalidate`` and ``clear`` it missed is
kept here, latest wins: one operation per key (a newer write replaces an older one), an
invalidation of a namespace drops that namespace's earlier operations, a clear drops everything.
The journal keeps them in the order they happened and hands them back in that order for replay.

Until a key's operation has landed, Redis must not serve that key (it may hold an older value):
:meth:`OutageJournal.covers` answers that question with a dict lookup, and nothing at all while
the journal is empty.

**Bounded.** At most ``max_entries`` operations. When full, the namespace with the most journaled
keys is *poisoned*: its key operations are dropped and replaced by one invalidation of the
namespace, so Redis forgets every older value of it instead of serving one (a miss is always
safe, a stale hit is not). When only namespace invalidations are left, they collapse into one
clear; while a clear is pending, nothing else needs recording (Redis will hold nothing older).

**Persistent.** With a folder, the journal is an append-only log of msgpack records, each framed
by its length and CRC32, beside the file store (not inside its prefix folder, which ``clear``
empties). Records are written by one worker-thread hop per 10 ms of changes, never on the event
loop; a process that dies loses at most the records of its last 10 ms, and a torn tail is
ignored on load. The log is compacted (rewritten to the live operations, also in the worker
thread) when it grows past twice their size, and emptied when the journal drains. Each process
claims one slot file with an exclusive ``flock``, so processes sharing a cache folder keep
separate journals; opening also adopts the journals dead processes left in the other slots.

**Restarts.** A set loaded from disk is replayed as a *delete*: another process may have written
a newer value to Redis while this one was down, and a delete can never bring back an older value.
The written value itself is still in the file store beside the journal, and reads copy it back
into Redis. Loaded operations are then all removals, which commute, so journals of several dead
processes merge in any order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import struct
import threading
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeAlias

import msgspec

try:  # POSIX; elsewhere processes sharing a folder are not kept apart
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "JournalClear",
    "JournalDelete",
    "JournalInvalidate",
    "JournalOp",
    "JournalSet",
    "OutageJournal",
]

logger = logging.getLogger("toolweaver_async.journal")


class JournalSet(msgspec.Struct, tag="s", array_like=True, frozen=True):
    """Write ``data`` under ``key``; ``expires_at`` is wall-clock time (None: never)."""

    seq: int
    namespace: str
    key: str
    data: bytes
    expires_at: float | None


class JournalDelete(msgspec.Struct, tag="d", array_like=True, frozen=True):
    """Remove ``key``."""

    seq: int
    namespace: str
    key: str


class JournalInvalidate(msgspec.Struct, tag="i", array_like=True, frozen=True):
    """Make every entry of ``namespace`` unreadable (also how an overflowing namespace is
    poisoned)."""

    seq: int
    namespace: str


class JournalClear(msgspec.Struct, tag="c", array_like=True, frozen=True):
    """Remove every entry under the key prefix."""

    seq: int


class _Landed(msgspec.Struct, tag="l", array_like=True, frozen=True):
    """The operation numbered ``seq`` reached the store (log record only)."""

    seq: int


JournalOp: TypeAlias = JournalSet | JournalDelete | JournalInvalidate | JournalClear
_Record: TypeAlias = JournalOp | _Landed
# (namespace, key) for key operations, (namespace, None) for an invalidation, (None, None) clear.
_Slot: TypeAlias = tuple[str | None, str | None]

_CLEAR_SLOT: Final[_Slot] = (None, None)
_FRAME: Final = struct.Struct("<II")  # payload length, CRC32 of the payload
_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(_Record)
# Compaction waits until the log is this large and more than twice the live operations.
_COMPACT_AFTER: Final = 256 * 1024
_OP_OVERHEAD: Final = 32  # rough framing and field cost of one record, for the size estimate
SLOTS: Final = 16  # journal files per folder: at most this many processes keep theirs on disk
_UNBOUNDED: Final = 1 << 62
# Records are handed to the disk at most this often: one thread hop per 10 ms, not per write,
# so a journal under load does not crowd the file store out of the worker threads. A process
# that dies loses at most the records of its last 10 ms.
_FLUSH_EVERY: Final = 0.01


def _slot_of(op: JournalOp) -> _Slot:
    if isinstance(op, JournalSet | JournalDelete):
        return (op.namespace, op.key)
    if isinstance(op, JournalInvalidate):
        return (op.namespace, None)
    return _CLEAR_SLOT


def _size_of(op: JournalOp) -> int:
    if isinstance(op, JournalSet):
        return len(op.data) + len(op.key) + _OP_OVERHEAD
    if isinstance(op, JournalDelete):
        return len(op.key) + _OP_OVERHEAD
    return _OP_OVERHEAD


def _frame(record: _Record) -> bytes:
    payload = _ENCODER.encode(record)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def _unframe(content: bytes) -> tuple[list[_Record], bool]:
    """The records of a log, and whether it ended in a torn or damaged frame (ignored)."""
    records: list[_Record] = []
    offset, end = 0, len(content)
    while offset < end:
        if end - offset < _FRAME.size:
            return records, True
        length, crc = _FRAME.unpack_from(content, offset)
        start = offset + _FRAME.size
        payload = content[start : start + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            return records, True
        try:
            records.append(_DECODER.decode(payload))
        except msgspec.DecodeError:
            return records, True
        offset = start + length
    return records, False


def _storable(key: str) -> bool:
    """Keys with lone surrogates never reach Redis at all, so it can hold no old value of them."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class _JournalFile:
    """One claimed slot: ``<name>-<n>.jrnl`` plus its ``.lock``. Methods run in a worker thread;
    the thread lock keeps a cancelled caller's still-running hop from interleaving with the next."""

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.name = name
        self.path: Path | None = None
        self._lock_fd: int | None = None
        self._adopted: list[tuple[int, Path]] = []  # orphans, held until our log includes them
        self._io = threading.Lock()

    def claim(self) -> list[bytes]:
        """Lock the first free slot; return what a previous owner left in it, then what dead
        processes left in the other unlocked slots (adopted: emptied after the next rewrite)."""
        with self._io:
            self.folder.mkdir(parents=True, exist_ok=True)
            contents: list[bytes] = []
            for n in range(SLOTS if fcntl is not None else 1):
                fd = os.open(self.folder / f"{self.name}-{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:  # a live process's journal
                        os.close(fd)
                        continue
                path = self.folder / f"{self.name}-{n}.jrnl"
                try:
                    content = path.read_bytes()
                except FileNotFoundError:
                    content = b""
                if self.path is None:
                    self._lock_fd, self.path = fd, path
                    contents.append(content)
                elif content:
                    self._adopted.append((fd, path))
                    contents.append(content)
                else:
                    os.close(fd)
            if self.path is None:
                raise OSError(f"all {SLOTS} journal slots in {self.folder} are held")
            return contents

    def append(self, chunk: bytes) -> None:
        with self._io:
            assert self.path is not None
            with open(self.path, "ab") as file:
                file.write(chunk)

    def rewrite(self, chunk: bytes) -> None:
        """Replace the log in one atomic step: a reader sees the old or the new one whole."""
        with self._io:
            assert self.path is not None
            temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
            try:
                with open(temp, "xb") as file:
                    file.write(chunk)
                os.replace(temp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            # Our log now holds what we adopted: the orphans can go.
            for fd, path in self._adopted:
                with contextlib.suppress(OSError):
                    path.unlink()
                os.close(fd)
            self._adopted.clear()

    def rewrite_ops(self, ops: list[JournalOp]) -> int:
        """:meth:`rewrite` with the log of ``ops``; returns its size."""
        chunk = b"".join(_frame(op) for op in ops)
        self.rewrite(chunk)
        return len(chunk)

    def release(self) -> None:
        with self._io:
            for fd in [fd for fd, _ in self._adopted] + [self._lock_fd or -1]:
                if fd >= 0:
                    os.close(fd)  # closing drops the flock
            self._adopted.clear()
            self._lock_fd = None


async def _in_worker(fn: Callable[..., Any], *args: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, fn, *args)


class OutageJournal:
    """Operations one store missed, latest per key, in order, bounded, optionally on disk.

    ``clock`` is the wall clock the cache stamps entries with (expiry survives restarts).
    ``on_pending`` is called when the journal goes from empty to non-empty, so the owner can
    start replaying. Not thread-safe: one event loop owns it.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        clock: Callable[[], float],
        folder: Path | None = None,
        name: str = "redis",
    ) -> None:
        if not isinstance(max_entries, int) or max_entries < 1:
            raise ValueError(f"max_entries must be a positive integer, got {max_entries!r}")
        self.max_entries = max_entries
        self.name = name
        self.on_pending: Callable[[], None] | None = None
        self._clock = clock
        self._folder = folder
        self._ops: dict[_Slot, JournalOp] = {}  # insertion order is journal order
        self._keys_by_namespace: dict[str, set[str]] = {}
        self._marked: set[str] = set()  # namespaces with a pending invalidation
        self._cleared = False
        self._seq = 0
        self._live_bytes = 0
        self._slot_by_seq: dict[int, _Slot] = {}  # only while reading a log
        # counters for health_check
        self.recorded = 0
        self.replayed = 0
        self.overflows = 0  # times a full journal gave up writes for an invalidation or clear
        # disk
        self._file: _JournalFile | None = None
        self._pending: list[bytes] = []
        self._log_bytes = 0
        self._rewrite_due = False
        self._flusher: asyncio.Task[None] | None = None
        self.last_error: str | None = None
        self._closed = False

    # -- questions, asked on the hot path ------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ops)

    def __bool__(self) -> bool:
        return bool(self._ops)

    def covers(self, namespace: str, key: str) -> bool:
        """Does the store possibly hold an older value of ``key`` than the newest write?"""
        if not self._ops:
            return False
        return self._cleared or namespace in self._marked or (namespace, key) in self._ops

    def touches(self, namespace: str) -> bool:
        """Is any operation of ``namespace`` (or a clear) still to be replayed?"""
        if not self._ops:
            return False
        return self._cleared or namespace in self._marked or namespace in self._keys_by_namespace

    # -- recording -----------------------------------------------------------------------------

    def record_set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        """``data`` could not be written under ``key``; ``ttl`` as given to the store."""
        expires_at = None if ttl is None else self._clock() + ttl
        self._record(JournalSet(self._next_seq(), namespace, key, data, expires_at))

    def record_delete(self, namespace: str, key: str) -> None:
        self._record(JournalDelete(self._next_seq(), namespace, key))

    def record_invalidate(self, namespace: str) -> None:
        self._record(JournalInvalidate(self._next_seq(), namespace))

    def record_clear(self) -> None:
        self._record(JournalClear(self._next_seq()))

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _record(self, op: JournalOp) -> None:
        if isinstance(op, JournalSet | JournalDelete) and not _storable(op.key):
            return
        was_empty = not self._ops
        if self._apply(op):
            self.recorded += 1
            self._persist(op)
        if was_empty and self._ops and self.on_pending is not None:
            self.on_pending()

    def _apply(self, op: JournalOp) -> bool:
        """Put ``op`` into the journal with every supersession rule; False when it was not
        needed (a pending clear already covers it and there is no room)."""
        slot = _slot_of(op)
        if isinstance(op, JournalClear):
            self._reset()
        elif isinstance(op, JournalInvalidate):
            self._drop_namespace(op.namespace)
        else:
            self._remove(slot)
        if len(self._ops) >= self.max_entries and not self._make_room():
            return False
        self._ops[slot] = op
        self._live_bytes += _size_of(op)
        if isinstance(op, JournalSet | JournalDelete):
            self._keys_by_namespace.setdefault(op.namespace, set()).add(op.key)
        elif isinstance(op, JournalInvalidate):
            self._marked.add(op.namespace)
        else:
            self._cleared = True
        return True

    def _make_room(self) -> bool:
        """Free a slot without ever letting Redis serve a value older than a journaled write."""
        while len(self._ops) >= self.max_entries:
            if self._keys_by_namespace:
                namespace = max(
                    self._keys_by_namespace, key=lambda n: len(self._keys_by_namespace[n])
                )
                dropped = len(self._keys_by_namespace[namespace])
                self.overflows += 1
                logger.warning(
                    "outage journal for %s is full (%d entries): namespace %r (%d writes) will be "
                    "invalidated there on replay instead",
                    self.name,
                    self.max_entries,
                    namespace,
                    dropped,
                )
                self._drop_namespace(namespace)
                marker = JournalInvalidate(self._next_seq(), namespace)
                self._ops[(namespace, None)] = marker
                self._live_bytes += _size_of(marker)
                self._marked.add(namespace)
                self._persist(marker)
            elif not self._cleared:
                logger.warning(
                    "outage journal for %s is full of namespace invalidations: it will clear "
                    "the whole key prefix there on replay instead",
                    self.name,
                )
                self.overflows += 1
                self._reset()
                marker_clear = JournalClear(self._next_seq())
                self._ops[_CLEAR_SLOT] = marker_clear
                self._live_bytes += _size_of(marker_clear)
                self._cleared = True
                self._persist(marker_clear)
            else:
                self.overflows += 1
                return False  # only the clear is left: it already covers anything newer
        return True

    def _remove(self, slot: _Slot) -> JournalOp | None:
        op = self._ops.pop(slot, None)
        if op is None:
            return None
        self._live_bytes -= _size_of(op)
        if isinstance(op, JournalSet | JournalDelete):
            keys = self._keys_by_namespace[op.namespace]
            keys.discard(op.key)
            if not keys:
                del self._keys_by_namespace[op.namespace]
        elif isinstance(op, JournalInvalidate):
            self._marked.discard(op.namespace)
        else:
            self._cleared = False
        return op

    def _drop_namespace(self, namespace: str) -> None:
        for key in list(self._keys_by_namespace.get(namespace, ())):
            self._remove((namespace, key))
        self._remove((namespace, None))

    def _reset(self) -> None:
        self._ops.clear()
        self._keys_by_namespace.clear()
        self._marked.clear()
        self._cleared = False
        self._live_bytes = 0

    # -- replay --------------------------------------------------------------------------------

    def next_batch(
        self, *, max_ops: int = 64, max_deletes: int = 16, max_bytes: int = 256 * 1024
    ) -> list[JournalOp]:
        """The oldest operations to replay next, in order: one invalidation or clear on its own,
        or a run of key operations (they touch distinct keys, so any order among them is fine).

        Small batches: building a pipeline runs on the event loop (~5 us a command), so a
        replay of thousands of writes must not hold the loop for milliseconds at a time."""
        batch: list[JournalOp] = []
        size = deletes = 0
        for op in self._ops.values():
            if isinstance(op, JournalInvalidate | JournalClear):
                if not batch:
                    batch.append(op)
                break
            if isinstance(op, JournalDelete) or (
                op.expires_at is not None and op.expires_at <= self._clock()
            ):
                deletes += 1
            size += _size_of(op)
            batch.append(op)
            if len(batch) >= max_ops or deletes >= max_deletes or size >= max_bytes:
                break
        return batch

    def remaining_ttl(self, op: JournalSet) -> float | None:
        """Seconds ``op``'s value may still live; <= 0 means it expired while journaled, and
        must be replayed as a delete (the store may still hold an older, longer-lived value)."""
        return None if op.expires_at is None else op.expires_at - self._clock()

    def landed(self, ops: list[JournalOp]) -> None:
        """``ops`` reached the store: forget each one unless a newer write replaced it meanwhile."""
        for op in ops:
            slot = _slot_of(op)
            if self._ops.get(slot) is op:
                self._remove(slot)
                self.replayed += 1
                self._persist(_Landed(op.seq))

    # -- disk ----------------------------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The log file this process claimed, None while the journal lives in memory only."""
        return None if self._file is None else self._file.path

    async def open(self) -> None:
        """Claim a journal file and load what a previous run left in it (sets become deletes,
        see the module docstring). Without a folder, or when the disk fails, the journal stays
        in memory. Operations recorded before this call come after the loaded ones."""
        if self._folder is None or self._file is not None or self._closed:
            return
        file = _JournalFile(self._folder, self.name)
        try:
            contents: list[bytes] = await _in_worker(file.claim)
        except OSError as exc:
            self._disk_failed(exc)
            return
        self._file = file
        current = list(self._ops.values())
        self._reset()
        torn = False
        for content in contents:
            ops, torn_here = self._read_log(content)
            torn = torn or torn_here
            for op in ops:
                # Renumbered: seqs of different files collide. A set becomes a delete (module
                # doc); every loaded op is then a removal, and removals commute, so the files
                # may be merged in any order.
                if isinstance(op, JournalSet | JournalDelete):
                    self._apply(JournalDelete(self._next_seq(), op.namespace, op.key))
                elif isinstance(op, JournalInvalidate):
                    self._apply(JournalInvalidate(self._next_seq(), op.namespace))
                else:
                    self._apply(JournalClear(self._next_seq()))
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

    def _read_log(self, content: bytes) -> tuple[list[JournalOp], bool]:
        """The live operations of one log, in order (as its writer had them), and whether it
        ended in a torn frame."""
        records, torn = _unframe(content)
        log = OutageJournal(max_entries=_UNBOUNDED, clock=self._clock, name=self.name)
        for record in records:
            if isinstance(record, _Landed):
                slot = log._slot_by_seq.pop(record.seq, None)
                op = None if slot is None else log._ops.get(slot)
                if slot is not None and op is not None and op.seq == record.seq:
                    log._remove(slot)
            elif log._apply(record):
                log._slot_by_seq[record.seq] = _slot_of(record)
        return list(log._ops.values()), torn

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
            with contextlib.suppress(OSError):
                await _in_worker(self._file.release)

    def _persist(self, record: _Record) -> None:
        if self._file is None:
            return
        self._pending.append(_frame(record))
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
                    self._log_bytes = await _in_worker(file.rewrite_ops, live)
                else:
                    chunk = b"".join(self._pending)
                    self._pending.clear()
                    await _in_worker(file.append, chunk)
                    self._log_bytes += len(chunk)
            except OSError as exc:
                # The log may now end in a torn frame: the next flush rewrites it whole.
                self._rewrite_due = True
                self._disk_failed(exc)
                return
            if self.last_error is not None:
                logger.info("outage journal for %s is written to disk again", self.name)
                self.last_error = None

    def _disk_failed(self, exc: OSError) -> None:
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
            "pending_namespaces": sorted(self._marked),
            "clear_pending": self._cleared,
            "recorded": self.recorded,
            "replayed": self.replayed,
            "overflows": self.overflows,
            "path": None if self.path is None else str(self.path),
            "last_error": self.last_error,
        }
