"""Withdrawing the older entry that a failed write or delete leaves, so no other process serves it.

This process keeps a key whose write or delete the file store missed from being served
(``resilience/missed_writes``); another process sharing the folder knows nothing of that and
would read the older entry still on disk. So a step that fails to replace or delete an entry
removes the entry it found before it started, only while the name still holds that very file:
an entry another process wrote meanwhile is newer and stays. A folder that refuses removal
(read-only, immutable) mostly still lets the file itself be written: the entry is then expired
in place (its header's ``expires_at`` set to 0), which every reader, listing and eviction
treats as gone. Only where the file cannot be written either (a read-only file system, a
read-only file) does the older entry stay readable to other processes: until its ttl ends or a
later write or delete of the key lands. An ``invalidate`` or ``clear`` whose folder refuses to
be moved expires the entries it covers the same way (``expire_tree``). The size estimate
catches up at the next scan.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

from .file_entries import discard_at, entry_path, entry_place, same_file
from .file_format import EXPIRES_AT, EXPIRES_AT_OFFSET
from .file_tree import O_NOFOLLOW, open_folder

__all__ = ["expire_in_place", "expire_tree", "found_at", "withdraw_at", "withdraw_entries"]

# O_NONBLOCK: a FIFO standing where an entry belongs never holds the step up.
_O_EXPIRE = os.O_WRONLY | O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
_EXPIRED = EXPIRES_AT.pack(0.0)


def found_at(name: str, folder: int) -> os.stat_result | None:
    """What stands at ``name`` in ``folder`` now (never through a link); None when nothing."""
    try:
        return os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None


def withdraw_at(folder: int, name: str, judged: os.stat_result | None) -> bool:
    """Make the entry ``judged`` (``name`` in ``folder``, as found before a step that failed)
    unservable to every process. True when it is (removed, expired, gone, or replaced since
    by a newer entry, which stays); False when it stays readable."""
    if judged is None:
        return True
    try:
        discard_at(folder, name, judged)  # removes it only while it is still that file
    except FileNotFoundError:
        return True
    except OSError:  # the folder refuses renames and unlinks: the file itself may take a write
        return expire_in_place(folder, name, judged)
    return True


def expire_in_place(folder: int, name: str, judged: os.stat_result | None) -> bool:
    """Set the ``expires_at`` of ``name`` (in ``folder``) to 0 when it is still the file
    ``judged`` (any file when None): True when done or when that file is gone, False when it
    cannot be written.
    The data stays as it was, so a reader racing the write sees the old entry or a miss."""
    try:
        fd = os.open(name, _O_EXPIRE, dir_fd=folder)
    except FileNotFoundError:
        return True
    except OSError:
        return False
    try:
        found = os.fstat(fd)
        if judged is not None and not same_file(found, judged):
            return True  # replaced since: the newer entry stays
        if found.st_size >= EXPIRES_AT_OFFSET + EXPIRES_AT.size:  # shorter: no entry anyway
            os.pwrite(fd, _EXPIRED, EXPIRES_AT_OFFSET)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def expire_tree(parent: int, name: str) -> None:
    """Expire in place every entry file below ``name`` (in ``parent``): a namespace folder
    that an ``invalidate`` or ``clear`` could not move into the trash. Links are never
    followed, temp files of writers in flight are left alone (they are not entries yet).
    Best effort, never raises: the refused move is what the caller hears."""
    with contextlib.suppress(OSError):
        walk = os.fwalk(name, topdown=True, follow_symlinks=False, dir_fd=parent)
        for _path, _dirs, files, folder in walk:
            for file in files:
                if not file.startswith("."):
                    expire_in_place(folder, file, None)


def withdraw_entries(folder: str, keys: Sequence[str]) -> None:
    """Withdraw whatever entry each of ``keys`` (in the namespace ``folder``) has now: the rows
    of a bulk write that a failure ended before they were written. Best effort, never raises:
    the write's own error is what its caller hears."""
    for key in keys:
        base, parts, name = entry_place(entry_path(folder, key)[0])
        with contextlib.suppress(OSError):
            subfolder = open_folder(base, parts, create=False)
            if subfolder is None:
                continue
            try:
                withdraw_at(subfolder, name, found_at(name, subfolder))
            finally:
                os.close(subfolder)
