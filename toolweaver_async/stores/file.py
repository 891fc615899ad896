"""The file layer: one file per entry at ``<root>/<prefix>/<namespace>/<2 hex>/<hash>``.

The file name is a hash of the key, so any key is safe and of any length; the file records the
full key, so a collision or a foreign file reads as a miss, never as someone else's value. Every
operation is one plain synchronous function run on a worker thread: writes and deletes in the
store's write lane, reads in its read lane (``file_lanes``: each on its own thread, concurrent
steps share a hop, a read never overtakes a write of its own entry), the long ones (eviction,
invalidate, clear) on a thread of their own, so that they never hold up a read. All are daemon
threads: a step hung on a dead mount never keeps the process from exiting.
Nothing under ``<root>/<prefix>`` is reached through a symbolic link (see ``file_tree``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import math
import os
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from ..config import MAX_TRACKED_NAMESPACES, OTHER_NAMESPACES, CacheConfig, check_name
from ..errors import ConfigError, StoreError
from . import file_listing
from .base import EntryPage, StoreItem
from .file_format import HEADER as _HEADER
from .file_format import MAGIC as _MAGIC
from .file_format import O_READ as _O_READ
from .file_format import TEMP_SUFFIX as _TEMP_SUFFIX
from .file_format import read_all as _read_all
from .file_lanes import FileLanes
from .file_tree import (
    O_NOFOLLOW,
    check_base,
    lexists_at,
    open_base,
    open_folder,
    remove_tree,
    walk_to,
)
from .worker_lane import WorkerLane, in_daemon_thread

__all__ = ["FileStore"]

T = TypeVar("T")

_NEVER = math.nan
# '~' is not allowed in namespace names (config.check_name), so no namespace can be the trash.
_TRASH = "~trash"
# A temp file this old (by its mtime) belongs to a writer that died; maintenance removes it.
_STALE_TEMP_SECONDS = 3600.0
# Eviction stops once the total is under this share of max_bytes, so it does not run per write.
_EVICT_DOWN_TO = 0.9
_TRASH_ATTEMPTS = 3
_SEP = os.sep
_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
# Header peeks during eviction never block on a FIFO standing where an entry belongs.
_O_PEEK = _O_READ | getattr(os, "O_NONBLOCK", 0)


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


class _Ledger:
    """Counters and the running size estimate. Worker threads write it (a cancelled caller's
    thread still finishes and must still count), hence the lock; the event loop only reads it."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        # Held by the one thread scanning or evicting. A thread lock, not an anyio.Lock: an
        # awaiting caller that is cancelled would release an anyio.Lock while its thread still runs.
        self.maintenance = threading.Lock()
        self.corrupt_removed = 0
        # Broken entries met by reads, per namespace, for the cache's stats(); at most
        # MAX_TRACKED_NAMESPACES names, the rest summed under OTHER_NAMESPACES.
        self.corrupt_read: dict[str, int] = {}
        self.expired_removed = 0
        self.evicted = 0
        self.size: int | None = None  # None until the first scan

    def count_corrupt_read(self, namespace: str) -> None:
        """One more broken entry read in ``namespace`` (call with ``lock`` held)."""
        counts = self.corrupt_read
        if namespace not in counts and len(counts) >= MAX_TRACKED_NAMESPACES:
            namespace = OTHER_NAMESPACES
        counts[namespace] = counts.get(namespace, 0) + 1

    def grow(self, delta: int) -> None:
        with self.lock:
            if self.size is not None:
                self.size = max(0, self.size + delta)

    def record(
        self, *, corrupt: int = 0, expired: int = 0, evicted: int = 0, freed: int = 0
    ) -> None:
        with self.lock:
            self.corrupt_removed += corrupt
            self.expired_removed += expired
            self.evicted += evicted
            if self.size is not None:
                self.size = max(0, self.size - freed)


# --- synchronous steps, each run whole in a worker thread ----------------------------------


def _entry_path(folder: str, key: str) -> tuple[str, bytes]:
    key_bytes = key.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(key_bytes, digest_size=20).hexdigest()
    return f"{folder}{_SEP}{digest[:2]}{_SEP}{digest}", key_bytes


