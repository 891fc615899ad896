"""A lane of short blocking steps run on a worker thread, one hop at a time, per event loop.

A lone step goes out at once, in one hop to the lane's executor. Steps that arrive
while that hop runs wait and then share the next hop, in the order they were asked. Fifty agents
reading files cost a few hops instead of fifty: each hop is a thread wake-up, a GIL handover and a
wake-up of the loop, and those, not the reads, were most of a contended file get (issue 3: at
about 6 000 gets/s, p50 2.2 ms / p99 5.7 ms with a hop per step, 0.7 / 2.0 ms in a lane).
The worker thread takes the next hop itself as soon as one ends, without a trip through the
event loop, and hands results back at least every millisecond of a long hop, not only at its
end (see :class:`WorkerLane`).

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
import collections
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

# Steps per hop at most: the thread takes this many queued steps at a time, and the watchdog
# releases (and the lane drops) what is still queued when a step hangs.
_MAX_STEPS_PER_HOP = 64
# A hop hands back the results it has so far once it has run this long (seconds): a caller
# whose step is done waits at most this for the steps after it in the hop (~1 ms: a handful of
# file writes, twenty-odd reads), and a hop of quick steps still costs the loop one wake-up.
_HAND_BACK_EVERY = 0.001

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
    """Steps the worker thread took together; it stamps ``progress_at`` after each step."""

    __slots__ = ("finished", "progress_at", "steps")

    def __init__(self, steps: list[_Step]) -> None:
        self.steps = steps
        self.progress_at = time.monotonic()
        self.finished = False

    def run(self, hand_back: Callable[[_Hop, int, list[Any]], None]) -> list[Any]:
        """On the worker thread: every step in order, each one's result or exception; the
        results so far go to ``hand_back(hop, first, results)`` whenever the hop has run
        ``_HAND_BACK_EVERY`` since it last handed back."""
        results: list[Any] = []
        handed = 0
        last = self.progress_at
        for fn, args, _waiter, _touched in self.steps:
            try:
                results.append(fn(*args))
            except Exception as exc:
                results.append(_Failed(exc))
            now = self.progress_at = time.monotonic()  # one float store: atomic under the GIL
            if now - last >= _HAND_BACK_EVERY and len(results) < len(self.steps):
                hand_back(self, handed, results[handed:])
                handed, last = len(results), now
        self.finished = True
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
    """Runs blocking steps on ``executor``, one hop at a time, results to ``loop``.

    The worker thread drains the lane: it takes up to 64 queued steps (a hop), runs them, hands
    the results to the loop and takes the next hop at once, until the queue is empty; only then
    does the next step asked submit a new job to the executor. So one worker thread is all the
    executor needs, and a busy lane never waits for the loop between two hops (that trip, a
    loop turn and a thread wake-up on a contended GIL, was most of a read's wait under 200
    agents). Results go straight to the loop (``call_soon_threadsafe``) rather than through an
    asyncio future wrapping the executor's: one loop wake-up fewer, which made a lone file get
    ~8 us faster than a plain ``run_in_executor`` hop (113 against 116-122 us, interleaved A/B).
    The queue is shared with the thread under a lock held only to add or take steps.

    ``touches(fn, args)`` names what a step may change (None: anything; without ``touches``
    every step may change anything), for :meth:`busy_with`; ``stall`` is shared with the other
    lanes of the same disk (a lane of its own by default).
    """

    __slots__ = (
        "_barriers",
        "_busy",
        "_deadline",
        "_draining",
        "_executor",
        "_hop",
        "_lock",
        "_outstanding",
        "_queue",
        "_stall",
        "_touches",
        "_watchdog",
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
        self._stall = stall if stall is not None else Stall(loop)
        self._touches = touches
        # Shared with the worker thread, under _lock: the steps not taken yet, and whether a
        # job draining them is submitted or running.
        self._lock = threading.Lock()
        self._queue: collections.deque[_Step] = collections.deque()
        self._draining = False
        self._hop: _Hop | None = None  # the hop the thread took last (set by the thread)
        self._outstanding = 0  # steps asked and neither landed nor dropped
        self._watchdog: asyncio.TimerHandle | None = None
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
        self._outstanding += 1
        with self._lock:
            self._queue.append((fn, args, waiter, touched))
            start, self._draining = not self._draining, True
        if start:
            try:
                self._executor.submit(self._drain)
            except RuntimeError as exc:  # the executor is shut down: the loop is closing
                with self._lock:
                    self._draining = False  # no job runs: the next step tries again
                self._drop_queued(exc)
                return waiter
        if self._deadline is not None and self._watchdog is None:
            self._watchdog = self.loop.call_later(self._deadline, self._check)
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

    # -- on the worker thread --------------------------------------------------------------

    def _drain(self) -> None:
        """Run hops until the queue is empty; each hop's results go to the loop."""
        while True:
            with self._lock:
                queued = self._queue
                if not queued:
                    self._draining = False
                    return
                hop = self._hop = _Hop(
                    [queued.popleft() for _ in range(min(len(queued), _MAX_STEPS_PER_HOP))]
                )
            try:
                results: list[Any] | BaseException = hop.run(self._hand_back)
            except BaseException as exc:  # carried to the loop, which fails the whole hop
                hop.finished = True
                results = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                self.loop.call_soon_threadsafe(self._landed, hop, results)

    def _hand_back(self, hop: _Hop, first: int, results: list[Any]) -> None:
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._settle, hop.steps[first:], results)

    # -- on the loop -----------------------------------------------------------------------

    def _landed(self, hop: _Hop, results: list[Any] | BaseException) -> None:
        self._outstanding -= len(hop.steps)
        self._returned(hop.steps)
        self._stall.returned(hop)
        if isinstance(results, BaseException):  # only a BaseException gets past _Hop.run
            self._fail(hop.steps, RuntimeError(f"worker step died: {results!r}"))
        else:
            self._settle(hop.steps[len(hop.steps) - len(results) :], results)

    @staticmethod
    def _settle(steps: list[_Step], results: list[Any]) -> None:
        """Give each waiter of ``steps`` its result (the first ``len(results)`` of them)."""
        for (_fn, _args, waiter, _touched), result in zip(steps, results, strict=False):
            if waiter.done():
                continue  # cancelled, released by the watchdog, or handed back earlier
            if isinstance(result, _Failed):
                waiter.set_exception(result.error)
            else:
                waiter.set_result(result)

    def _check(self) -> None:
        """The watchdog, armed while steps are out: a hop still finishing steps gets more
        time; one whose current step has run ``deadline`` seconds releases its waiters and
        everyone queued behind it, and the lane refuses new steps until that step returns."""
        self._watchdog = None
        deadline = self._deadline
        if deadline is None or not self._outstanding:
            return
        hop = self._hop
        wait = deadline
        if hop is not None and not hop.finished:
            idle = time.monotonic() - hop.progress_at
            if idle >= deadline:
                self._stall.stuck(hop, hop.progress_at)
                error = self._stall_error()
                # The hop's steps still run (and may still change their items) once the stuck
                # one returns; those queued behind it never will.
                self._fail(hop.steps, error)
                self._drop_queued(error)
                return  # armed again by the next step asked once the stall is over
            wait = deadline - idle
        self._watchdog = self.loop.call_later(wait, self._check)

    def _drop_queued(self, error: BaseException) -> None:
        """Fail the steps the thread has not taken; they never run."""
        with self._lock:
            dropped = list(self._queue)
            self._queue.clear()
        self._outstanding -= len(dropped)
        self._fail(dropped, error)
        self._returned(dropped)

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
