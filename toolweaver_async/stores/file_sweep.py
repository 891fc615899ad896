"""Withdrawing, once the disk answers again, the entries of keys whose writes the store missed.

A write or delete skipped while the file store's breaker was open never touched the disk: the
entry it was replacing is still there, and another process sharing the folder (which knows
nothing of this process's missed-writes marks) would serve it. So when the store is reachable
again, each marked key's entry is judged and, unless it may be served, withdrawn for every
process (``file_withdrawal``: removed only while it is still the very file judged, else expired
in place). An entry may be served when it holds exactly the bytes the missed write carried (it
landed late), or when it was written after the mark: its modification time is later than both
the mark and this process's latest publish (``Ledger.published_ns``: an older write of this
process still landing after the mark is older than it, whatever its time). Times are compared on
the wall clock the kernel stamps files with, so on one machine an entry older than the mark is
never taken for a newer one; a folder shared over the network whose server clock runs ahead of
this machine's could make one look newer by that skew.

These are steps for the store's write lane: each runs after every write this process asked
before it, and none of this process's writes runs beside it. Nothing is reached through a link
(``file_tree``); a link or other non-entry where an entry belongs is withdrawn like an entry.
"""

from __future__ import annotations

import enum
import os
import stat
from collections.abc import Sequence

from ..resilience.missed_writes import digest as digest_of
from .file_entries import entry_path, entry_place
from .file_format import HEADER, MAGIC, O_READ, TEMP_SUFFIX, read_all
from .file_ledger import Ledger
from .file_tree import open_base, open_folder
from .file_withdrawal import found_at, withdraw_at

__all__ = ["Swept", "SweptNames", "namespace_folders", "sweep_entries", "sweep_names"]

# O_NONBLOCK: a FIFO standing where an entry belongs never holds the step up.
_O_JUDGE = O_READ | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)


class Swept(enum.Enum):
    """What the sweep found for one marked key; all but REFUSED and BUSY lift the mark."""

    ABSENT = "absent"  # no entry there: nothing older can be served
    WITHDRAWN = "withdrawn"  # the older entry removed, or expired in place
    LANDED = "landed"  # the bytes of the missed write itself (it landed late): kept
    NEWER = "newer"  # written after the mark: kept
    REFUSED = "refused"  # could be neither removed nor expired: still readable elsewhere
    BUSY = "busy"  # an older write of this process is still on its way: judged later


SweptNames = tuple[int, int, int]  # (withdrawn, kept as newer, refused)


def sweep_entries(
    ledger: Ledger, folder: str, marks: Sequence[tuple[str, bytes | None, int]]
) -> list[Swept]:
    """Judge the entry of each ``(key, digest of the missed write's bytes or None, mark
    time in ns)`` in the namespace ``folder``, withdrawing it unless it may be served."""
    with ledger.lock:
        published = ledger.published_ns
    return [_sweep_entry(folder, key, digest, max(at, published)) for key, digest, at in marks]


def _sweep_entry(folder: str, key: str, digest: bytes | None, since: int) -> Swept:
    path, key_bytes = entry_path(folder, key)
    base, parts, name = entry_place(path)
    subfolder = open_folder(base, parts, create=False)
    if subfolder is None:  # missing, or a link where a folder belongs: nothing of ours there
        return Swept.ABSENT
    try:
        try:
            fd = os.open(name, _O_JUDGE, dir_fd=subfolder)
        except FileNotFoundError:
            return Swept.ABSENT
        except OSError:  # a link (never followed), or unreadable: judged by what stands there
            found = found_at(name, subfolder)
            if found is None:
                return Swept.ABSENT
            return _judged(subfolder, name, found, since)
        try:
            found = os.fstat(fd)
            regular = stat.S_ISREG(found.st_mode)
            if digest is not None and regular and _holds(read_all(fd), key_bytes, digest):
                return Swept.LANDED
        finally:
            os.close(fd)
        return _judged(subfolder, name, found, since)
    finally:
        os.close(subfolder)


def _judged(folder: int, name: str, found: os.stat_result, since: int) -> Swept:
    if stat.S_ISREG(found.st_mode) and found.st_mtime_ns > since:
        return Swept.NEWER
    return Swept.WITHDRAWN if withdraw_at(folder, name, found) else Swept.REFUSED


def _holds(raw: bytes, key_bytes: bytes, digest: bytes) -> bool:
    """Whether ``raw`` is a whole entry of this key whose data has ``digest``."""
    start = HEADER.size + len(key_bytes)
    if len(raw) < start:
        return False
    magic, key_len, _expires_at, data_len = HEADER.unpack_from(raw)
    return (
        magic == MAGIC
        and key_len == len(key_bytes)
        and raw[HEADER.size : start] == key_bytes
        and len(raw) - start == data_len
        and digest_of(raw[start:]) == digest
    )


def sweep_names(ledger: Ledger, subfolder: str, names: Sequence[str], at: int) -> SweptNames:
    """Withdraw each entry file of ``names`` (in one two-hex ``subfolder``) not written after
    ``at`` (ns) nor after this process's latest publish: what a whole-namespace mark (a missed
    invalidate or clear, or too many keys marked) covers."""
    with ledger.lock:
        since = max(at, ledger.published_ns)
    folder_path, hex2 = os.path.split(subfolder)
    base, namespace = os.path.split(folder_path)
    folder = open_folder(base, (namespace, hex2), create=False)
    if folder is None:
        return (0, 0, 0)
    withdrawn = kept = refused = 0
    try:
        for name in names:
            found = found_at(name, folder)
            if found is None:
                continue
            judged = _judged(folder, name, found, since)
            withdrawn += judged is Swept.WITHDRAWN
            kept += judged is Swept.NEWER
            refused += judged is Swept.REFUSED
    finally:
        os.close(folder)
    return (withdrawn, kept, refused)


def namespace_folders(base: str) -> list[str]:
    """Every namespace folder under the prefix folder ``base`` (not the trash, not temp
    files): what an everything mark (a missed ``clear``) covers."""
    top = open_base(base, create=False)
    if top is None:
        return []
    try:
        names = os.listdir(top)
    finally:
        os.close(top)
    return sorted(
        os.path.join(base, name)
        for name in names
        if not name.startswith((".", "~")) and not name.endswith(TEMP_SUFFIX)
    )