def _entry_place(path: str) -> tuple[str, tuple[str, str], str]:
    """``(base, (namespace, two hex), file name)`` of an entry path made by ``_entry_path``."""
    subfolder, name = os.path.split(path)
    folder, hex2 = os.path.split(subfolder)
    base, namespace = os.path.split(folder)
    return base, (namespace, hex2), name


def _read_entries(
    ledger: _Ledger, folder: str, keys: Sequence[str], now: float
) -> list[bytes | None]:
    return [_read_entry(ledger, folder, key, now) for key in keys]


def _read_entry(ledger: _Ledger, folder: str, key: str, now: float) -> bytes | None:
    """The data stored under ``key``, or None. A file that is not a fresh entry of this very key
    (bad magic, torn, another key, expired) is removed in the same step.

    The file is opened relative to its folders, each opened with ``O_NOFOLLOW`` (``file_tree``):
    a namespace or two-hex folder swapped for a link is a miss, never a read of another tree.
    One ``os.read`` of the whole file, parsed in memory: a buffered file object and three
    reads cost ~2 us more, a tenth of a 1 KB file hit (measured, issue 5)."""
    path, key_bytes = _entry_path(folder, key)
    base, parts, name = _entry_place(path)
    try:
        subfolder = walk_to(base, parts)
    except NotADirectoryError:  # a stray file where the prefix folder belongs
        return None
    if subfolder is None:  # missing, or a link where a folder belongs: nothing of ours there
        return None
    try:
        return _read_entry_at(ledger, subfolder, folder, name, key_bytes, now)
    finally:
        os.close(subfolder)


