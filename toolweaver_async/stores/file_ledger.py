"""The file store's counters and running size estimate, shared by every step that changes disk.

Worker threads write it (a cancelled caller's step still finishes and must still count), the
event loop only reads it; one lock keeps the two apart. The size is an estimate kept between
scans: a write adds what it grew by, a removal what it freed, a scan sets it afresh. It also keeps
when this process last published an entry (``published_ns``): the sweep of missed writes
(``file_sweep``) must not take a late landing of one of this process's own older writes for a
newer entry written by another process.
"""

from __future__ import annotations

import threading
import time

from ..config import MAX_TRACKED_NAMESPACES, OTHER_NAMESPACES

__all__ = ["Ledger"]


class Ledger:
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
        # Wall clock (ns) after this process's latest entry publish, on whichever thread.
        self.published_ns = 0

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

    def wrote(self, delta: int) -> None:
        """An entry was published (temp file renamed or linked into place): grow by ``delta``
        and stamp the time, which is after the file's own modification time."""
        now = time.time_ns()
        with self.lock:
            self.published_ns = max(self.published_ns, now)
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
