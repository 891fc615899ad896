"""A lane of short blocking steps run on worker threads, one hop at a time, per event loop.

A lone step goes out at once, in one hop to the lane's executor. Steps that arrive
while that hop runs wait and then share the next hop, in the order they were asked. Fifty agents
reading files cost a few hops instead of fifty: each hop is a thread wake-up, a GIL handover and a
wake-up of the loop, and those, not the reads, were most of a contended file get (issue 3: at
about 6 000 gets/s, p50 2.2 ms / p99 5.7 ms with a hop per step, 0.7 / 2.0 ms in a lane).

A step that runs ``deadline`` seconds without finishing releases the waiters of its hop and of
the steps queued behind it with ``TimeoutError``, and stalls the lane: until it returns, new steps
fail at once instead of queueing behind a hung disk, so callers (and the file store's breaker)
see the failure in ``deadline`` seconds, not never. A long hop that keeps finishing steps is
never cut short. Lanes on one disk share a :class:`Stall`: a step hung in any of them makes all
of them refuse new steps (a dead mount hangs reads and writes alike).

A lane can also say which items (for the file store: entries) the steps asked of it and not yet
returned may change (``touches``), so that a read can go to another lane without overtaking a
write of its own entry asked before it (:meth:`WorkerLane.busy_with`).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable, Collection, Hashable
from concurrent.futures import Executor, Future
from typing import Any, TypeVar

from ..errors import ConfigError

__all__ = ["DaemonWorker", "Stall", "Touches", "WorkerLane", "in_daemon_thread"]

T = TypeVar("T")

# Steps per hop at most: a waiter gets its result when its whole hop is done, so a hop of
# hundreds of steps would make the first ones wait for the last.
_MAX_STEPS_PER_HOP = 64

# What a step may change, told by the lane's ``touches``; None: anything (orders every read).
_Touched = Collection[Hashable] | None
Touches = Callable[[Callable[..., Any], tuple[Any, ...]], _Touched]
_Step = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]", _Touched]


class DaemonWorker(Executor):
    """One worker thread that never keeps the interpreter from exiting.

    ``ThreadPoolExecutor`` joins its threads at exit (and ``asyncio.run`` waits for the default
    executor): a step stuck on a dead mount would then hang the process for ever after its
    callers were released. A daemon thread is simply left behind when the process exits."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._jobs: queue.SimpleQueue[
            tuple[Future[Any], Callable[..., Any], tuple[Any, ...]] | None
        ]
        self._jobs = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, fn: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        if kwargs:
            raise TypeError("DaemonWorker.submit takes positional arguments only")
        future: Future[T] = Future()
        with self._lock:
            if self._closed:
                raise RuntimeError("cannot schedule new work after shutdown")
            self._jobs.put((future, fn, args))
            if self._thread is None:
                self._thread = threading.Thread(target=self._work, name=self._name, daemon=True)
                self._thread.start()
        return future

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """Stop after the jobs already asked (``wait``: join the thread, which a hung job
        would never let go)."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._jobs.put(None)
            thread = self._thread
        if wait and thread is not None:
            thread.join()

    def _work(self) -> None:
        while (job := self._jobs.get()) is not None:
            future, fn, args = job
            if not future.set_running_or_notify_cancel():
                continue
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to whoever waits on the future
                future.set_exception(exc)
            else:
                future.set_result(result)


async def in_daemon_thread(name: str, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` on a daemon thread of its own (see :class:`DaemonWorker`): for the rare
    long steps that must not queue behind each other nor keep the process alive. A cancelled
    caller only stops waiting; the thread finishes its step."""
    worker = DaemonWorker(name)
    try:
        return await asyncio.wrap_future(worker.submit(fn, *args))
    finally:
        worker.shutdown(wait=False)