def _read_entry_at(
    ledger: _Ledger, subfolder: int, folder: str, name: str, key_bytes: bytes, now: float
) -> bytes | None:
    try:
        fd = os.open(name, _O_READ, dir_fd=subfolder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        # A link where an entry belongs: never read through it; removed as a broken entry.
        _count_corrupt_read(ledger, folder)
        with contextlib.suppress(OSError):  # gone meanwhile: nothing to remove
            link = os.stat(name, dir_fd=subfolder, follow_symlinks=False)
            if _discard_quietly(subfolder, name, link):
                ledger.record(corrupt=1)
        return None
    try:
        raw = _read_all(fd)
        expired = False
        start = _HEADER.size + len(key_bytes)
        if len(raw) >= start:
            magic, key_len, expires_at, data_len = _HEADER.unpack_from(raw)
            ours = magic == _MAGIC and key_len == len(key_bytes)
            if ours and raw[_HEADER.size : start] == key_bytes:
                if expires_at <= now:  # NaN (never) compares False
                    expired = True
                elif len(raw) - start == data_len:
                    return raw[start:]
        judged = os.fstat(fd)
    finally:
        os.close(fd)
    if expired:
        if _discard_quietly(subfolder, name, judged):
            ledger.record(expired=1, freed=judged.st_size)
        return None
    _count_corrupt_read(ledger, folder)
    if _discard_quietly(subfolder, name, judged):
        ledger.record(corrupt=1, freed=judged.st_size)
    return None


def _discard_quietly(subfolder: int, name: str, judged: os.stat_result) -> bool:
    """:func:`_discard_at` as a best effort: a miss is already the right answer."""
    try:
        return _discard_at(subfolder, name, (judged.st_ino, judged.st_dev))
    except OSError:
        return False


def _count_corrupt_read(ledger: _Ledger, folder: str) -> None:
    with ledger.lock:  # the reader met a broken entry, whoever removes it
        ledger.count_corrupt_read(os.path.basename(folder))


def _discard_at(folder: int, name: str, judged: tuple[int, int]) -> bool:
    """Remove ``name`` (in ``folder``) only if it is still the very file we judged, never one
    a writer put there since (in this process or another): True when removed.

    A plain check-then-unlink leaves a gap in which a fresh entry could land and be deleted.
    So the file is first renamed aside (atomic), then checked; a fresh entry caught that way
    is linked back into place unless an even newer one has arrived meanwhile. Readers see a
    miss in between, never an older value.
    """
    current = os.stat(name, dir_fd=folder, follow_symlinks=False)
    if (current.st_ino, current.st_dev) != judged:
        return False  # replaced since: the common race, settled without touching it
    grave = f".{name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"  # swept by maintenance if we die
    os.rename(name, grave, src_dir_fd=folder, dst_dir_fd=folder)
    moved = os.stat(grave, dir_fd=folder, follow_symlinks=False)
    if (moved.st_ino, moved.st_dev) == judged:
        os.unlink(grave, dir_fd=folder)
        return True
    # A writer replaced the entry between the check and the rename: put its file back,
    # unless a newer one already took the name.
    try:
        os.link(grave, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        if not lexists_at(name, folder):  # without hard links: a narrow race instead of none
            os.rename(grave, name, src_dir_fd=folder, dst_dir_fd=folder)
            return False
    _remove_quietly(grave, folder)
    return False


def _write_entries(ledger: _Ledger, folder: str, items: Sequence[tuple[str, bytes, float]]) -> None:
    for key, data, expires_at in items:
        path, head = _entry_head(folder, key, data, expires_at)
        grown = _write_entry(path, head, data, _publish_replacing)
        ledger.grow(grown or 0)  # never None: replacing always publishes


def _add_entry(
    ledger: _Ledger, folder: str, key: str, data: bytes, expires_at: float, now: float
) -> bool:
    """Write ``key`` only where no fresh entry is; True when written. The read drops an expired
    or broken file first; a writer that gets in between wins (os.link refuses to overwrite)."""
    if _read_entry(ledger, folder, key, now) is not None:
        return False
    path, head = _entry_head(folder, key, data, expires_at)
    grown = _write_entry(path, head, data, _publish_if_absent)
    if grown is None:
        return False
    ledger.grow(grown)
    return True


def _entry_head(folder: str, key: str, data: bytes, expires_at: float) -> tuple[str, bytes]:
    path, key_bytes = _entry_path(folder, key)
    return path, _HEADER.pack(_MAGIC, len(key_bytes), expires_at, len(data)) + key_bytes


def _write_entry(
    path: str, head: bytes, data: bytes, publish: Callable[[str, str, int], int | None]
) -> int | None:
    """Write a unique temp file beside ``path``, then ``publish`` it there in one atomic step:
    readers and concurrent writers see a whole old or a whole new entry, never a torn one.
    Returns the change in bytes, or None when nothing was published.

    The folders are opened one by one without following links (see ``file_tree``), and the
    file is written relative to the last one: nothing lands outside the cache's tree. A folder
    moved away meanwhile by an invalidate or clear (of any process) takes the write with it,
    which orders the write just before that call: valid for two concurrent calls (likewise
    when the folder is deleted from the trash under the write).

    No fsync: this is a cache; a file torn by a crash fails the header check and is dropped.
    """
    base, parts, name = _entry_place(path)
    try:
        folder = open_folder(base, parts, create=True)
    except FileNotFoundError:  # made, then moved away by an invalidate at once: as below
        return None
    assert folder is not None  # create=True makes what is missing
    temp = f".{name}.{secrets.token_hex(6)}{_TEMP_SUFFIX}"
    try:
        try:
            _write_new_file(temp, (head, data), folder)
            old_size = publish(temp, name, folder)
        except FileNotFoundError:
            # The folder (or our temp file in it) was deleted from the trash while we wrote:
            # the invalidate or clear that moved it there orders this write just before it,
            # and retrying could chase a stream of invalidations.
            _remove_quietly(temp, folder)
            return None
        except BaseException:
            _remove_quietly(temp, folder)
            raise
    finally:
        os.close(folder)
    return None if old_size is None else len(head) + len(data) - old_size


def _publish_replacing(temp: str, name: str, folder: int) -> int:
    """Move ``temp`` over ``name``; returns the size of the entry it replaced (0 if none)."""
    try:
        old_size = os.stat(name, dir_fd=folder, follow_symlinks=False).st_size
    except FileNotFoundError:
        old_size = 0
    os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    return old_size


# Errors of link() on filesystems without hard links (FAT, some network and FUSE mounts).
_NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})


