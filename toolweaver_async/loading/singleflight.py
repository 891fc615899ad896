"""In-process single flight: concurrent callers of one key share one running load.

The load runs in its own task so that cancelling one caller never cancels it for the others;
it is cancelled only when its last caller has gone. A *detached* load (a background refresh)
has no owner and runs to the end whoever waits on it.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Hashable
from typing import Any, Generic, TypeVar

from ..errors import CacheClosedError

__all__ = ["SingleFlight"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

# Python 3.12+ can run the first step of a task at once: the load starts before the other
# callers queued in the same loop turn are served, instead of after all of them.
_EAGER: dict[str, Any] = {"eager_start": True} if sys.version_info >= (3, 12) else {}


class _Flight(Generic[T]):
    __slots__ = ("callers", "detached", "task", "waiters")

    def __init__(self, task: asyncio.Task[T], detached: bool) -> None:
        self.task = task
        self.detached = detached
        self.callers = 0  # callers waiting now
        # one future per caller: cancelling a caller cancels only its own future
        self.waiters: list[asyncio.Future[T]] = []


class SingleFlight(Generic[K, T]):
    """At most one running load per key; every caller of :meth:`join` gets its result or its
    exception. ``track`` is told about each task started, so its owner can cancel them on close.
    """

    __slots__ = ("_flights", "_track")

    def __init__(self, track: Callable[[asyncio.Task[Any]], None] | None = None) -> None:
        self._flights: dict[K, _Flight[T]] = {}
        self._track = track

    def __len__(self) -> int:
        return len(self._flights)

    def running(self, key: K) -> bool:
        """Whether a load of ``key`` is in flight."""
        return key in self._flights

    async def join(self, key: K, work: Callable[[], Coroutine[Any, Any, T]]) -> tuple[T, bool]:
        """The result of the load of ``key`` in flight, or of ``work()`` started now; and
        whether this caller started it. Cancelling a caller leaves the load running for the
        others; the last caller to leave cancels it (unless it is detached)."""
        flight = self._flights.get(key)
        started = flight is None
        if flight is None:
            flight = self._start(key, work, detached=False)
        task = flight.task
        if task.done():  # finished during an eager first step
            return task.result(), started
        waiter: asyncio.Future[T] = task.get_loop().create_future()
        flight.waiters.append(waiter)
        flight.callers += 1
        try:
            return await waiter, started
        except asyncio.CancelledError:
            if task.cancelled() and not _cancelling():
                # The load was cancelled from outside (the cache closed), not this caller.
                raise CacheClosedError(
                    f"the load of {key!r} was cancelled: the cache closed"
                ) from None
            raise
        finally:
            flight.callers -= 1
            if flight.callers == 0 and not flight.detached and not task.done():
                # Nobody wants the result any more. Forget the flight now, so a caller
                # arriving before the task has unwound starts a fresh load instead of
                # joining one that is being cancelled.
                if self._flights.get(key) is flight:
                    del self._flights[key]
                task.cancel()

    def start_detached(self, key: K, work: Callable[[], Coroutine[Any, Any, T]]) -> bool:
        """Start ``work()`` as the load of ``key`` unless one is in flight; ``True`` if
        started. Its outcome is left to :meth:`join` callers (and to ``track``)."""
        if key in self._flights:
            return False
        self._start(key, work, detached=True)
        return True

    def _start(
        self, key: K, work: Callable[[], Coroutine[Any, Any, T]], *, detached: bool
    ) -> _Flight[T]:
        loop = asyncio.get_running_loop()
        task: asyncio.Task[T] = asyncio.Task(work(), loop=loop, **_EAGER)
        flight = _Flight(task, detached)
        if not task.done():
            self._flights[key] = flight

        def finished(done: asyncio.Task[T]) -> None:
            if self._flights.get(key) is flight:
                del self._flights[key]
            if done.cancelled():
                for waiter in flight.waiters:
                    waiter.cancel()
                return
            error = done.exception()  # retrieved: no "exception was never retrieved" warning
            for waiter in flight.waiters:
                if waiter.done():  # its caller was cancelled
                    continue
                if error is not None:
                    waiter.set_exception(error)
                else:
                    waiter.set_result(done.result())

        task.add_done_callback(finished)
        if self._track is not None:
            self._track(task)
        return flight


def _cancelling() -> bool:
    """Whether the current task has been asked to cancel."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0