class _Failed:
    """A step's exception, carried back from the worker thread beside the other results."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class _Hop:
    """The steps of one hop; the worker thread stamps ``progress_at`` after each step."""

    __slots__ = ("progress_at", "steps", "watchdog")

    def __init__(self, steps: list[_Step]) -> None:
        self.steps = steps
        self.progress_at = time.monotonic()
        self.watchdog: asyncio.TimerHandle | None = None

    def run(self) -> list[Any]:
        """On the worker thread: every step in order, each one's result or exception."""
        results: list[Any] = []
        for fn, args, _waiter, _touched in self.steps:
            try:
                results.append(fn(*args))
            except Exception as exc:
                results.append(_Failed(exc))
            self.progress_at = time.monotonic()  # one float store: atomic under the GIL
        return results


class Stall:
    """Whether a step of any lane sharing this has run past its deadline and not returned.

    The lanes of one disk share one: a step hung on a dead mount makes every one of them refuse
    new steps at once, not only its own, until it (and any other stuck step) returns."""

    __slots__ = ("_loop", "_recovery", "_stuck")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._stuck: dict[object, float] = {}  # stuck hop -> time.monotonic() its step started
        self._recovery: asyncio.Future[None] | None = None

    @property
    def since(self) -> float | None:
        """When the longest-stuck step started, or None when none is stuck."""
        return min(self._stuck.values()) if self._stuck else None

    def stuck(self, hop: object, since: float) -> None:
        self._stuck[hop] = since

    def returned(self, hop: object) -> None:
        """``hop`` is back (stuck or not): the stall ends once no stuck hop is left."""
        if self._stuck.pop(hop, None) is None or self._stuck:
            return
        recovery, self._recovery = self._recovery, None
        if recovery is not None and not recovery.done():
            recovery.set_result(None)

    def recovered(self) -> asyncio.Future[None]:
        """Done once no step is stuck (at once when none is now)."""
        if not self._stuck:
            done: asyncio.Future[None] = self._loop.create_future()
            done.set_result(None)
            return done
        if self._recovery is None:
            self._recovery = self._loop.create_future()
        return self._recovery