def _publish_if_absent(temp: str, name: str, folder: int) -> int | None:
    """Give ``temp`` the name ``name`` unless that name exists; 0 when done, None when not."""
    try:
        # atomic, and fails with EEXIST instead of overwriting
        os.link(temp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        published = False
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # Without hard links: check, then replace; a narrow race instead of none.
        published = not lexists_at(name, folder)
        if published:
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    else:
        published = True
    _remove_quietly(temp, folder)
    return 0 if published else None


def _write_new_file(name: str, parts: Sequence[bytes], folder: int) -> None:
    """A new file (O_EXCL: never someone else's temp file; O_NOFOLLOW: never through a link)."""
    fd = os.open(name, _O_NEW, 0o666, dir_fd=folder)
    try:
        # Eviction goes by mtime. Linux (6.13+, multigrain timestamps) stamps a write with the
        # coarse clock (ticks of ~4 ms) unless the file's times were looked at since its last
        # change; this look makes entries written in one tick keep their order.
        os.fstat(fd)
        for part in parts:
            view = memoryview(part)
            while view:
                view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _remove_quietly(name: str, folder: int | None = None) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=folder)


def _delete_entry(ledger: _Ledger, folder: str, key: str) -> bool:
    """Unlink ``key``'s file, reached through real folders only (a link on the way means
    nothing of ours is there)."""
    path, _ = _entry_path(folder, key)
    base, parts, name = _entry_place(path)
    subfolder = open_folder(base, parts, create=False)
    if subfolder is None:
        return False
    try:
        size = os.stat(name, dir_fd=subfolder, follow_symlinks=False).st_size
        os.unlink(name, dir_fd=subfolder)
    except FileNotFoundError:
        return False
    finally:
        os.close(subfolder)
    ledger.grow(-size)
    return True


def _trash_folders(ledger: _Ledger, base: str, names: Sequence[str] | None) -> None:
    """Rename each namespace folder (all of them when ``names`` is None) into the trash, which
    hides all its entries from every process in one atomic step, then delete what was moved.
    Everything happens relative to descriptors of real folders: a link in the tree is moved
    and removed as a link, never followed.

    Hiding is the promise, so only its errors are raised; deleting is housekeeping, and what a
    failure leaves behind goes with the next clear or maintenance pass.
    """
    top = open_base(base, create=False)
    if top is None:
        return
    trash: int | None = None
    try:
        if names is None:
            names = [name for name in os.listdir(top) if name != _TRASH]
            with contextlib.suppress(OSError):  # leftovers of a crashed process
                trash = open_folder(base, (_TRASH,), create=True)
                if trash is not None:
                    ledger.grow(-_empty_trash(trash))
        moved: list[str] = []
        for name in names:
            if not lexists_at(name, top):
                continue
            if trash is None:
                trash = open_folder(base, (_TRASH,), create=True)
            assert trash is not None
            target = _move_to_trash(top, trash, name)
            if target is not None:
                moved.append(target)
        for target in moved:
            assert trash is not None
            with contextlib.suppress(OSError):
                ledger.grow(-remove_tree(trash, target))
    finally:
        os.close(top)
        if trash is not None:
            os.close(trash)


# Renames tried when the folder to move was replaced between our rename and our look.
_MOVE_ATTEMPTS = 3


def _move_to_trash(top: int, trash: int, name: str) -> str | None:
    """Rename ``name`` (in ``top``) into ``trash``; its new name, or None when there was
    nothing. The trash is held open, so another process emptying it cannot pull it away."""
    target = f"{name}-{secrets.token_hex(6)}"
    for attempt in range(_MOVE_ATTEMPTS):
        try:
            os.rename(name, target, src_dir_fd=top, dst_dir_fd=trash)
        except FileNotFoundError:
            if not lexists_at(name, top):
                return None
            # Moved away by a concurrent invalidate or clear (of any process) and made again
            # by a racing write before we looked: move the new one. A trash that is gone
            # fails every time and is raised.
            if attempt == _MOVE_ATTEMPTS - 1:
                raise
            continue
        return target
    raise AssertionError("unreachable")


def _empty_trash(trash: int) -> int:
    """Delete everything in the trash but the folder itself, which a concurrent invalidate may be
    renaming into right now; returns bytes freed."""
    return sum(remove_tree(trash, name) for name in os.listdir(trash))


