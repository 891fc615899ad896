"""The guard's error seam: outages trip the breaker, bugs are absorbed but never look like one.

A store's own ``StoreError`` and a missed deadline are outages (counted by the breaker). Any other
exception is a bug in the store: the caller still gets a miss (agents must not crash), but it is
logged once per exception type at ERROR with its traceback and counted in ``stats().bugs``.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from toolweaver_async import (
    AsyncToolCache,
    BreakerState,
    CacheClosedError,
    CircuitBreaker,
    ConfigError,
    MemoryStore,
    StoreError,
)
from toolweaver_async.resilience.guard import BUG, FAILED, GuardedStore
from toolweaver_async.resilience.recovery_watch import RecoveryWatch
from toolweaver_async.testing import FakeClock


class BuggyStore(MemoryStore):
    """A memory store whose reads raise what ``error`` says (a bug unless it is a StoreError)."""

    name = "buggy"

    def __init__(self) -> None:
        super().__init__()
        self.error: Exception | None = None

    async def get(self, namespace: str, key: str) -> bytes | None:
        if self.error is not None:
            raise self.error
        return await super().get(namespace, key)


def guarded(store: BuggyStore) -> GuardedStore:
    return GuardedStore(store, CircuitBreaker(name=store.name, failure_threshold=2))


async def test_a_bug_is_absorbed_logged_once_per_type_and_never_trips_the_breaker(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = BuggyStore()
    guard = guarded(store)
    store.error = KeyError("oops")
    caplog.set_level(logging.DEBUG, logger="toolweaver_async")
    for _ in range(5):  # well past failure_threshold=2
        assert await guard.get("ns", "k") is BUG
    store.error = AttributeError("no such thing")
    assert await guard.get("ns", "k") is BUG
    assert guard.breaker.state is BreakerState.CLOSED
    assert guard.breaker.consecutive_failures == 0
    assert guard.bugs == 6
    assert guard.failures == 0  # failures are outages; health shows bugs apart
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert [r.exc_info[1].__class__ for r in errors if r.exc_info] == [KeyError, AttributeError]
    assert "bug" in errors[0].getMessage()


async def test_a_store_error_is_an_outage_that_trips_the_breaker() -> None:
    store = BuggyStore()
    guard = guarded(store)
    store.error = StoreError("down", store="buggy")
    assert await guard.get("ns", "k") is FAILED
    assert await guard.get("ns", "k") is FAILED
    assert guard.breaker.state is BreakerState.OPEN
    assert guard.bugs == 0


async def test_a_bug_in_a_store_reaches_stats_not_the_caller_nor_the_error_count() -> None:
    store = BuggyStore()
    async with AsyncToolCache(stores=[MemoryStore(), store]) as cache:
        store.error = ZeroDivisionError("division by zero")
        assert await cache.get("k", default="fallback") == "fallback"
        stats = cache.stats()
        assert stats.bugs == {"buggy": 1}
        assert stats.overall.errors["buggy"] == 0
        assert stats.to_dict()["bugs"] == {"buggy": 1}
        health = await cache.health_check()
        assert health["stores"]["buggy"]["bugs"] == 1
        assert health["stores"]["buggy"]["state"] == "closed"


async def test_the_guard_times_calls_on_the_injected_clock_for_the_slow_call_limit() -> None:
    clock = FakeClock(0.0)

    class SlowStore(BuggyStore):
        async def get(self, namespace: str, key: str) -> bytes | None:
            clock.advance(5.0)  # the call "takes" five seconds on the injected clock
            return None

    slow = SlowStore()
    breaker = CircuitBreaker(name="slow", failure_threshold=1, slow_call_timeout=1.0, clock=clock)
    guard = GuardedStore(slow, breaker, clock=clock)
    assert await guard.get("ns", "k") is None  # the answer still counts for the caller
    assert breaker.state is BreakerState.OPEN  # but it was too slow: a failure


async def test_a_load_cut_short_by_aclose_raises_the_library_error_for_it() -> None:
    started = asyncio.Event()

    async def loader() -> str:
        started.set()
        await asyncio.Event().wait()  # never finishes by itself
        return "v"

    cache = AsyncToolCache(stores=[MemoryStore()])
    caller = asyncio.create_task(cache.get_or_set("k", loader))
    async with asyncio.timeout(2):
        await started.wait()
    await cache.aclose()
    with pytest.raises(CacheClosedError, match="cache closed"):
        async with asyncio.timeout(2):
            await caller


def test_a_bad_recovery_watch_interval_is_a_config_error() -> None:
    breaker = CircuitBreaker(name="x")
    with pytest.raises(ConfigError, match="interval"):
        RecoveryWatch(breaker, BuggyStore().ping, interval=0, name="x")