class WorkerLane:
    """Runs blocking steps on ``executor``, one hop in flight at a time, results to ``loop``.

    One hop in flight means one worker thread is all the executor needs. The hop hands its
    results straight to the loop (``call_soon_threadsafe``) rather than through an asyncio
    future wrapping the executor's: one loop wake-up fewer, which made a lone file get ~8 us
    faster than a plain ``run_in_executor`` hop (113 against 116-122 us, interleaved A/B).

    ``touches(fn, args)`` names what a step may change (None: anything; without ``touches``
    every step may change anything), for :meth:`busy_with`; ``stall`` is shared with the other
    lanes of the same disk (a lane of its own by default).
    """

    __slots__ = (
        "_barriers",
        "_busy",
        "_deadline",
        "_executor",
        "_hop",
        "_pending",
        "_stall",
        "_touches",
        "loop",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        executor: Executor,
        *,
        deadline: float | None = None,
        touches: Touches | None = None,
        stall: Stall | None = None,
    ) -> None:
        if deadline is not None and not deadline > 0:
            raise ConfigError(f"deadline must be None or > 0 seconds, got {deadline!r}")
        self.loop = loop
        self._executor = executor
        self._deadline = deadline
        self._pending: list[_Step] = []
        self._hop: _Hop | None = None
        self._stall = stall if stall is not None else Stall(loop)
        self._touches = touches
        # Items that steps asked and not yet returned may change (item -> how many steps),
        # and how many such steps may change anything.
        self._busy: dict[Hashable, int] = {}
        self._barriers = 0

    def run(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` on a worker thread; the future is its result. A cancelled waiter only
        stops waiting: a step that has been asked runs all the same, like any executor job."""
        waiter: asyncio.Future[T] = self.loop.create_future()
        if self._stall.since is not None:
            waiter.set_exception(self._stall_error())
            return waiter
        touched = None if self._touches is None else self._touches(fn, args)
        if touched is None:
            self._barriers += 1
        else:
            busy = self._busy
            for item in touched:
                busy[item] = busy.get(item, 0) + 1
        self._pending.append((fn, args, waiter, touched))
        if self._hop is None:
            self._dispatch()
        return waiter

    def busy_with(self, item: Hashable) -> bool:
        """Whether a step asked of this lane and not yet returned (queued, running, or stuck
        past the deadline) may change ``item``: a read of it must then queue here, behind
        that step, instead of overtaking it in another lane."""
        return self._barriers > 0 or item in self._busy

    @property
    def stall(self) -> Stall:
        """The stall this lane shares (with the other lanes of its disk)."""
        return self._stall

    @property
    def stalled(self) -> bool:
        """True while a step (of this lane, or of one sharing its ``Stall``) has run past the
        deadline and not returned yet."""
        return self._stall.since is not None

    def recovered(self) -> asyncio.Future[None]:
        """Done once no step is stuck past the deadline (at once when none is now): for work
        that can wait for a stuck step to return rather than fail while it runs."""
        return self._stall.recovered()

    def _dispatch(self) -> None:
        hop = _Hop(self._pending[:_MAX_STEPS_PER_HOP])
        del self._pending[:_MAX_STEPS_PER_HOP]
        self._hop = hop
        try:
            self._executor.submit(self._run_hop, hop)
        except RuntimeError as exc:  # the executor is shut down: the loop is closing
            self._hop = None
            self._fail(hop.steps + self._pending, exc)
            self._returned(hop.steps + self._pending)
            self._pending = []
            return
        if self._deadline is not None:
            hop.watchdog = self.loop.call_later(self._deadline, self._check, hop)

    def _run_hop(self, hop: _Hop) -> None:
        """On the worker thread: run the hop, then hand its results to the loop."""
        try:
            results: list[Any] | BaseException = hop.run()
        except BaseException as exc:  # carried to the loop, which fails the whole hop
            results = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self.loop.call_soon_threadsafe(self._landed, hop, results)

    def _landed(self, hop: _Hop, results: list[Any] | BaseException) -> None:
        if hop.watchdog is not None:
            hop.watchdog.cancel()
        self._hop = None
        self._returned(hop.steps)
        self._stall.returned(hop)
        if isinstance(results, BaseException):  # only a BaseException gets past _Hop.run
            self._fail(hop.steps, RuntimeError(f"worker step died: {results!r}"))
        else:
            for (_fn, _args, waiter, _touched), result in zip(hop.steps, results, strict=True):
                if waiter.done():
                    continue  # cancelled, or released by the watchdog
                if isinstance(result, _Failed):
                    waiter.set_exception(result.error)
                else:
                    waiter.set_result(result)
        if self._pending:
            self._dispatch()

    def _check(self, hop: _Hop) -> None:
        """The watchdog: a hop still finishing steps gets more time; one whose current step has
        run ``deadline`` seconds releases its waiters and everyone queued behind it, and the lane
        refuses new steps until that step returns."""
        if self._hop is not hop or self._deadline is None:
            return
        idle = time.monotonic() - hop.progress_at
        if idle < self._deadline:
            hop.watchdog = self.loop.call_later(self._deadline - idle, self._check, hop)
            return
        self._stall.stuck(hop, hop.progress_at)
        error = self._stall_error()
        # The hop's steps still run (and may still change their items) once the stuck one
        # returns; those queued behind it never will.
        self._fail(hop.steps + self._pending, error)
        self._returned(self._pending)
        self._pending = []

    def _stall_error(self) -> TimeoutError:
        since = self._stall.since
        running = 0.0 if since is None else time.monotonic() - since
        return TimeoutError(
            f"a step has been running for {running:.1f} s (deadline {self._deadline} s)"
        )

    def _returned(self, steps: list[_Step]) -> None:
        """``steps`` have run (or never will): what they touch is no longer busy here."""
        busy = self._busy
        for _fn, _args, _waiter, touched in steps:
            if touched is None:
                self._barriers -= 1
                continue
            for item in touched:
                left = busy[item] - 1
                if left:
                    busy[item] = left
                else:
                    del busy[item]

    @staticmethod
    def _fail(steps: list[_Step], error: BaseException) -> None:
        for _fn, _args, waiter, _touched in steps:
            if not waiter.done():
                waiter.set_exception(error)
