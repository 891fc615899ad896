"""One timer for many call deadlines, fair to a busy event loop.

The Redis connections of this package bound every call by a deadline, and checking each with
``asyncio.timeout`` costs more than the rest of a batched get (~3.4 us per use on uvloop). So one
timer sleeps until the earliest deadline. When it fires it first lets the loop run a few turns,
so that a reply that reached the socket while the loop was busy (this process starved of CPU, a
blocking call) is read before anything is declared timed out: a late read is this process's
delay, not the server's. When the timer itself ran more than half a timeout late, the pass is
*stalled*: what it expires fails with a :class:`~.expiry.StalledTimeout`, which the breaker
does not count.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

__all__ = ["GRACE_TURNS", "DeadlineWatchdog"]

# Loop turns the watchdog waits before expiring a due call: one to poll the socket, one to wake
# the reading task, one for it to finish parsing. Microseconds on a responsive loop.
GRACE_TURNS: Final = 3


class DeadlineWatchdog:
    """Calls ``expire(due, stalled)`` once the earliest armed deadline has passed (after the
    grace turns); ``expire`` fails what is due by ``due`` and returns the next deadline to
    sleep until, or ``None`` when nothing waits."""

    __slots__ = ("_due", "_expire", "_handle", "_stopped", "_timeout")

    def __init__(self, timeout: float, expire: Callable[[float, bool], float | None]) -> None:
        self._timeout = timeout
        self._expire = expire
        self._handle: asyncio.Handle | None = None
        self._due = 0.0  # when the armed timer should run
        self._stopped = False

    def arm(self, deadline: float) -> None:
        """Make sure the watchdog runs by ``deadline`` (callers arm in deadline order, so an
        armed timer is never later than a new call's deadline)."""
        if self._handle is None and not self._stopped:
            self._due = deadline
            self._handle = asyncio.get_running_loop().call_at(deadline, self._fire)

    def stop(self) -> None:
        """No more passes (the connection is closing). Idempotent."""
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        stalled = now - self._due > self._timeout / 2
        self._handle = loop.call_soon(self._after_grace, now, stalled, GRACE_TURNS)

    def _after_grace(self, due: float, stalled: bool, turns: int) -> None:
        if turns > 1:
            self._handle = asyncio.get_running_loop().call_soon(
                self._after_grace, due, stalled, turns - 1
            )
            return
        self._handle = None
        upcoming = self._expire(due, stalled)
        if upcoming is not None:
            self.arm(upcoming)
