"""One store's calls behind its circuit breaker: the one place where store failures are absorbed.

Every call either returns the store's answer or one of three markers: :data:`SKIPPED` (no I/O
happened: the breaker refused, or the outage journal holds a newer write of that key),
:data:`FAILED` (an outage: the store raised :class:`~toolweaver_async.errors.StoreError` or
missed its deadline; the breaker counted it) or :data:`BUG` (the store raised anything else: a
bug, absorbed for the caller but logged once per exception type at ERROR with its traceback and
counted in ``bugs``, never as an outage). The coordinator never sees a store exception.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Final, TypeVar

from ..errors import StoreError
from ..stores.base import Store
from .breaker import BreakerState, CircuitBreaker

__all__ = [
    "BUG",
    "FAILED",
    "SKIPPED",
    "SKIPPED_NOW",
    "GuardedCalls",
    "Unreachable",
    "answered_at_once",
]

T = TypeVar("T")
logger = logging.getLogger("toolweaver_async.cache")


class Unreachable(enum.Enum):
    """Why a guarded call has no answer."""

    SKIPPED = "skipped"
    FAILED = "failed"
    BUG = "bug"


_CLOSED, _OPEN = BreakerState.CLOSED, BreakerState.OPEN  # enum lookups cost ~60 ns on 3.11

SKIPPED = Unreachable.SKIPPED
FAILED = Unreachable.FAILED
BUG = Unreachable.BUG
# What an outage looks like: a store's own translated error, or no answer in time.
_OUTAGES: Final = (StoreError, TimeoutError)


class _Now:
    """An awaitable that is already done: ``await _Now(x)`` is ``x`` without a coroutine."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value

    def __await__(self) -> Generator[Any, None, Any]:
        return self.value
        yield  # a generator function, so each await gets a fresh, finished iterator


SKIPPED_NOW: Final = _Now(SKIPPED)


def answered_at_once(call: Awaitable[Any]) -> bool:
    """Whether a guarded call was answered without I/O (breaker open, write journaled): awaiting
    it returns at once, so it needs no task of its own."""
    return isinstance(call, _Now)


class GuardedCalls:
    """Calls to one store through its breaker; records outcomes and the last error for health.

    ``deadline``, when set, bounds every call given one, for stores that do not bound their
    calls themselves (``RedisStore`` does, with one shared timer, cheaper than an
    ``asyncio.timeout`` per call). ``clock`` times calls for the breaker's slow-call limit;
    give it the breaker's own clock.
    """

    __slots__ = (
        "_bug_types",
        "_clock",
        "_timed",
        "breaker",
        "bugs",
        "deadline",
        "direct",
        "failures",
        "last_error",
        "name",
        "store",
    )

    def __init__(
        self,
        store: Store,
        breaker: CircuitBreaker,
        *,
        deadline: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.breaker = breaker
        self.name = store.name
        self.last_error: str | None = None
        self.failures = 0
        self.bugs = 0  # exceptions that are not outages (see module doc)
        self._bug_types: set[type[BaseException]] = set()
        self._clock = clock
        # Calls are timed only for a breaker with a slow-call limit (two clock reads a call).
        self._timed = breaker.slow_call_timeout is not None
        self.deadline = deadline
        # Whether a caller may await the store itself (see admit): nothing to bound or time.
        self.direct = deadline is None and not self._timed

    def attempt(self, fn: Callable[..., Awaitable[T]], *args: Any) -> Awaitable[T | Unreachable]:
        """Run ``fn(*args)`` if the breaker allows it; never raises what the store raised.
        A store the breaker refuses is answered at once, without a coroutine."""
        if self._refusing():
            return SKIPPED_NOW
        return self._call(fn, args, self.deadline)

    async def _call(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        deadline: float | None,
    ) -> T | Unreachable:
        """The call itself, if the breaker admits it (callers asked ``_refusing`` first)."""
        breaker = self.breaker
        # An outcome that arrives after the breaker changed state (a call admitted before a
        # trip, answering during the half-open probe) must not count as the probe.
        epoch = breaker.admit()
        if epoch is None:
            return SKIPPED
        timed = self._timed
        started = self._clock() if timed else 0.0
        try:
            if deadline is None:
                result = await fn(*args)
            else:
                async with asyncio.timeout(deadline):
                    result = await fn(*args)
        except BaseException as exc:
            return self.settle(exc, epoch, deadline)
        breaker.succeeded(epoch, self._clock() - started if timed else None)
        return result

    # -- calls the caller awaits itself -------------------------------------------------------
    # The hottest read (a Redis get with nothing in front of it) awaits the store in the
    # reader's own frame: each coroutine frame between a caller and its reply costs ~0.3 us
    # when the reply wakes it, and the batched Redis get is ~12 us in all. Only for calls
    # with no deadline and no timing here (``direct``): the store bounds them itself.

    def admit(self) -> int | None:
        """The breaker epoch a call awaited by its caller runs in (report its outcome to
        :meth:`settle` or ``breaker.succeeded``), or ``None``: skip the store now."""
        if self.breaker.state is not _CLOSED and self._refusing():
            return None
        return self.breaker.admit()

    def settle(self, exc: BaseException, epoch: int, deadline: float | None = None) -> Unreachable:
        """What a call admitted in ``epoch`` that raised ``exc`` answers: :data:`FAILED` for
        an outage (counted by the breaker unless the store refused or this process stalled),
        :data:`BUG` for anything else (logged); a cancellation is re-raised, uncounted."""
        breaker = self.breaker
        if isinstance(exc, _OUTAGES):
            if breaker.epoch == epoch:
                if getattr(exc, "refused", False):
                    breaker.release()  # the store answered, refusing this call: not down
                elif getattr(exc, "stalled", False):
                    breaker.release()  # this process stalled past the deadline, not the store
                else:
                    breaker.record_failure(getattr(exc, "incident", None))
            self.failures += 1
            if isinstance(exc, TimeoutError) and not str(exc):
                within = "in time" if deadline is None else f"within {deadline} s"
                self.last_error = f"TimeoutError: no answer {within}"
            else:
                self.last_error = f"{type(exc).__name__}: {exc}"
            logger.debug("%s store call failed: %s", self.name, self.last_error)
            return FAILED
        if breaker.epoch == epoch:
            # A bug says nothing about the store being up or down; a cancellation is neither
            # a success nor a failure.
            breaker.release()
        if not isinstance(exc, Exception):
            raise exc
        self._bug(exc)
        return BUG

    def _bug(self, exc: Exception) -> None:
        """Count a store exception that is not an outage; log its first of each type."""
        self.bugs += 1
        kind = type(exc)
        if kind not in self._bug_types:
            self._bug_types.add(kind)
            logger.error(
                "%s store raised %s, which is a bug, not an outage: the call counts as a miss, "
                "the breaker ignores it (logged once per exception type)",
                self.name,
                kind.__name__,
                exc_info=exc,
            )

    def _refusing(self) -> bool:
        """Whether a call would be skipped now without I/O (breaker open, or another caller
        is the half-open probe), so a write can be journaled at once, with no task."""
        state = self.breaker.state
        if state is _CLOSED:  # the hot path: one property read
            return False
        return state is _OPEN or self._probing()

    def _probing(self) -> bool:
        """Whether something other than callers probes a half-open store (none here)."""
        return False
