"""CircuitBreaker: when it opens, how it probes, how it recovers — driven by a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
from collections import deque
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from toolweaver_async import (
    BreakerOpenError,
    BreakerSettings,
    BreakerState,
    CacheError,
    CircuitBreaker,
    ConfigError,
)
from toolweaver_async.resilience.breaker import BreakerSettingsFields, _Event, _next_state
from toolweaver_async.testing import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class FakeRandom:
    """Returns ``value`` every time; 0.5 means "no jitter"."""

    def __init__(self, value: float = 0.5) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_breaker(clock: FakeClock, **options: Any) -> CircuitBreaker:
    options.setdefault("random", FakeRandom())
    options.setdefault("name", "redis")
    return CircuitBreaker(clock=clock, **options)


def trip(breaker: CircuitBreaker) -> None:
    while breaker.state is not OPEN:
        breaker.record_failure()


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, BreakerState, BreakerState]] = []

    def __call__(self, name: str, old: BreakerState, new: BreakerState) -> None:
        self.calls.append((name, old, new))


# -- opening ---------------------------------------------------------------------------------


def test_opens_after_failure_threshold_consecutive_failures(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is CLOSED
    assert breaker.allow()

    breaker.record_failure()

    assert breaker.state is OPEN
    assert breaker.opened_at == clock.now
    assert not breaker.allow()


def test_success_resets_the_consecutive_failure_count(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=3)
    for _ in range(5):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.consecutive_failures == 0


def test_opens_on_failure_rate_only_once_minimum_calls_are_known(clock: FakeClock) -> None:
    breaker = make_breaker(
        clock, failure_threshold=100, window_size=10, minimum_calls=6, failure_rate_threshold=0.5
    )
    for failed in (True, False, True, False, True):  # 60 % failed, but only 5 calls known
        breaker.record_failure() if failed else breaker.record_success()
    assert breaker.state is CLOSED

    breaker.record_failure()  # 4 of 6

    assert breaker.state is OPEN


def test_failure_rate_below_threshold_keeps_breaker_closed(clock: FakeClock) -> None:
    breaker = make_breaker(
        clock, failure_threshold=100, window_size=10, minimum_calls=6, failure_rate_threshold=0.5
    )
    for failed in (False, False, False, False, True, True, False, True):  # 3 of 8
        breaker.record_failure() if failed else breaker.record_success()
    assert breaker.state is CLOSED
    assert breaker.snapshot()["failure_rate"] == pytest.approx(3 / 8)


def test_after_a_full_window_of_successes_failures_count_as_ever(clock: FakeClock) -> None:
    """Once the window holds nothing but successes, another success changes nothing (the
    breaker skips its bookkeeping then); failures must still count from a full window."""
    breaker = make_breaker(
        clock, failure_threshold=3, window_size=4, minimum_calls=4, failure_rate_threshold=0.5
    )
    for _ in range(9):  # more than a window: the later ones take the quiet path
        breaker.record_success()
    assert breaker.snapshot()["window_calls"] == 4
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()  # 2 of the last 4: the rate is reached, not the streak
    assert breaker.state is OPEN

    breaker.reset()
    for _ in range(9):
        breaker.record_success()
    breaker.record_failure()
    breaker.record_success()  # the window is not quiet now: this success is counted
    breaker.record_success()
    breaker.record_success()
    breaker.record_success()  # the failure has left the window
    assert breaker.snapshot()["failure_rate"] == 0.0
    breaker.record_failure()
    assert breaker.state is CLOSED  # 1 of 4


def test_admit_and_succeeded_pair_like_allow_epoch_and_record_success(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=1, half_open_max_calls=1)
    epoch = breaker.admit()
    assert epoch == breaker.epoch
    breaker.record_failure()  # opens: the call admitted before is from an older epoch
    assert breaker.admit() is None  # open: refused
    breaker.succeeded(epoch)  # its late success changes nothing
    assert breaker.state is OPEN

    clock.advance(breaker.current_recovery_timeout)
    probe = breaker.admit()
    assert probe is not None
    assert breaker.state is HALF_OPEN
    assert breaker.admit() is None  # the one probe slot is taken
    breaker.succeeded(probe)
    assert breaker.state is CLOSED


def test_failure_rate_window_forgets_outcomes_older_than_window_size(clock: FakeClock) -> None:
    breaker = make_breaker(
        clock, failure_threshold=100, window_size=4, minimum_calls=4, failure_rate_threshold=0.5
    )
    for failed in (True, True, True, False, False, False, False):
        breaker.record_failure() if failed else breaker.record_success()
    breaker.record_failure()  # 4 of all 8 calls failed, but only 1 of the last 4
    assert breaker.state is CLOSED
    assert breaker.snapshot()["failure_rate"] == pytest.approx(0.25)


def test_slow_success_counts_as_failure(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=2, slow_call_timeout=0.5)
    breaker.record_success(duration=0.5)  # exactly the limit is not slow
    assert breaker.consecutive_failures == 0

    breaker.record_success(duration=0.6)
    breaker.record_success(duration=3.0)

    assert breaker.state is OPEN


def test_one_failure_shared_by_many_calls_counts_once(clock: FakeClock) -> None:
    """Sixty callers of one timed-out round trip are one piece of evidence, not sixty."""
    breaker = make_breaker(clock, failure_threshold=3)
    trip_a, trip_b = TimeoutError("trip a"), TimeoutError("trip b")
    for _ in range(60):
        breaker.record_failure(incident=trip_a)
    assert breaker.state is CLOSED
    assert breaker.consecutive_failures == 1
    breaker.record_failure(incident=trip_b)
    breaker.record_failure(incident=trip_a)  # a late share of an incident already counted
    assert breaker.consecutive_failures == 2
    breaker.record_failure()  # a failure of its own always counts
    assert breaker.state is OPEN


def test_a_late_share_of_a_counted_incident_gives_its_probe_slot_back(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=1.0, half_open_max_calls=1)
    trip = TimeoutError("trip")
    breaker.record_failure(incident=trip)
    assert breaker.state is OPEN
    clock.advance(1.5)
    assert breaker.allow()  # the probe
    breaker.record_failure(incident=trip)  # not the probe's own outcome
    assert breaker.state is HALF_OPEN
    assert breaker.allow()  # the slot is free again


async def test_call_measures_duration_with_the_injected_clock(clock: FakeClock) -> None:
    breaker = make_breaker(clock, slow_call_timeout=0.5)

    async def slow_lookup() -> str:
        clock.advance(1.0)
        return "value"

    assert await breaker.call(slow_lookup) == "value"
    assert breaker.consecutive_failures == 1


def test_closed_allow_reads_no_clock(clock: FakeClock) -> None:
    breaker = make_breaker(clock)
    reads = clock.reads
    for _ in range(1000):
        assert breaker.allow()
        breaker.record_success()
    assert clock.reads == reads


# -- open ------------------------------------------------------------------------------------


async def test_open_breaker_refuses_call_without_awaiting_fn(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=1)
    breaker.record_failure()
    awaited = False

    async def lookup() -> None:
        nonlocal awaited
        awaited = True

    with pytest.raises(BreakerOpenError, match=r"redis.*open.*next probe in 2\.00s"):
        await breaker.call(lookup)
    assert not awaited
    assert issubclass(BreakerOpenError, CacheError)


async def test_call_records_exception_from_fn_as_failure_and_reraises(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=2)

    async def broken() -> None:
        raise ConnectionError("refused")

    for _ in range(2):
        with pytest.raises(ConnectionError):
            await breaker.call(broken)
    assert breaker.state is OPEN


def test_failures_while_open_do_not_extend_the_open_period(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=2.0)
    breaker.record_failure()
    clock.advance(1.0)
    for _ in range(10):
        breaker.record_failure()
    clock.advance(1.0)
    assert breaker.state is HALF_OPEN


def test_moves_to_half_open_once_recovery_timeout_has_passed(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=2.0)
    breaker.record_failure()

    clock.advance(1.5)
    assert breaker.state is OPEN
    assert breaker.snapshot()["seconds_until_probe"] == pytest.approx(0.5)

    clock.advance(0.5)
    assert breaker.state is HALF_OPEN


# -- half-open -------------------------------------------------------------------------------


def test_half_open_allow_reserves_at_most_max_calls_slots(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=1, half_open_max_calls=2)
    breaker.record_failure()
    clock.advance(2.0)
    assert [breaker.allow() for _ in range(4)] == [True, True, False, False]

    breaker.release()

    assert breaker.allow()
    assert not breaker.allow()


async def test_half_open_admits_exactly_max_concurrent_probes(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=1, half_open_max_calls=2)
    breaker.record_failure()
    clock.advance(2.0)
    gate, settled = asyncio.Event(), asyncio.Event()
    probing: list[int] = []
    refused: list[int] = []

    def note(into: list[int], i: int) -> None:
        into.append(i)
        if len(probing) + len(refused) == 5:
            settled.set()

    async def probe(i: int) -> int:
        note(probing, i)
        await gate.wait()
        return i

    async def attempt(i: int) -> None:
        try:
            await breaker.call(probe, i)
        except BreakerOpenError:
            note(refused, i)

    async with asyncio.TaskGroup() as tasks:
        for i in range(5):
            tasks.create_task(attempt(i))
        await settled.wait()
        assert len(probing) == 2
        assert len(refused) == 3
        gate.set()

    assert breaker.state is CLOSED


def test_probe_success_closes_and_resets_counters(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=2, recovery_timeout=1.0)
    trip(breaker)
    clock.advance(1.0)
    assert breaker.allow()
    breaker.record_failure()
    clock.advance(2.0)
    assert breaker.allow()

    breaker.record_success()

    assert breaker.state is CLOSED
    assert breaker.consecutive_failures == 0
    assert breaker.opened_at is None
    assert breaker.current_recovery_timeout == 1.0
    assert breaker.snapshot()["window_calls"] == 0


def test_probe_failure_reopens_with_doubled_timeout_capped_at_max(clock: FakeClock) -> None:
    breaker = make_breaker(
        clock, failure_threshold=1, recovery_timeout=1.0, max_recovery_timeout=5.0
    )
    breaker.record_failure()
    periods = [breaker.current_recovery_timeout]
    for _ in range(4):
        clock.advance(breaker.current_recovery_timeout)
        assert breaker.allow()
        breaker.record_failure()
        assert breaker.state is OPEN
        assert breaker.opened_at == clock.now
        periods.append(breaker.current_recovery_timeout)
    assert periods == [1.0, 2.0, 4.0, 5.0, 5.0]

    clock.advance(5.0)
    assert breaker.allow()
    breaker.record_success()
    breaker.record_failure()
    assert breaker.current_recovery_timeout == 1.0  # back to base after closing


def test_end_open_period_makes_the_next_call_the_probe_and_keeps_the_growth(
    clock: FakeClock,
) -> None:
    breaker = make_breaker(
        clock, failure_threshold=1, recovery_timeout=10.0, max_recovery_timeout=100.0
    )
    breaker.end_open_period()  # closed: nothing to end
    assert breaker.state is CLOSED
    breaker.record_failure()
    assert not breaker.allow()
    breaker.end_open_period("pinged")
    assert breaker.state is HALF_OPEN  # no clock advance needed
    assert breaker.allow()
    breaker.record_failure()  # it answered the ping, not the probe
    assert breaker.state is OPEN
    assert breaker.current_recovery_timeout == 20.0  # grown, as after any failed probe
    breaker.end_open_period()
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED


def test_epoch_changes_with_every_state_change_and_reset(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=1, recovery_timeout=1.0)
    seen = [breaker.epoch]
    breaker.record_failure()  # open
    seen.append(breaker.epoch)
    clock.advance(1.0)
    assert breaker.state is HALF_OPEN
    seen.append(breaker.epoch)
    breaker.reset()
    seen.append(breaker.epoch)
    breaker.record_success()  # closed + success: no change
    seen.append(breaker.epoch)
    assert seen[:4] == sorted(set(seen[:4]))
    assert seen[4] == seen[3]


@pytest.mark.parametrize("r", [0.0, 0.25, 0.5, 0.75, 0.999999])
def test_recovery_timeout_is_jittered_within_bounds(clock: FakeClock, r: float) -> None:
    breaker = make_breaker(
        clock,
        failure_threshold=1,
        recovery_timeout=10.0,
        max_recovery_timeout=30.0,
        jitter=0.2,
        random=FakeRandom(r),
    )
    breaker.record_failure()
    bounds = [(8.0, 12.0), (16.0, 24.0), (24.0, 30.0)]  # 10 s, 20 s, then 40 s capped at 30 s
    for failed_probes, (low, high) in enumerate(bounds):
        period = breaker.current_recovery_timeout
        assert low <= period <= high
        if failed_probes < 2:
            assert period == pytest.approx((low + high) / 2 * (1 + 0.2 * (2 * r - 1)))
        clock.advance(period)
        assert breaker.allow()
        breaker.record_failure()


async def test_cancelled_probe_frees_its_slot(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=1, half_open_max_calls=1)
    breaker.record_failure()
    clock.advance(2.0)
    entered = asyncio.Event()

    async def hang() -> None:
        entered.set()
        await asyncio.Event().wait()

    task = asyncio.create_task(breaker.call(hang))
    await entered.wait()
    assert not breaker.allow()

    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert breaker.state is HALF_OPEN
    assert breaker.consecutive_failures == 1
    assert breaker.allow()


async def test_late_outcome_of_call_admitted_before_trip_changes_nothing(
    clock: FakeClock,
) -> None:
    breaker = make_breaker(clock, failure_threshold=1)
    entered, finish = asyncio.Event(), asyncio.Event()

    async def slow_failure() -> None:
        entered.set()
        await finish.wait()
        raise TimeoutError

    task = asyncio.create_task(breaker.call(slow_failure))
    await entered.wait()
    breaker.record_failure()
    clock.advance(2.0)
    assert breaker.state is HALF_OPEN

    finish.set()
    with pytest.raises(TimeoutError):
        await task

    assert breaker.state is HALF_OPEN
    assert breaker.current_recovery_timeout == 2.0


# -- listeners, logging, control -------------------------------------------------------------


def test_listeners_are_called_once_per_transition(clock: FakeClock) -> None:
    first, second = Recorder(), Recorder()
    breaker = make_breaker(clock, failure_threshold=2, listeners=[first])
    breaker.add_listener(second)

    trip(breaker)
    for _ in range(10):
        breaker.record_failure()
        breaker.allow()
    clock.advance(2.0)
    assert breaker.state is HALF_OPEN
    assert breaker.state is HALF_OPEN
    assert breaker.allow()
    breaker.record_success()

    expected = [("redis", CLOSED, OPEN), ("redis", OPEN, HALF_OPEN), ("redis", HALF_OPEN, CLOSED)]
    assert first.calls == expected
    assert second.calls == expected


def test_raising_listener_is_logged_and_ignored(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(name: str, old: BreakerState, new: BreakerState) -> None:
        raise RuntimeError("listener bug")

    after = Recorder()
    breaker = make_breaker(clock, failure_threshold=1, listeners=[broken, after])

    breaker.record_failure()

    assert breaker.state is OPEN
    assert after.calls == [("redis", CLOSED, OPEN)]
    assert any(r.levelno == logging.ERROR and "listener" in r.getMessage() for r in caplog.records)


def test_logs_once_per_state_change_not_per_failure(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="toolweaver_async.breaker")
    breaker = make_breaker(clock, failure_threshold=5)

    trip(breaker)
    for _ in range(100):
        breaker.record_failure()
        assert not breaker.allow()
    clock.advance(2.0)
    assert breaker.allow()
    breaker.record_failure()

    levels = [(r.levelname, r.getMessage()) for r in caplog.records]
    assert [level for level, _ in levels] == ["WARNING", "INFO", "WARNING"]
    assert "5 consecutive failures" in levels[0][1]
    assert "probe failed" in levels[2][1]


def test_reset_forces_closed_and_trip_forces_open(clock: FakeClock) -> None:
    recorder = Recorder()
    breaker = make_breaker(clock, listeners=[recorder])

    breaker.trip()
    assert breaker.state is OPEN
    breaker.reset()

    assert breaker.state is CLOSED
    assert breaker.opened_at is None
    assert recorder.calls == [("redis", CLOSED, OPEN), ("redis", OPEN, CLOSED)]


def test_snapshot_reports_state_failures_rate_and_wait(clock: FakeClock) -> None:
    breaker = make_breaker(clock, failure_threshold=2)
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(0.5)

    snapshot = breaker.snapshot()

    assert snapshot["state"] == "open"
    assert snapshot["consecutive_failures"] == 2
    assert snapshot["failure_rate"] == pytest.approx(2 / 3)
    assert snapshot["seconds_until_probe"] == pytest.approx(1.5)


def test_from_settings_uses_every_setting(clock: FakeClock) -> None:
    config = BreakerSettings(failure_threshold=2, recovery_timeout=1.0, max_recovery_timeout=1.0)
    breaker = CircuitBreaker.from_settings(config, name="file", clock=clock, slow_call_timeout=0.1)
    breaker.record_success(duration=0.2)
    breaker.record_failure()
    assert breaker.state is OPEN
    assert breaker.name == "file"
    assert 0.9 <= breaker.current_recovery_timeout <= 1.0  # default jitter, capped at max


def test_the_breaker_keeps_the_settings_it_is_given_without_copying_them(clock: FakeClock) -> None:
    settings = BreakerSettings(failure_threshold=2, recovery_timeout=3.0)
    assert CircuitBreaker(settings=settings, clock=clock).settings is settings
    assert CircuitBreaker.from_settings(settings, name="redis").settings is settings


def test_keyword_thresholds_build_one_breaker_settings_with_its_defaults() -> None:
    assert CircuitBreaker().settings == BreakerSettings()
    made = CircuitBreaker(failure_threshold=3, jitter=0.0).settings
    assert made == BreakerSettings(failure_threshold=3, jitter=0.0)


def test_breaker_keywords_are_exactly_the_breaker_settings_fields() -> None:
    assert set(BreakerSettingsFields.__annotations__) == {
        f.name for f in dataclasses.fields(BreakerSettings)
    }


def test_settings_and_keyword_thresholds_together_are_a_config_error() -> None:
    with pytest.raises(ConfigError, match="not both"):
        CircuitBreaker(settings=BreakerSettings(), failure_threshold=3)


def test_jitter_is_a_setting_that_spreads_every_open_period(clock: FakeClock) -> None:
    settings = BreakerSettings(failure_threshold=1, recovery_timeout=10.0, jitter=0.2)
    breaker = CircuitBreaker(settings=settings, clock=clock, random=FakeRandom(1.0))
    trip(breaker)
    assert breaker.current_recovery_timeout == pytest.approx(12.0)


@pytest.mark.parametrize(
    "options",
    [
        {"failure_threshold": 2.5},
        {"failure_threshold": True},
        {"minimum_calls": 2.0},
        {"max_recovery_timeout": math.inf},
        {"recovery_timeout": math.nan},
        {"jitter": 1.0},
        {"jitter": math.nan},
    ],
)
def test_breaker_settings_check_everything_the_breaker_relies_on(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        BreakerSettings(**options)


@pytest.mark.parametrize(
    "options",
    [
        {"failure_threshold": 0},
        {"half_open_max_calls": 0},
        {"recovery_timeout": 0},
        {"recovery_timeout": math.nan},
        {"recovery_timeout": 10.0, "max_recovery_timeout": 5.0},
        {"max_recovery_timeout": math.inf},
        {"failure_rate_threshold": 0},
        {"failure_rate_threshold": 1.5},
        {"window_size": 10, "minimum_calls": 11},
        {"minimum_calls": 0},
        {"window_size": 10.5},
        {"slow_call_timeout": 0},
        {"jitter": 1.0},
        {"jitter": -0.1},
        {"name": ""},
    ],
)
def test_invalid_settings_raise_config_error(options: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        CircuitBreaker(**options)


@pytest.mark.parametrize(
    ("state", "event", "expected"),
    [
        (CLOSED, _Event.SUCCESS, CLOSED),
        (CLOSED, _Event.FAILURE, CLOSED),
        (CLOSED, _Event.TRIP, OPEN),
        (CLOSED, _Event.RECOVERY_DUE, CLOSED),
        (OPEN, _Event.SUCCESS, OPEN),
        (OPEN, _Event.FAILURE, OPEN),
        (OPEN, _Event.TRIP, OPEN),
        (OPEN, _Event.RECOVERY_DUE, HALF_OPEN),
        (HALF_OPEN, _Event.SUCCESS, CLOSED),
        (HALF_OPEN, _Event.FAILURE, OPEN),
        (HALF_OPEN, _Event.TRIP, OPEN),
        (HALF_OPEN, _Event.RECOVERY_DUE, HALF_OPEN),
    ],
)
def test_transition_table(state: BreakerState, event: _Event, expected: BreakerState) -> None:
    assert _next_state(state, event) is expected


# -- the state machine against an independent model ------------------------------------------

RECOVERY, MAX_RECOVERY, JITTER, SLOW = 1.0, 5.0, 0.2, 0.5
THRESHOLD, WINDOW, MINIMUM, RATE, PROBES = 3, 4, 4, 0.5, 2
OUTCOMES = ("success", "failure", "slow_success", "cancelled")
outcomes = st.sampled_from(OUTCOMES)
randoms = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
# Round steps that often cross a recovery deadline, plus arbitrary ones for the edges.
steps = st.sampled_from([0.5, 1.0, 2.5, 6.0]) | st.floats(min_value=0.0, max_value=6.0)


class BreakerMachine(RuleBasedStateMachine):
    """Drives a breaker and a few lines of plain bookkeeping side by side; they must agree.

    Calls are made the way a store guard makes them: ``allow()``, then exactly one of
    ``record_success``, ``record_failure`` or ``release`` — at once or after other calls ran.
    """

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.random = FakeRandom()
        self.breaker = CircuitBreaker(
            failure_threshold=THRESHOLD,
            recovery_timeout=RECOVERY,
            max_recovery_timeout=MAX_RECOVERY,
            half_open_max_calls=PROBES,
            failure_rate_threshold=RATE,
            window_size=WINDOW,
            minimum_calls=MINIMUM,
            slow_call_timeout=SLOW,
            jitter=JITTER,
            clock=self.clock,
            random=self.random,
        )
        self.held = 0  # admitted calls still in flight
        # the model
        self.state = CLOSED
        self.consecutive = 0
        self.window: deque[bool] = deque(maxlen=WINDOW)
        self.failed_probes = 0
        self.in_flight = 0
        self.reopen_at = math.inf

    def model_open(self) -> None:
        grown = min(RECOVERY * 2**self.failed_probes, MAX_RECOVERY)
        expected = min(grown * (1 + JITTER * (2 * self.random.value - 1)), MAX_RECOVERY)
        assert self.breaker.current_recovery_timeout == pytest.approx(expected)
        self.state, self.in_flight = OPEN, 0
        self.reopen_at = self.clock.now + self.breaker.current_recovery_timeout

    def model_close(self) -> None:
        self.state, self.consecutive, self.failed_probes, self.in_flight = CLOSED, 0, 0, 0
        self.window.clear()
        self.reopen_at = math.inf

    def model_success(self) -> None:
        if self.state is HALF_OPEN:
            self.model_close()
        elif self.state is CLOSED:
            self.consecutive = 0
            self.window.append(False)

    def model_failure(self) -> None:
        if self.state is OPEN:  # a late answer to a call admitted before the trip
            return
        self.consecutive += 1
        if self.state is HALF_OPEN:
            self.failed_probes += 1
            self.model_open()
            return
        self.window.append(True)
        rate = sum(self.window) / len(self.window)
        if self.consecutive >= THRESHOLD or (len(self.window) >= MINIMUM and rate >= RATE):
            self.model_open()

    def settle(self, outcome: str, r: float) -> None:
        self.random.value = r
        was = self.state
        if outcome == "success":
            self.breaker.record_success(duration=SLOW / 2)
            self.model_success()
            if was is HALF_OPEN:
                assert self.breaker.state is CLOSED
        elif outcome == "failure":
            self.breaker.record_failure()
            self.model_failure()
        elif outcome == "slow_success":
            self.breaker.record_success(duration=SLOW * 2)
            self.model_failure()
        else:
            self.breaker.release()
            if self.state is HALF_OPEN and self.in_flight > 0:
                self.in_flight -= 1

    @initialize(start=st.sampled_from([CLOSED, OPEN, HALF_OPEN]))
    def start_in(self, start: BreakerState) -> None:
        """Half the interesting sequences begin after a trip; start some runs there."""
        if start is not CLOSED:
            self.breaker.trip()
            self.model_open()
        if start is HALF_OPEN:
            self.advance(MAX_RECOVERY)

    @rule(outcome=outcomes | st.just("hold"), r=randoms, times=st.integers(1, WINDOW))
    def calls(self, outcome: str, r: float, times: int) -> None:
        for _ in range(times):
            admitted = self.state is CLOSED or (self.state is HALF_OPEN and self.in_flight < PROBES)
            assert self.breaker.allow() is admitted
            if not admitted:
                continue
            if self.state is HALF_OPEN:
                self.in_flight += 1
            if outcome == "hold":
                self.held += 1
            else:
                self.settle(outcome, r)

    @rule(outcome=outcomes, r=randoms)
    def finish_held_call(self, outcome: str, r: float) -> None:
        if self.held:
            self.held -= 1
            self.settle(outcome, r)

    @rule(seconds=steps)
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        if self.state is OPEN and self.clock.now >= self.reopen_at:
            self.state = HALF_OPEN

    @rule()
    def reset(self) -> None:
        self.breaker.reset()
        self.model_close()

    @invariant()
    def state_agrees_with_model(self) -> None:
        assert self.breaker.state is self.state
        if self.state is OPEN:  # tripped, and the recovery time has not passed yet
            assert self.clock.now < self.reopen_at
        if self.state is HALF_OPEN:
            assert self.clock.now >= self.reopen_at

    @invariant()
    def counters_agree_with_model(self) -> None:
        snapshot = self.breaker.snapshot()
        assert self.breaker.consecutive_failures == self.consecutive
        assert snapshot["probes_in_flight"] == self.in_flight <= PROBES
        assert (self.breaker.opened_at is None) == (self.state is CLOSED)
        if self.state is CLOSED:
            assert snapshot["window_calls"] == len(self.window)
            rate = sum(self.window) / len(self.window) if self.window else 0.0
            assert snapshot["failure_rate"] == pytest.approx(rate)

    @invariant()
    def recovery_timeout_within_bounds(self) -> None:
        assert RECOVERY * (1 - JITTER) <= self.breaker.current_recovery_timeout <= MAX_RECOVERY


BreakerMachine.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestBreakerStateMachine = BreakerMachine.TestCase


@pytest.mark.parametrize("interval", [0, -1.0, math.nan, "0.5"])
def test_a_bad_health_check_interval_is_a_config_error(interval: Any) -> None:
    with pytest.raises(ConfigError, match="health_check_interval"):
        BreakerSettings(health_check_interval=interval)


def test_health_check_interval_none_turns_the_ping_off() -> None:
    assert BreakerSettings(health_check_interval=None).health_check_interval is None
