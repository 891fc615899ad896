"""Writing, replacing and deleting one file entry, each an atomic step other processes see whole.

A write goes to a unique temp file beside the entry, then takes the entry's name in one rename
(or one hard link, when it may only add): readers and concurrent writers of any process see a
whole old or a whole new entry, never a torn one. Folders are opened one by one without
following links (``file_tree``) and every file is reached relative to the last one, so nothing
lands outside the cache's tree. A replace or delete that fails withdraws the entry it found
(``file_withdrawal``), so that no other process serves the value it was replacing.
"""

from __future__ import annotations

import errno
import os
import secrets
import threading
from collections.abc import Callable, Sequence

from .file_entries import (
    NO_HARD_LINKS,
    entry_path,
    entry_place,
    read_entry,
    remove_quietly,
)
from .file_format import HEADER, MAGIC, TEMP_SUFFIX
from .file_ledger import Ledger
from .file_tree import O_NOFOLLOW, lexists_at, open_folder
from .file_withdrawal import expire_in_place, found_at, withdraw_at, withdraw_entries

__all__ = [
    "add_entry",
    "delete_entry",
    "entry_head",
    "publish_replacing",
    "write_entries",
    "write_entry",
    "write_new_file",
]

_O_NEW = os.O_WRONLY | os.O_CREAT | os.O_EXCL | O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


def write_entries(
    ledger: Ledger,
    folder: str,
    items: Sequence[tuple[str, bytes, float]],
    abandoned: threading.Event | None = None,
) -> None:
    """Write each ``(key, data, expires_at)`` over whatever entry the key has. The first
    failure ends the step: the rows after it are not tried, and their entries are withdrawn
    as the failed one's is (``file_withdrawal``) before the error is raised. Once its caller
    has given up on it (``abandoned``: it hung past the deadline), the step publishes nothing
    more: a late write would land over whatever was written since."""
    for index, (key, data, expires_at) in enumerate(items):
        path, head = entry_head(folder, key, data, expires_at)
        try:
            grown = write_entry(path, head, data, publish_replacing, abandoned)
        except OSError:
            if abandoned is None or not abandoned.is_set():  # else its caller withdrew them
                withdraw_entries(folder, [row[0] for row in items[index + 1 :]])
            raise
        ledger.wrote(grown or 0)  # never None: replacing always publishes


def add_entry(
    ledger: Ledger, folder: str, key: str, data: bytes, expires_at: float, now: float
) -> bool:
    """Write ``key`` only where no fresh entry is; True when written. The read drops an expired
    or broken file first; a writer that gets in between wins (os.link refuses to overwrite)."""
    if read_entry(ledger, folder, key, now) is not None:
        return False
    path, head = entry_head(folder, key, data, expires_at)
    grown = write_entry(path, head, data, publish_if_absent)
    if grown is None:
        return False
    ledger.wrote(grown)
    return True


def entry_head(folder: str, key: str, data: bytes, expires_at: float) -> tuple[str, bytes]:
    """The path of ``key``'s entry and the bytes that go before ``data`` in it."""
    path, key_bytes = entry_path(folder, key)
    return path, HEADER.pack(MAGIC, len(key_bytes), expires_at, len(data)) + key_bytes


def write_entry(
    path: str,
    head: bytes,
    data: bytes,
    publish: Callable[[str, str, int], int | None],
    abandoned: threading.Event | None = None,
) -> int | None:
    """Write a unique temp file beside ``path``, then ``publish`` it there in one atomic step:
    readers and concurrent writers see a whole old or a whole new entry, never a torn one.
    Returns the change in bytes, or None when nothing was published.

    The folders are opened one by one without following links (see ``file_tree``), and the
    file is written relative to the last one: nothing lands outside the cache's tree. A folder
    moved away meanwhile by an invalidate or clear (of any process) takes the write with it,
    which orders the write just before that call: valid for two concurrent calls (likewise
    when the folder is deleted from the trash under the write).

    A replacing write that fails withdraws the entry it found there before it started (never
    one written since): no process may serve the value this write was replacing. So does one
    whose caller gave up on it (``abandoned``) before it published.

    No fsync: this is a cache; a file torn by a crash fails the header check and is dropped.
    """
    base, parts, name = entry_place(path)
    try:
        folder = open_folder(base, parts, create=True)
    except FileNotFoundError:  # made, then moved away by an invalidate at once: as below
        return None
    assert folder is not None  # create=True makes what is missing
    temp = f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"
    try:
        # Adding never withdraws: it writes only where no fresh entry is.
        older = found_at(name, folder) if publish is publish_replacing else None
        try:
            write_new_file(temp, (head, data), folder)
            if abandoned is not None and abandoned.is_set():
                raise TimeoutError(errno.ETIMEDOUT, "the write's caller gave up on it", path)
            old_size = publish(temp, name, folder)
        except FileNotFoundError:
            # The folder (or our temp file in it) was deleted from the trash while we wrote:
            # the invalidate or clear that moved it there orders this write just before it,
            # and retrying could chase a stream of invalidations.
            remove_quietly(temp, folder)
            return None
        except OSError:
            remove_quietly(temp, folder)
            withdraw_at(folder, name, older)
            raise
        except BaseException:
            remove_quietly(temp, folder)
            raise
    finally:
        os.close(folder)
    return None if old_size is None else len(head) + len(data) - old_size


def publish_replacing(temp: str, name: str, folder: int) -> int:
    """Move ``temp`` over ``name``; returns the size of the entry it replaced (0 if none)."""
    try:
        old_size = os.stat(name, dir_fd=folder, follow_symlinks=False).st_size
    except FileNotFoundError:
        old_size = 0
    os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    return old_size


def publish_if_absent(temp: str, name: str, folder: int) -> int | None:
    """Give ``temp`` the name ``name`` unless that name exists; 0 when done, None when not."""
    try:
        # atomic, and fails with EEXIST instead of overwriting
        os.link(temp, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        published = False
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        # Without hard links: check, then replace; a narrow race instead of none.
        published = not lexists_at(name, folder)
        if published:
            os.replace(temp, name, src_dir_fd=folder, dst_dir_fd=folder)
    else:
        published = True
    remove_quietly(temp, folder)
    return 0 if published else None


def write_new_file(name: str, parts: Sequence[bytes], folder: int) -> None:
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


def delete_entry(ledger: Ledger, folder: str, key: str) -> bool:
    """Unlink ``key``'s file, reached through real folders only (a link on the way means
    nothing of ours is there). A folder that refuses the unlink gets the entry expired in place
    instead (``file_withdrawal``), so no process serves it; the refusal is still raised."""
    path, _ = entry_path(folder, key)
    base, parts, name = entry_place(path)
    subfolder = open_folder(base, parts, create=False)
    if subfolder is None:
        return False
    try:
        found = os.stat(name, dir_fd=subfolder, follow_symlinks=False)
        try:
            os.unlink(name, dir_fd=subfolder)
        except FileNotFoundError:
            raise
        except OSError:
            expire_in_place(subfolder, name, found)
            raise
    except FileNotFoundError:
        return False
    finally:
        os.close(subfolder)
    ledger.grow(-found.st_size)
    return True
