"""RecoveryWatch: while a breaker is open, pings end the open period as soon as the store answers;
a store that answers pings but fails the probe makes the watch sit one open period out."""

from __future__ import annotations

import pytest

from toolweaver_async import BreakerState, CircuitBreaker
from toolweaver_async.resilience.recovery_watch import RecoveryWatch
from toolweaver_async.testing import FakeClock

from .polling import eventually

OPEN, HALF_OPEN, CLOSED = BreakerState.OPEN, BreakerState.HALF_OPEN, BreakerState.CLOSED
INTERVAL = 0.005


class Pinger:
    """A store's ping: refused until ``answering``; counts every call."""

    def __init__(self) -> None:
        self.answering = False
        self.calls = 0

    async def __call__(self) -> None:
        self.calls += 1
        if not self.answering:
            raise ConnectionRefusedError("nothing listens")


def breaker_on(clock: FakeClock) -> CircuitBreaker:
    return CircuitBreaker(
        name="redis",
        failure_threshold=1,
        recovery_timeout=60,
        max_recovery_timeout=600,
        clock=clock,
        random=lambda: 0.5,
    )


def watching(breaker: CircuitBreaker, pinger: Pinger) -> RecoveryWatch:
    return RecoveryWatch(breaker, pinger, interval=INTERVAL, name="redis")


async def test_pings_only_while_open_and_an_answer_ends_the_open_period(
    clock: FakeClock,
) -> None:
    breaker, pinger = breaker_on(clock), Pinger()
    watch = watching(breaker, pinger)
    assert watch._task is None  # closed: nothing to watch
    breaker.record_failure()
    assert breaker.state is OPEN
    await eventually(lambda: pinger.calls >= 3, what="pings while open")
    assert breaker.state is OPEN  # refused pings change nothing
    pinger.answering = True
    await eventually(lambda: breaker.state is HALF_OPEN, what="the answer to end the period")
    assert clock() < (breaker.opened_at or 0) + 60  # long before the breaker's own timer
    assert watch._task is not None
    await eventually(watch._task.done, what="the watch to stop")
    await watch.aclose()


async def test_a_watch_on_an_already_open_breaker_starts_at_once(clock: FakeClock) -> None:
    breaker, pinger = breaker_on(clock), Pinger()
    breaker.trip()
    pinger.answering = True
    watch = watching(breaker, pinger)
    await eventually(lambda: breaker.state is HALF_OPEN, what="the first ping")
    await watch.aclose()


async def test_after_a_failed_probe_the_watch_sits_one_open_period_out(
    clock: FakeClock,
) -> None:
    breaker, pinger = breaker_on(clock), Pinger()
    pinger.answering = True
    watch = watching(breaker, pinger)
    breaker.record_failure()
    await eventually(lambda: breaker.state is HALF_OPEN, what="the ping")
    assert breaker.allow()
    breaker.record_failure()  # it answers pings, yet the probe fails
    assert breaker.state is OPEN
    assert breaker.current_recovery_timeout == 120  # the growth still applies
    pings = pinger.calls
    assert watch._task is not None
    assert watch._task.done()
    clock.advance(120)  # the breaker's own timer ends it
    assert breaker.allow()
    breaker.record_failure()  # a probe the watch had no part in
    await eventually(lambda: pinger.calls > pings, what="the watch to resume")
    await eventually(lambda: breaker.state is HALF_OPEN, what="the ping to end this period")
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    await watch.aclose()


async def test_aclose_stops_the_pings_and_later_trips_start_none(clock: FakeClock) -> None:
    breaker, pinger = breaker_on(clock), Pinger()
    watch = watching(breaker, pinger)
    breaker.trip()
    await eventually(lambda: pinger.calls >= 1, what="a ping")
    task = watch._task
    await watch.aclose()
    assert task is not None
    assert task.done()
    breaker.reset()
    breaker.trip()
    assert watch._task is task  # no new task after close


def test_interval_must_be_positive(clock: FakeClock) -> None:
    with pytest.raises(ValueError, match="interval"):
        RecoveryWatch(breaker_on(clock), Pinger(), interval=0, name="redis")


def test_tripped_outside_an_event_loop_starts_no_task(clock: FakeClock) -> None:
    breaker = breaker_on(clock)
    watch = watching(breaker, Pinger())
    breaker.trip()
    assert watch._task is None
    clock.advance(60)
    assert breaker.state is HALF_OPEN  # the breaker's own timer still works
