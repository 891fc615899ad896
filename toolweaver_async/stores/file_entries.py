"""Where a file entry lives, how a read finds it, and how a file judged broken is removed.

An entry of ``key`` is the file ``<folder>/<2 hex>/<hash>``, the hash being of the key, so any
key is safe and of any length; the file records the full key, so a collision or a foreign file
reads as a miss, never as someone else's value. A read removes what it finds that is not a
fresh entry of its key, but only that very file (:func:`discard_at`): never one a writer put
there since, in this process or another.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import secrets
from collections.abc import Sequence

from .file_format import HEADER, MAGIC, O_READ, TEMP_SUFFIX, read_all
from .file_ledger import Ledger
from .file_tree import lexists_at, walk_to

__all__ = [
    "NO_HARD_LINKS",
    "discard_at",
    "discard_quietly",
    "entry_path",
    "entry_place",
    "read_entries",
    "read_entry",
    "remove_quietly",
    "same_file",
]

_SEP = os.sep
# Errors of link() on filesystems without hard links (FAT, some network and FUSE mounts).
NO_HARD_LINKS = frozenset({errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EMLINK})


def entry_path(folder: str, key: str) -> tuple[str, bytes]:
    """The path of ``key``'s entry in the namespace ``folder``, and the key as recorded."""
    key_bytes = key.encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(key_bytes, digest_size=20).hexdigest()
    return f"{folder}{_SEP}{digest[:2]}{_SEP}{digest}", key_bytes


def entry_place(path: str) -> tuple[str, tuple[str, str], str]:
    """``(base, (namespace, two hex), file name)`` of an entry path made by ``entry_path``."""
    subfolder, name = os.path.split(path)
    folder, hex2 = os.path.split(subfolder)
    base, namespace = os.path.split(folder)
    return base, (namespace, hex2), name


def read_entries(
    ledger: Ledger, folder: str, keys: Sequence[str], now: float
) -> list[bytes | None]:
    return [read_entry(ledger, folder, key, now) for key in keys]


def read_entry(ledger: Ledger, folder: str, key: str, now: float) -> bytes | None:
    """The data stored under ``key``, or None. A file that is not a fresh entry of this very key
    (bad magic, torn, another key, expired) is removed in the same step.

    The file is opened relative to its folders, each opened with ``O_NOFOLLOW`` (``file_tree``):
    a namespace or two-hex folder swapped for a link is a miss, never a read of another tree.
    One ``os.read`` of the whole file, parsed in memory: a buffered file object and three
    reads cost ~2 us more, a tenth of a 1 KB file hit (measured)."""
    path, key_bytes = entry_path(folder, key)
    base, parts, name = entry_place(path)
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
    ledger: Ledger, subfolder: int, folder: str, name: str, key_bytes: bytes, now: float
) -> bytes | None:
    try:
        fd = os.open(name, O_READ, dir_fd=subfolder)
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        # A link where an entry belongs: never read through it; removed as a broken entry.
        _count_corrupt_read(ledger, folder)
        with contextlib.suppress(OSError):  # gone meanwhile: nothing to remove
            link = os.stat(name, dir_fd=subfolder, follow_symlinks=False)
            if discard_quietly(subfolder, name, link):
                ledger.record(corrupt=1)
        return None
    try:
        raw = read_all(fd)
        expired = False
        start = HEADER.size + len(key_bytes)
        if len(raw) >= start:
            magic, key_len, expires_at, data_len = HEADER.unpack_from(raw)
            ours = magic == MAGIC and key_len == len(key_bytes)
            if ours and raw[HEADER.size : start] == key_bytes:
                if expires_at <= now:  # NaN (never) compares False
                    expired = True
                elif len(raw) - start == data_len:
                    return raw[start:]
        judged = os.fstat(fd)
    finally:
        os.close(fd)
    if expired:
        if discard_quietly(subfolder, name, judged):
            ledger.record(expired=1, freed=judged.st_size)
        return None
    _count_corrupt_read(ledger, folder)
    if discard_quietly(subfolder, name, judged):
        ledger.record(corrupt=1, freed=judged.st_size)
    return None


def discard_quietly(subfolder: int, name: str, judged: os.stat_result) -> bool:
    """:func:`discard_at` as a best effort: a miss is already the right answer."""
    try:
        return discard_at(subfolder, name, judged)
    except OSError:
        return False


def _count_corrupt_read(ledger: Ledger, folder: str) -> None:
    with ledger.lock:  # the reader met a broken entry, whoever removes it
        ledger.count_corrupt_read(os.path.basename(folder))


def same_file(found: os.stat_result, judged: os.stat_result) -> bool:
    """Whether ``found`` is the very file ``judged`` was, not a later one. The inode number
    alone is not enough: a file system hands a freed one to the next new file at once (an
    entry removed, then written again by another process). Its size and modification time
    go with it (a rename changes neither; two entries alike in all four would have to be
    written within one clock tick)."""
    return (
        found.st_ino == judged.st_ino
        and found.st_dev == judged.st_dev
        and found.st_size == judged.st_size
        and found.st_mtime_ns == judged.st_mtime_ns
    )


def discard_at(folder: int, name: str, judged: os.stat_result) -> bool:
    """Remove ``name`` (in ``folder``) only if it is still the very file we judged, never one
    a writer put there since (in this process or another): True when removed.

    A plain check-then-unlink leaves a gap in which a fresh entry could land and be deleted.
    So the file is first renamed aside (atomic), then checked; a fresh entry caught that way
    is linked back into place unless an even newer one has arrived meanwhile. Readers see a
    miss in between, never an older value.
    """
    current = os.stat(name, dir_fd=folder, follow_symlinks=False)
    if not same_file(current, judged):
        return False  # replaced since: the common race, settled without touching it
    grave = f".{name}.{secrets.token_hex(6)}{TEMP_SUFFIX}"  # swept by maintenance if we die
    os.rename(name, grave, src_dir_fd=folder, dst_dir_fd=folder)
    moved = os.stat(grave, dir_fd=folder, follow_symlinks=False)
    if same_file(moved, judged):
        os.unlink(grave, dir_fd=folder)
        return True
    # A writer replaced the entry between the check and the rename: put its file back,
    # unless a newer one already took the name.
    try:
        os.link(grave, name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
    except FileExistsError:
        pass
    except OSError as exc:
        if exc.errno not in NO_HARD_LINKS:
            raise
        if not lexists_at(name, folder):  # without hard links: a narrow race instead of none
            os.rename(grave, name, src_dir_fd=folder, dst_dir_fd=folder)
            return False
    remove_quietly(grave, folder)
    return False


def remove_quietly(name: str, folder: int | None = None) -> None:
    with contextlib.suppress(OSError):
        os.unlink(name, dir_fd=folder)