def _maintain(ledger: _Ledger, base: str, max_bytes: int, now: float) -> None:
    """Recount the bytes under ``base`` (other processes' files included), empty the trash,
    drop stale temp files; if over ``max_bytes``, remove expired or broken entries, then the
    least recently modified, until under ``_EVICT_DOWN_TO * max_bytes``."""
    if not ledger.maintenance.acquire(blocking=False):
        return  # another thread (maybe a cancelled caller's) is already at it
    try:
        with contextlib.suppress(OSError):  # best effort, as in _trash_folders
            trash = open_folder(base, (_TRASH,), create=False)
            if trash is not None:
                try:
                    _empty_trash(trash)
                finally:
                    os.close(trash)
        entries, total = _scan(base)
        if total > max_bytes:
            total -= _evict(ledger, base, entries, total, int(max_bytes * _EVICT_DOWN_TO), now)
        with ledger.lock:
            ledger.size = total
    finally:
        ledger.maintenance.release()


# (mtime, size, folders below base, file name): an entry found by a scan, reached again
# later only through real folders (never by its full path, which a link could redirect).
_Found = tuple[float, int, tuple[str, ...], str]


def _scan(base: str) -> tuple[list[_Found], int]:
    """Every entry under ``base``, and the total size including live temp files. Stale temp
    files are removed on the way, relative to the folder the walk really opened."""
    entries: list[_Found] = []
    total = 0
    stale_before = time.time() - _STALE_TEMP_SECONDS  # file times are real wall-clock times
    check_base(base)
    # fwalk(follow_symlinks=False): never into a link, not even when base itself is one
    for folder, _dirs, files, fd in os.fwalk(base, follow_symlinks=False):
        below = os.path.relpath(folder, base)
        parts = () if below == os.curdir else tuple(below.split(_SEP))
        for name in files:
            try:
                stat = os.stat(name, dir_fd=fd, follow_symlinks=False)
            except OSError:  # gone since listed, or unreadable: not counted, not evicted
                continue
            if name.startswith(".") and name.endswith(_TEMP_SUFFIX):
                if stat.st_mtime < stale_before:
                    _remove_quietly(name, fd)
                    continue
            else:
                entries.append((stat.st_mtime, stat.st_size, parts, name))
            total += stat.st_size
    return entries, total


class _Folders:
    """Opens the folders of scanned entries again, each step without following a link (a link
    swapped in since the scan is refused, never deleted through), keeping the last one open:
    a scan lists a folder's entries together."""

    def __init__(self, base: str) -> None:
        self._base = base
        self._parts: tuple[str, ...] | None = None
        self._fd: int | None = None

    def open(self, parts: tuple[str, ...]) -> int | None:
        if parts != self._parts:
            self.close()
            self._parts = parts
            with contextlib.suppress(OSError):  # gone or refused: nothing of ours to remove
                self._fd = open_folder(self._base, parts, create=False)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
        self._fd = self._parts = None


def _evict(
    ledger: _Ledger, base: str, entries: list[_Found], total: int, target: int, now: float
) -> int:
    """Remove entries until ``total`` is under ``target``: every expired or broken one first
    (one header read per file, the price of honouring expiry before age), then the oldest."""
    freed = expired = corrupt = evicted = 0
    keep: list[_Found] = []
    folders = _Folders(base)
    try:
        for entry in entries:
            folder = folders.open(entry[2])
            if folder is None:
                continue
            expires_at = _peek_expiry(entry[3], folder)
            if expires_at is not None and not expires_at <= now:
                keep.append(entry)
            elif _unlink(entry[3], folder):
                freed += entry[1]
                if expires_at is None:
                    corrupt += 1
                else:
                    expired += 1
        keep.sort()
        for _mtime, size, parts, name in keep:
            if total - freed <= target:
                break
            folder = folders.open(parts)
            if folder is not None and _unlink(name, folder):
                freed += size
                evicted += 1
    finally:
        folders.close()
    ledger.record(corrupt=corrupt, expired=expired, evicted=evicted)
    return freed


