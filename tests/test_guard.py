"""GuardedStore: the breaker and the outage journal around one store, with a scripted fake store.

The fake records every call that reaches it and can fail, hang or hold a call until released;
the chain tests (test_failover.py) prove the same promises against a real redis-server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

from toolweaver_async import BreakerState, CircuitBreaker, StoreError
from toolweaver_async.resilience.guard import BUG, FAILED, SKIPPED, GuardedStore
from toolweaver_async.resilience.journal import OutageJournal
from toolweaver_async.stores.base import StoreItem
from toolweaver_async.testing import FakeClock


class FakeStore:
    """A dict store whose calls are logged; ``failing`` makes them raise, ``gate`` holds them."""

    name = "redis"

    def __init__(self) -> None:
        self.data: dict[tuple[str, str], bytes] = {}
        self.calls: list[tuple[Any, ...]] = []
        self.failing = False
        self.stalled = False  # failures say this process, not the store, ran out of time
        self.gate: asyncio.Event | None = None
        self.gated: set[str] | None = None  # which calls the gate holds; None: all

    async def _enter(self, *call: Any) -> None:
        self.calls.append(call)
        if self.gate is not None and (self.gated is None or call[0] in self.gated):
            await self.gate.wait()
        if self.failing:
            raise StoreError("down", store=self.name, stalled=self.stalled)

    async def get(self, namespace: str, key: str) -> bytes | None:
        await self._enter("get", namespace, key)
        return self.data.get((namespace, key))

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        await self._enter("get_many", namespace, tuple(keys))
        return [self.data.get((namespace, k)) for k in keys]

    async def set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        await self._enter("set", namespace, key, data)
        self.data[(namespace, key)] = data

    async def add(self, namespace: str, key: str, data: bytes, ttl: float | None) -> bool:
        await self._enter("add", namespace, key)
        return self.data.setdefault((namespace, key), data) is data

    async def set_many(self, namespace: str, items: Sequence[StoreItem]) -> None:
        await self._enter("set_many", namespace, tuple(k for k, _, _ in items))
        for key, data, _ in items:
            self.data[(namespace, key)] = data

    async def delete(self, namespace: str, key: str) -> bool:
        await self._enter("delete", namespace, key)
        return self.data.pop((namespace, key), None) is not None

    async def invalidate(self, namespace: str) -> None:
        await self._enter("invalidate", namespace)
        for slot in [s for s in self.data if s[0] == namespace]:
            del self.data[slot]

    async def clear(self) -> None:
        await self._enter("clear")
        self.data.clear()

    async def ping(self) -> None:
        await self._enter("ping")

    async def aclose(self) -> None:
        pass


@pytest.fixture
async def store() -> FakeStore:
    return FakeStore()


def guarded(
    store: FakeStore, *, journal: bool = True, deadline: float | None = None, **breaker: Any
) -> GuardedStore:
    breaker.setdefault("failure_threshold", 2)
    breaker.setdefault("recovery_timeout", 0.02)
    breaker.setdefault("max_recovery_timeout", 0.02)
    made = OutageJournal(max_entries=100, clock=FakeClock()) if journal else None
    return GuardedStore(
        store, CircuitBreaker(name="redis", **breaker), journal=made, deadline=deadline
    )


async def direct_get(guard: GuardedStore, namespace: str, key: str) -> Any:
    """A get as the reader makes it on a ``direct`` store, awaiting the store in its own frame:
    admitted, awaited, settled (the answers are those of ``guard.get``)."""
    epoch = guard.admit_get(namespace, key)
    if epoch is None:
        return SKIPPED
    try:
        data = await guard.store.get(namespace, key)
    except BaseException as exc:
        return guard.settle(exc, epoch)
    guard.breaker.succeeded(epoch)
    return data


GETS = pytest.mark.parametrize("via", ["guard", "direct"])


def getter(guard: GuardedStore, via: str) -> Callable[[str, str], Awaitable[Any]]:
    """``guard.get``, or :func:`direct_get` on the same guard."""
    if via == "guard":
        return guard.get
    return lambda namespace, key: direct_get(guard, namespace, key)


async def reached(store: FakeStore, within: float = 2.0) -> None:
    """Until a call has reached ``store`` (and waits at its gate, if one is set)."""
    async with asyncio.timeout(within):
        while not store.calls:
            await asyncio.sleep(0.001)


async def drained(guard: GuardedStore, within: float = 2.0) -> None:
    async with asyncio.timeout(within):
        while guard.journal:
            await asyncio.sleep(0.002)


@GETS
async def test_failure_is_a_marker_counted_by_the_breaker_and_remembered(
    store: FakeStore, via: str
) -> None:
    guard = guarded(store, journal=False)
    store.failing = True
    assert await getter(guard, via)("ns", "k") is FAILED
    assert guard.failures == 1
    assert guard.last_error == "StoreError: down"
    assert guard.breaker.consecutive_failures == 1


@GETS
async def test_a_timeout_caused_by_a_stall_of_this_process_is_not_counted(
    store: FakeStore, via: str
) -> None:
    guard = guarded(store, journal=False)
    get = getter(guard, via)
    store.failing = store.stalled = True
    for _ in range(5):  # well past the failure threshold
        assert await get("ns", "k") is FAILED  # the caller falls back all the same
    assert guard.breaker.state is BreakerState.CLOSED
    assert guard.breaker.consecutive_failures == 0
    store.stalled = False
    assert await get("ns", "k") is FAILED
    assert guard.breaker.consecutive_failures == 1


async def test_open_breaker_means_no_call_reaches_the_store(store: FakeStore) -> None:
    guard = guarded(store, recovery_timeout=60, max_recovery_timeout=60)
    guard.breaker.trip()
    assert await guard.get("ns", "k") is SKIPPED
    assert await direct_get(guard, "ns", "k") is SKIPPED
    assert await guard.get_many("ns", ["a"]) is SKIPPED
    assert await guard.set("ns", "k", b"v", None) is SKIPPED
    assert await guard.delete("ns", "k") is SKIPPED
    assert await guard.invalidate("ns") is SKIPPED
    assert await guard.clear() is SKIPPED
    assert store.calls == []


async def test_deadline_bounds_a_hung_call_and_counts_it(store: FakeStore) -> None:
    guard = guarded(store, journal=False, deadline=0.02)
    store.gate = asyncio.Event()  # never set: the store hangs
    async with asyncio.timeout(1):
        assert await guard.get("ns", "k") is FAILED
    assert "no answer within 0.02 s" in (guard.last_error or "")


async def test_unreached_writes_are_journaled_and_replayed_in_order(store: FakeStore) -> None:
    guard = guarded(store)
    store.failing = True
    await guard.set("ns", "a", b"1", None)
    await guard.delete("ns", "b")
    await guard.set("ns", "a", b"2", None)  # the journal holds it now: no I/O
    assert guard.journal is not None
    assert len(guard.journal) == 2
    assert await guard.get("ns", "a") is SKIPPED  # never read a value older than the journal
    assert await direct_get(guard, "ns", "a") is SKIPPED
    store.failing = False
    store.data[("ns", "a")] = b"older"
    await drained(guard)
    assert store.data[("ns", "a")] == b"2"
    assert await guard.get("ns", "a") == b"2"


async def test_get_many_asks_the_store_only_for_keys_it_may_answer(store: FakeStore) -> None:
    guard = guarded(store, failure_threshold=100)
    store.data.update({("ns", "a"): b"old", ("ns", "b"): b"b"})
    store.gate, store.gated = asyncio.Event(), {"set_many"}  # the replay will be held
    store.failing = True
    await guard.set("ns", "a", b"new", None)  # journaled
    store.failing = False
    async with asyncio.timeout(1):
        while store.calls[-1][0] != "set_many":
            await asyncio.sleep(0.001)
    answers = await guard.get_many("ns", ["a", "b"])
    assert answers == [None, b"b"]
    assert store.calls[-1] == ("get_many", "ns", ("b",))
    assert await guard.get_many("ns", ["a"]) is SKIPPED
    store.gate.set()
    await drained(guard)
    assert await guard.get_many("ns", ["a", "b"]) == [b"new", b"b"]


async def test_invalidate_waits_behind_a_replayed_write_of_its_namespace(store: FakeStore) -> None:
    guard = guarded(store)
    store.failing = True
    await guard.set("ns", "a", b"1", None)
    store.failing = False
    store.gate = asyncio.Event()  # the replay of "a" is now on the wire, held
    async with asyncio.timeout(1):
        while not store.calls or store.calls[-1][0] != "set_many":
            await asyncio.sleep(0.001)
    async with asyncio.timeout(1):
        assert await guard.invalidate("ns") is SKIPPED  # journaled behind it, not sent
    store.gate.set()
    await drained(guard)
    kinds = [call[0] for call in store.calls if call[0] in ("set_many", "invalidate")]
    assert kinds[-2:] == ["set_many", "invalidate"]
    assert ("ns", "a") not in store.data


async def test_write_cancelled_mid_call_is_journaled(store: FakeStore) -> None:
    guard = guarded(store)
    store.gate = asyncio.Event()
    write = asyncio.ensure_future(guard.set("ns", "k", b"v", None))
    await reached(store)
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert guard.journal is not None
    assert guard.journal.covers("ns", "k")  # it may or may not have landed: send it again
    store.gate.set()
    await drained(guard)
    assert store.data[("ns", "k")] == b"v"
    assert guard.breaker.state is BreakerState.CLOSED  # cancelling is not a failure


async def test_replay_is_the_probe_when_no_caller_comes(store: FakeStore) -> None:
    guard = guarded(store)
    store.failing = True
    for n in range(3):
        await guard.set("ns", f"k{n}", b"v", None)
    breaker = guard.breaker
    assert breaker.state is BreakerState.OPEN
    store.failing = False
    await drained(guard)  # nobody called the store: the replay probed and closed the breaker
    assert breaker.snapshot()["state"] == "closed"
    assert {k for _, k in store.data} == {"k0", "k1", "k2"}


async def test_aclose_stops_the_replay(store: FakeStore) -> None:
    guard = guarded(store, recovery_timeout=60, max_recovery_timeout=60)
    store.failing = True
    await guard.set("ns", "k", b"v", None)
    await guard.aclose()
    assert guard.replay is not None
    assert not guard.replay.running


async def test_callers_never_wait_out_a_probe_while_the_replay_can_probe(store: FakeStore) -> None:
    clock = FakeClock()
    guard = guarded(store, clock=clock, recovery_timeout=5, max_recovery_timeout=5)
    store.failing = True
    for n in range(3):
        await guard.set("ns", f"k{n}", b"v", None)  # journaled; the breaker opens
    assert guard.breaker.state is BreakerState.OPEN
    store.calls.clear()
    clock.now += 10  # the open period is over: the next call would be the probe
    assert await guard.get("ns", "other") is SKIPPED  # the replay probes, not this caller
    assert await direct_get(guard, "ns", "other") is SKIPPED
    assert store.calls == []


async def test_a_late_answer_from_before_the_trip_does_not_count_as_the_probe(
    store: FakeStore,
) -> None:
    clock = FakeClock()
    guard = guarded(store, journal=False, clock=clock, recovery_timeout=5, max_recovery_timeout=5)
    store.gate, store.gated = asyncio.Event(), {"get"}
    early = asyncio.ensure_future(guard.get("ns", "k"))  # admitted while closed, held
    async with asyncio.timeout(1):
        while not store.calls:
            await asyncio.sleep(0.001)
    guard.breaker.trip()
    clock.now += 5
    assert guard.breaker.state is BreakerState.HALF_OPEN
    store.gate.set()
    assert await early is None  # the caller still gets its answer
    assert guard.breaker.state is BreakerState.HALF_OPEN  # but the breaker did not close


async def test_an_open_store_is_pinged_off_the_callers_path_and_back_soon(
    store: FakeStore,
) -> None:
    """recovery_timeout is a minute: only the watch's ping can bring it back this soon."""
    guard = GuardedStore(
        store,
        CircuitBreaker(
            name="redis", failure_threshold=1, recovery_timeout=60, max_recovery_timeout=60
        ),
        journal=None,
        watch_interval=0.01,
    )
    store.failing = True
    assert await guard.get("ns", "k") is FAILED
    assert guard.breaker.state is BreakerState.OPEN
    async with asyncio.timeout(2):
        while sum(call[0] == "ping" for call in store.calls) < 3:
            await asyncio.sleep(0.002)  # pings keep failing: the breaker stays open
    assert guard.breaker.state is BreakerState.OPEN
    store.failing = False
    async with asyncio.timeout(2):
        while guard.breaker.state is BreakerState.OPEN:
            await asyncio.sleep(0.002)
    assert guard.breaker.state is BreakerState.HALF_OPEN
    store.data[("ns", "k")] = b"back"
    assert await guard.get("ns", "k") == b"back"  # the probe
    assert guard.breaker.state is BreakerState.CLOSED
    await guard.aclose()


async def test_a_direct_call_that_raises_a_bug_is_absorbed_and_not_counted(
    store: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    guard = guarded(store, journal=False)

    async def broken(namespace: str, key: str) -> bytes | None:
        raise KeyError(key)

    monkeypatch.setattr(store, "get", broken)
    assert await direct_get(guard, "ns", "k") is BUG
    assert guard.bugs == 1
    assert guard.breaker.consecutive_failures == 0


async def test_a_cancelled_direct_call_is_re_raised_and_counts_neither_way(
    store: FakeStore,
) -> None:
    guard = guarded(store, journal=False, failure_threshold=1)
    store.gate = asyncio.Event()
    call = asyncio.ensure_future(direct_get(guard, "ns", "k"))
    await reached(store)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    assert guard.breaker.state is BreakerState.CLOSED
    assert guard.failures == 0
    assert guard.bugs == 0
