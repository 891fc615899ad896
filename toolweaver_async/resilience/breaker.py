"""A circuit breaker for one fallible store: :class:`CircuitBreaker`, :class:`BreakerState`.

The breaker is a pure transition table (:func:`_next_state`) plus a thin synchronous driver that
counts outcomes, reads the injected clock and tells listeners. It starts no tasks and holds no
locks: in asyncio every method runs to completion without yielding, so "check a slot, then take it"
cannot race. It is not thread-safe; use one breaker per event loop.

Pairing rule for callers that do not use :meth:`CircuitBreaker.call`: every ``allow()`` that
returned True is followed by exactly one of ``record_success``, ``record_failure`` or ``release``.

One failure shared by many calls (a batched round trip that timed out fails every caller in it)
is one piece of evidence, not many: callers pass it as ``record_failure(incident=...)`` and the
breaker counts each incident once, so one slow round trip of 60 callers cannot open it alone.
"""

from __future__ import annotations

import enum
import logging
import math
import random as _random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, ParamSpec, Protocol, TypedDict, TypeVar, Unpack, assert_never

from ..config import BreakerSettings
from ..errors import BreakerOpenError, ConfigError

__all__ = ["BreakerListener", "BreakerSettingsFields", "BreakerState", "CircuitBreaker"]

logger = logging.getLogger("toolweaver_async.breaker")

P = ParamSpec("P")
T = TypeVar("T")


# Incidents remembered for de-duplication: a shared failure reaches its callers within a loop
# turn or two, so only the most recent few can still be reported.
_INCIDENTS_REMEMBERED: Final = 8