def _peek_expiry(name: str, folder: int) -> float | None:
    """``expires_at`` recorded in the header of ``name`` (in ``folder``); None when it is not
    one of our entries."""
    try:
        fd = os.open(name, _O_PEEK, dir_fd=folder)
        try:
            header = os.read(fd, _HEADER.size)
        finally:
            os.close(fd)
    except OSError:
        return math.inf  # gone, unreadable, a link: not ours to judge, leave it to age
    if len(header) != _HEADER.size:
        return None
    magic, _key_len, expires_at, _data_len = _HEADER.unpack(header)
    return float(expires_at) if magic == _MAGIC else None


def _unlink(name: str, folder: int) -> bool:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        return False
    return True


def _entries_touched(fn: Callable[..., Any], args: tuple[Any, ...]) -> Sequence[Any] | None:
    """The ``(folder, key)`` entries a write-lane step may change (see ``file_lanes``): none for
    reads and the probe, the rows of a bulk write, the one entry of a single-entry step (every
    one takes ``ledger, folder, key`` first: add, delete, a write-behind flush); None (any
    entry) for a step of another shape, which reads then queue behind."""
    if fn in _CHANGES_NOTHING:
        return ()
    if fn is _write_entries:
        folder, rows = args[1], args[2]
        return [(folder, row[0]) for row in rows]
    if len(args) >= 3 and type(args[0]) is _Ledger and type(args[1]) is type(args[2]) is str:
        return ((args[1], args[2]),)
    return None


def _probe(base: str) -> None:
    """Whether the folder answers, by reading its metadata only: a read-only ``cache_dir`` is
    still a working store for reads, and a probe that wrote would trip its breaker (writes
    refused there are reported per call instead). A dead mount hangs here like anywhere."""
    check_base(base)


_CHANGES_NOTHING = frozenset({_read_entry, _read_entries, _probe, file_listing.read_named_entries})


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
        self._ledger = _Ledger()
        self._lanes = FileLanes(deadline=step_timeout, touches=_entries_touched)

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
        return await self._in(lane, "read", _read_entry, self._ledger, folder, key, self._clock())

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        folder = self._folder(namespace)
        now = self._clock()
        chunks: list[list[bytes | None]] = []
        for part in _chunked(keys):  # one step at a time, as in _steps
            lane = self._lanes.for_reading(folder, part)
            chunks.append(
                await self._in(lane, "read", _read_entries, self._ledger, folder, part, now)
            )
        return chunks[0] if len(chunks) == 1 else [data for chunk in chunks for data in chunk]

    async def set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        await self.set_many(namespace, ((key, data, ttl),))

    async def add(self, namespace: str, key: str, data: bytes, ttl: float | None) -> bool:
        folder = self._folder(namespace)
        now = self._clock()
        expires_at = _NEVER if ttl is None else now + ttl
        added = await self._step(
            "write", _add_entry, self._ledger, folder, key, data, expires_at, now
        )
        if added:
            await self._keep_bounded()
        return added

    async def set_many(self, namespace: str, items: Sequence[StoreItem]) -> None:
        if not items:
            return
        folder = self._folder(namespace)
        now = self._clock()
        rows = [(key, data, _NEVER if ttl is None else now + ttl) for key, data, ttl in items]
        calls = [(self._ledger, folder, part) for part in _chunked(rows)]
        await self._steps("write", _write_entries, calls)
        await self._keep_bounded()

    async def delete(self, namespace: str, key: str) -> bool:
        folder = self._folder(namespace)
        return await self._step("delete", _delete_entry, self._ledger, folder, key)

    async def invalidate(self, namespace: str) -> None:
        self._folder(namespace)
        await self._run("invalidate", _trash_folders, self._ledger, self._base, (namespace,))

    async def clear(self) -> None:
        await self._run("clear", _trash_folders, self._ledger, self._base, None)

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
            await self._run("evict", _maintain, ledger, self._base, self.max_bytes, self._clock())

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

    async def _steps(
        self, what: str, fn: Callable[..., T], calls: Sequence[tuple[Any, ...]]
    ) -> list[T]:
        """``fn`` once per argument tuple, one step after the other; the first error ends the
        call. One at a time, not all queued at once: the lane is first come, first served, and
        a ``set_many`` of thousands of entries must not hold up every other caller's read for
        seconds. A read asked meanwhile waits for one step (64 entries) at most."""
        return [await self._step(what, fn, *args) for args in calls]

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
