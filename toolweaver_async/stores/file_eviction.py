"""Keeping the file store near ``max_bytes``: a scan that recounts, then eviction when over.

Every process shares the folder, so the size is recounted from disk (other processes' files
included) rather than trusted; stale temp files of writers that died and the trash's leftovers
go on the way. Over the bound, expired and broken entries go first (honouring expiry before
age), then the least recently modified, down to ``EVICT_DOWN_TO`` of the bound so that
eviction does not run on every write.
"""

from __future__ import annotations

import contextlib
import math
import os
import time

from .file_entries import remove_quietly
from .file_format import HEADER, MAGIC, O_READ, TEMP_SUFFIX
from .file_ledger import Ledger
from .file_trash import TRASH, empty_trash
from .file_tree import check_base, open_folder

__all__ = ["EVICT_DOWN_TO", "evict", "maintain", "scan"]

# A temp file this old (by its mtime) belongs to a writer that died; maintenance removes it.
_STALE_TEMP_SECONDS = 3600.0
# Eviction stops once the total is under this share of max_bytes, so it does not run per write.
EVICT_DOWN_TO = 0.9
_SEP = os.sep
# Header peeks during eviction never block on a FIFO standing where an entry belongs.
_O_PEEK = O_READ | getattr(os, "O_NONBLOCK", 0)


def maintain(ledger: Ledger, base: str, max_bytes: int, now: float) -> None:
    """Recount the bytes under ``base`` (other processes' files included), empty the trash,
    drop stale temp files; if over ``max_bytes``, remove expired or broken entries, then the
    least recently modified, until under ``EVICT_DOWN_TO * max_bytes``."""
    if not ledger.maintenance.acquire(blocking=False):
        return  # another thread (maybe a cancelled caller's) is already at it
    try:
        with contextlib.suppress(OSError):  # best effort, as in trash_folders
            trash = open_folder(base, (TRASH,), create=False)
            if trash is not None:
                try:
                    empty_trash(trash)
                finally:
                    os.close(trash)
        entries, total = scan(base)
        if total > max_bytes:
            total -= evict(ledger, base, entries, total, int(max_bytes * EVICT_DOWN_TO), now)
        with ledger.lock:
            ledger.size = total
    finally:
        ledger.maintenance.release()


# (mtime, size, folders below base, file name): an entry found by a scan, reached again
# later only through real folders (never by its full path, which a link could redirect).
Found = tuple[float, int, tuple[str, ...], str]


def scan(base: str) -> tuple[list[Found], int]:
    """Every entry under ``base``, and the total size including live temp files. Stale temp
    files are removed on the way, relative to the folder the walk really opened."""
    entries: list[Found] = []
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
            if name.startswith(".") and name.endswith(TEMP_SUFFIX):
                if stat.st_mtime < stale_before:
                    remove_quietly(name, fd)
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


def evict(
    ledger: Ledger, base: str, entries: list[Found], total: int, target: int, now: float
) -> int:
    """Remove entries until ``total`` is under ``target``: every expired or broken one first
    (one header read per file, the price of honouring expiry before age), then the oldest."""
    freed = expired = corrupt = evicted = 0
    keep: list[Found] = []
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
            header = os.read(fd, HEADER.size)
        finally:
            os.close(fd)
    except OSError:
        return math.inf  # gone, unreadable, a link: not ours to judge, leave it to age
    if len(header) != HEADER.size:
        return None
    magic, _key_len, expires_at, _data_len = HEADER.unpack(header)
    return float(expires_at) if magic == MAGIC else None


def _unlink(name: str, folder: int) -> bool:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        return False
    return True