class BreakerState(enum.Enum):
    """CLOSED lets every call through, OPEN refuses them all, HALF_OPEN admits a few probes."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


# Module-level aliases: on Python 3.11 ``BreakerState.CLOSED`` costs ~60 ns per lookup, as much as
# the rest of the CLOSED fast path together.
_CLOSED, _OPEN, _HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class BreakerListener(Protocol):
    """Called after every state change as ``listener(breaker_name, old, new)``."""

    def __call__(self, breaker_name: str, old: BreakerState, new: BreakerState, /) -> None: ...


class _Event(enum.Enum):
    SUCCESS = "success"  # a call succeeded within slow_call_timeout
    FAILURE = "failure"  # a call failed (or was slow), below every threshold
    TRIP = "trip"  # a failure that crossed the consecutive or the failure-rate threshold
    RECOVERY_DUE = "recovery_due"  # the clock passed the end of the open period


def _next_state(state: BreakerState, event: _Event) -> BreakerState:
    """The whole transition table; the driver turns counters and the clock into events."""
    match state:
        case BreakerState.CLOSED:
            return BreakerState.OPEN if event is _Event.TRIP else state
        case BreakerState.OPEN:
            # Outcomes of calls admitted before the trip arrive late; they change nothing.
            return BreakerState.HALF_OPEN if event is _Event.RECOVERY_DUE else state
        case BreakerState.HALF_OPEN:
            match event:
                case _Event.SUCCESS:
                    return BreakerState.CLOSED
                case _Event.FAILURE | _Event.TRIP:
                    return BreakerState.OPEN
                case _Event.RECOVERY_DUE:
                    return state
                case _:
                    assert_never(event)
        case _:
            assert_never(state)


def _open_period(base: float, cap: float, failed_probes: int, jitter: float, r: float) -> float:
    """Seconds to stay open: ``base`` doubled per failed probe, spread by +/- ``jitter``, capped."""
    grown = min(base * 2.0 ** min(failed_probes, 64), cap)
    return min(grown * (1.0 + jitter * (2.0 * r - 1.0)), cap)


class BreakerSettingsFields(TypedDict, total=False):
    """The fields of :class:`BreakerSettings`, as keywords of :class:`CircuitBreaker`."""

    failure_threshold: int
    recovery_timeout: float
    max_recovery_timeout: float
    half_open_max_calls: int
    failure_rate_threshold: float
    window_size: int
    minimum_calls: int
    jitter: float
    health_check_interval: float | None


class CircuitBreaker:
    """Refuses calls to a store that keeps failing, then lets a few probes test its recovery.

    Opens after ``failure_threshold`` consecutive failures, or when the share of failures among the
    last ``window_size`` outcomes reaches ``failure_rate_threshold`` (once ``minimum_calls`` are
    known). A success slower than ``slow_call_timeout`` is a failure. After the open period,
    ``allow()`` admits up to ``half_open_max_calls`` concurrent probes: one success closes, one
    failure reopens for twice as long (jittered, at most ``max_recovery_timeout``).

    The thresholds are a :class:`BreakerSettings`: pass one as ``settings=``, or its fields as
    keywords (``CircuitBreaker(failure_threshold=3)``), never both. Their defaults and their
    validation live in ``BreakerSettings`` alone; the breaker keeps that object as it is.
    """

    def __init__(
        self,
        *,
        settings: BreakerSettings | None = None,
        slow_call_timeout: float | None = None,
        clock: Callable[[], float] | None = None,
        random: Callable[[], float] | None = None,
        name: str = "breaker",
        listeners: Iterable[BreakerListener] = (),
        **fields: Unpack[BreakerSettingsFields],
    ) -> None:
        if settings is None:
            settings = BreakerSettings(**fields)
        elif fields:
            raise ConfigError(
                f"CircuitBreaker takes settings= or the fields {sorted(fields)}, not both"
            )
        if slow_call_timeout is not None and not 0 < slow_call_timeout < math.inf:
            raise ConfigError(f"slow_call_timeout must be None or > 0, got {slow_call_timeout!r}")
        if not name:
            raise ConfigError("CircuitBreaker needs a non-empty name")

        self.name = name
        self.settings: BreakerSettings = settings
        self._slow_call_timeout = slow_call_timeout
        self._clock = clock if clock is not None else time.monotonic
        self._random = random if random is not None else _random.random
        self._listeners = list(listeners)

        self._state = _CLOSED
        # Bumped on every state change and reset: call() drops outcomes from an older epoch.
        self._epoch = 0
        self._consecutive_failures = 0
        self._window = [False] * settings.window_size  # ring of outcomes, True = failure
        self._window_size = settings.window_size
        self._window_next = 0
        self._window_count = 0
        self._window_failures = 0
        self._failed_probes = 0
        self._probes_in_flight = 0
        self._opened_at: float | None = None
        self._open_period = settings.recovery_timeout
        self._probe_at = math.inf
        # The last few incidents counted (strong references: exceptions take no weak ones).
        self._incidents: deque[object] = deque(maxlen=_INCIDENTS_REMEMBERED)

    @classmethod
    def from_settings(
        cls,
        settings: BreakerSettings,
        *,
        name: str,
        clock: Callable[[], float] | None = None,
        slow_call_timeout: float | None = None,
    ) -> CircuitBreaker:
        """A breaker for one store, built from the shared ``CacheConfig.breaker`` settings."""
        return cls(settings=settings, name=name, clock=clock, slow_call_timeout=slow_call_timeout)

    # -- reading -------------------------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        """The current state; an OPEN breaker whose open period has passed reads as HALF_OPEN."""
        if self._state is _OPEN:
            self._poll_recovery()
        return self._state

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def opened_at(self) -> float | None:
        """Clock time of the last trip, until the breaker closes again."""
        return self._opened_at

    @property
    def epoch(self) -> int:
        """Changes with every state change and reset. A caller pairing ``allow()`` with
        ``record_*`` itself drops an outcome whose call was admitted in an older epoch: it
        describes a store the breaker has judged since (as :meth:`call` does)."""
        return self._epoch

    @property
    def slow_call_timeout(self) -> float | None:
        """Seconds after which a success counts as a failure; ``None``: no limit, so a caller
        need not time its calls."""
        return self._slow_call_timeout

    @property
    def current_recovery_timeout(self) -> float:
        """Length of the current (or, when closed, the next base) open period in seconds."""
        return self._open_period

    def snapshot(self) -> dict[str, Any]:
        """Plain data for ``health_check``."""
        state = self.state
        count = self._window_count
        wait = self._probe_at - self._clock() if state is _OPEN else 0.0
        return {
            "name": self.name,
            "state": state.value,
            "consecutive_failures": self._consecutive_failures,
            "failure_rate": self._window_failures / count if count else 0.0,
            "window_calls": count,
            "probes_in_flight": self._probes_in_flight,
            "recovery_timeout": self._open_period,
            "seconds_until_probe": max(0.0, wait),
        }

    # -- the driver ----------------------------------------------------------------------------

    def allow(self) -> bool:
        """May a call go out now? In HALF_OPEN a True reserves a probe slot (see module doc)."""
        if self._state is _CLOSED:
            return True
        if self._state is _OPEN and not self._poll_recovery():
            return False
        if self._probes_in_flight >= self.settings.half_open_max_calls:
            return False
        self._probes_in_flight += 1
        return True

    def admit(self) -> int | None:
        """``allow()`` and ``epoch`` in one call: the epoch a call is admitted in (pass it to
        :meth:`succeeded`), or ``None`` when refused (nothing to record then)."""
        if self._state is _CLOSED or self.allow():
            return self._epoch
        return None

    def succeeded(self, epoch: int, duration: float | None = None) -> None:
        """``record_success`` for a call admitted in ``epoch``, dropped when the breaker
        changed state since (as :meth:`call` does)."""
        if epoch != self._epoch:
            return
        if (
            duration is None
            and self._state is _CLOSED
            and not self._window_failures
            and self._window_count == self._window_size
        ):
            return  # the quiet case of record_success, without the call
        self.record_success(duration)

    def record_success(self, duration: float | None = None) -> None:
        """A call succeeded; a ``duration`` over ``slow_call_timeout`` makes it a failure."""
        slow = self._slow_call_timeout
        if slow is not None and duration is not None and duration > slow:
            self.record_failure()
            return
        if self._state is _CLOSED:
            # CLOSED + SUCCESS never changes state; skipping the table saves ~200 ns a call.
            # A full window without failures stays the same after one more success (every
            # slot is already a success, so where the ring starts does not matter), and no
            # failure can be consecutive then: the common case costs two reads.
            if self._window_failures or self._window_count < self._window_size:
                self._consecutive_failures = 0
                self._push(False)
        else:
            self._apply(_Event.SUCCESS, "probe succeeded")

    def record_failure(self, incident: object | None = None) -> None:
        """A call failed or timed out. ``incident``, when given, is the failure this call
        shared with others (see module doc): only its first report counts, the others only
        give back their probe slot."""
        if self._state is _OPEN:
            return  # a late answer to a call admitted before the trip
        if incident is not None:
            if any(seen is incident for seen in self._incidents):
                self.release()
                return
            self._incidents.append(incident)
        self._consecutive_failures += 1
        if self._state is _HALF_OPEN:
            self._apply(_Event.FAILURE, "probe failed")
            return
        self._push(True)
        count, failures, settings = self._window_count, self._window_failures, self.settings
        if self._consecutive_failures >= settings.failure_threshold:
            self._apply(_Event.TRIP, f"{self._consecutive_failures} consecutive failures")
        elif (
            count >= settings.minimum_calls and failures / count >= settings.failure_rate_threshold
        ):
            self._apply(_Event.TRIP, f"{failures} of the last {count} calls failed")
        # else CLOSED + FAILURE below every threshold: no state change

    def release(self) -> None:
        """Give back a probe slot without an outcome (the probe was cancelled)."""
        if self._state is _HALF_OPEN and self._probes_in_flight > 0:
            self._probes_in_flight -= 1

    def reset(self) -> None:
        """Force CLOSED with empty counters, e.g. after an operator fixed the store."""
        if self._state is not _CLOSED:
            self._enter(_CLOSED, "reset")
        else:
            self._clear()
            self._epoch += 1

    def trip(self) -> None:
        """Force OPEN now, e.g. for a store that did not answer at start-up."""
        if self._state is not _OPEN:
            self._enter(_OPEN, "forced")

    def end_open_period(self, reason: str = "store answered a health check") -> None:
        """Evidence that the store is back (a health check it answered): end the open period
        now, so the next call is the half-open probe. The count of failed probes stays, so a
        probe that still fails reopens the breaker for longer, as after any failed probe."""
        if self._state is _OPEN:
            self._probe_at = self._clock()
            self._apply(_Event.RECOVERY_DUE, reason)

    def add_listener(self, listener: BreakerListener) -> None:
        self._listeners.append(listener)

    async def call(self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs) -> T:
        """Await ``fn(*args, **kwargs)`` through the breaker.

        Raises :class:`BreakerOpenError` without calling ``fn`` when refused. An exception from
        ``fn`` is recorded as a failure and re-raised; cancellation only frees a probe slot.
        """
        if not self.allow():
            raise BreakerOpenError(self._refusal())
        epoch = self._epoch
        timed = self._slow_call_timeout is not None
        started = self._clock() if timed else 0.0
        try:
            result = await fn(*args, **kwargs)
        except Exception:
            if self._epoch == epoch:
                self.record_failure()
            raise
        except BaseException:
            if self._epoch == epoch:
                self.release()
            raise
        # An outcome from before the latest state change describes a store we no longer trust
        # (or no longer distrust); it must not trip, close or reopen the breaker.
        if self._epoch == epoch:
            self.record_success(self._clock() - started if timed else None)
        return result

    # -- internals -----------------------------------------------------------------------------

    def _poll_recovery(self) -> bool:
        """Apply the lazy OPEN -> HALF_OPEN move; True when the breaker is no longer OPEN."""
        if self._clock() >= self._probe_at:
            self._apply(_Event.RECOVERY_DUE, "recovery timeout passed")
        return self._state is not _OPEN

    def _push(self, failed: bool) -> None:
        i = self._window_next
        size = self._window_size
        if self._window_count == size:
            self._window_failures -= self._window[i]
        else:
            self._window_count += 1
        self._window[i] = failed
        self._window_failures += failed
        self._window_next = (i + 1) % size

    def _clear(self) -> None:
        self._consecutive_failures = 0
        self._incidents.clear()
        self._window = [False] * self.settings.window_size
        self._window_size = self.settings.window_size
        self._window_next = self._window_count = self._window_failures = 0
        self._failed_probes = 0
        self._probes_in_flight = 0
        self._opened_at = None
        self._open_period = self.settings.recovery_timeout
        self._probe_at = math.inf

    def _apply(self, event: _Event, reason: str) -> None:
        new = _next_state(self._state, event)
        if new is not self._state:
            self._enter(new, reason)

    def _enter(self, new: BreakerState, reason: str) -> None:
        old, self._state = self._state, new
        self._epoch += 1
        self._probes_in_flight = 0
        level = logging.INFO
        if new is _OPEN:
            if old is _HALF_OPEN:
                self._failed_probes += 1
            now = self._clock()
            self._opened_at = now
            settings = self.settings
            self._open_period = _open_period(
                settings.recovery_timeout,
                settings.max_recovery_timeout,
                self._failed_probes,
                settings.jitter,
                self._random(),
            )
            self._probe_at = now + self._open_period
            level = logging.WARNING
            reason = f"{reason}; next probe in {self._open_period:.2f}s"
        elif new is _CLOSED:
            self._clear()
        logger.log(level, "circuit breaker %r is %s: %s", self.name, new.value, reason)
        for listener in list(self._listeners):
            try:
                listener(self.name, old, new)
            except Exception:
                logger.exception("circuit breaker %r: listener %r raised", self.name, listener)

    def _refusal(self) -> str:
        if self._state is _OPEN:
            wait = max(0.0, self._probe_at - self._clock())
            return f"circuit breaker {self.name!r} is open; next probe in {wait:.2f}s"
        return f"circuit breaker {self.name!r} is half-open and all probe slots are taken"
