"""WorkerLane: concurrent blocking steps share worker-thread hops, in order, each with its own
result or error; the thread takes hop after hop without the loop, handing results back as a long
hop goes; a step past the deadline releases everyone and stalls the lane until it returns.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolweaver_async.stores.worker_lane import Stall, WorkerLane

from .polling import eventually


class CountingExecutor(ThreadPoolExecutor):
    """Counts jobs: each submit is one wake-up of the worker thread by the loop."""

    def __init__(self) -> None:
        super().__init__(max_workers=1)
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


@pytest.fixture
def executor() -> Iterator[CountingExecutor]:
    pool = CountingExecutor()
    yield pool
    pool.shutdown(wait=True)


def _lane(executor: CountingExecutor, deadline: float | None = None) -> WorkerLane:
    return WorkerLane(asyncio.get_running_loop(), executor, deadline=deadline)


class Gate:
    """A step that blocks its worker thread until the test opens the gate."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()

    def __call__(self, value: Any = "gate") -> Any:
        self.entered.set()
        if not self.opened.wait(timeout=10):
            raise AssertionError("gate never opened")
        return value


async def _wait_entered(gate: Gate) -> None:
    await eventually(gate.entered.is_set, what="the gated step to start")


async def test_a_lone_step_goes_out_at_once_in_one_hop(executor: CountingExecutor) -> None:
    lane = _lane(executor)
    assert await lane.run(lambda a, b: a + b, 2, 3) == 5
    assert executor.jobs == 1


async def test_steps_asked_during_a_hop_run_after_it_in_order_without_another_job(
    executor: CountingExecutor,
) -> None:
    lane = _lane(executor)
    order: list[int] = []
    gate = Gate()
    first = lane.run(gate)
    await _wait_entered(gate)
    later = [lane.run(lambda n=n: order.append(n) or n) for n in range(10)]
    gate.opened.set()
    assert await first == "gate"
    assert await asyncio.gather(*later) == list(range(10))
    assert order == list(range(10))
    assert executor.jobs == 1  # the busy thread took them itself


@pytest.mark.allow_blocking(reason="blocks the loop on purpose: the thread must not need it")
async def test_the_thread_takes_the_next_hop_without_waiting_for_the_loop(
    executor: CountingExecutor,
) -> None:
    """A busy lane's thread goes from one hop to the next by itself: with the event loop
    blocked (it cannot hand anything on), the steps queued behind a hop still run."""
    lane = _lane(executor)
    gate = Gate()
    last_ran = threading.Event()
    first = lane.run(gate)
    await _wait_entered(gate)
    later = [lane.run(lambda: None) for _ in range(3)] + [lane.run(last_ran.set)]
    gate.opened.set()
    assert last_ran.wait(timeout=5), "the next hop waited for the loop"  # the loop is blocked
    await first
    await asyncio.gather(*later)


async def test_a_long_hop_hands_back_the_results_it_has_before_it_ends(
    executor: CountingExecutor,
) -> None:
    """A step done early in a hop is answered while a later step of the hop still runs, not
    when the whole hop is done. The sleep is the first step's work (a slow write)."""
    lane = _lane(executor)
    gate = Gate()
    go_on = threading.Event()
    first = lane.run(gate)
    await _wait_entered(gate)
    early = lane.run(lambda: time.sleep(0.005) or "early")
    late = lane.run(lambda: go_on.wait(timeout=10) and "late")
    gate.opened.set()
    await first
    try:
        assert await asyncio.wait_for(early, 5) == "early"
        assert not late.done()
    finally:
        go_on.set()
    assert await late == "late"


async def test_a_hop_takes_at_most_64_steps(executor: CountingExecutor) -> None:
    """Seen through a step that hangs: the steps of its hop (64 at most) still run once it
    returns, those still queued behind the hop are dropped when the deadline releases them."""
    lane = _lane(executor, deadline=0.2)
    gate, stuck = Gate(), Gate()
    first = lane.run(gate)
    await _wait_entered(gate)
    ran: list[int] = []
    hung = lane.run(stuck)
    later = [lane.run(lambda n=n: ran.append(n)) for n in range(100)]
    gate.opened.set()
    await first
    await _wait_entered(stuck)
    with pytest.raises(TimeoutError):
        await hung
    outcomes = await asyncio.gather(*later, return_exceptions=True)
    assert all(isinstance(outcome, TimeoutError) for outcome in outcomes)
    stuck.opened.set()
    await eventually(lambda: not lane.stalled, what="the stuck step to return")
    assert ran == list(range(63))  # the stuck step and 63 more made its hop


async def test_a_failing_step_fails_only_its_own_waiter(executor: CountingExecutor) -> None:
    lane = _lane(executor)
    gate = Gate()
    first = lane.run(gate)
    await _wait_entered(gate)

    def boom() -> None:
        raise PermissionError("no entry for you")

    before, failing, after = lane.run(lambda: 1), lane.run(boom), lane.run(lambda: 3)
    gate.opened.set()
    await first
    assert await before == 1
    with pytest.raises(PermissionError, match="no entry"):
        await failing
    assert await after == 3


async def test_a_cancelled_waiter_stops_waiting_but_its_step_still_runs(
    executor: CountingExecutor,
) -> None:
    lane = _lane(executor)
    gate = Gate()
    ran: list[str] = []
    first = lane.run(gate)
    await _wait_entered(gate)
    cancelled = lane.run(lambda: ran.append("cancelled one"))
    kept = lane.run(lambda: ran.append("kept") or "kept")
    cancelled.cancel()
    gate.opened.set()
    await first
    assert await kept == "kept"
    assert ran == ["cancelled one", "kept"]


async def test_a_step_past_the_deadline_releases_every_waiter_and_stalls_the_lane(
    executor: CountingExecutor,
) -> None:
    lane = _lane(executor, deadline=0.05)
    gate = Gate()
    stuck = lane.run(gate)
    await _wait_entered(gate)
    queued = lane.run(lambda: "queued")
    with pytest.raises(TimeoutError, match=r"deadline 0\.05 s"):
        await stuck
    with pytest.raises(TimeoutError):
        await queued
    assert lane.stalled
    jobs = executor.jobs
    refused = lane.run(lambda: "not run")
    assert refused.done()  # failed at once, no waiting behind the hung step
    with pytest.raises(TimeoutError, match="has been running"):
        await refused
    assert executor.jobs == jobs
    gate.opened.set()
    await eventually(lambda: not lane.stalled, what="the stuck step to return")
    assert await lane.run(lambda: "again") == "again"


async def test_recovered_is_done_once_the_stuck_step_returns(executor: CountingExecutor) -> None:
    lane = _lane(executor, deadline=0.05)
    assert lane.recovered().done()  # nothing stuck
    gate = Gate()
    stuck = lane.run(gate)
    with pytest.raises(TimeoutError):
        await stuck
    recovered = lane.recovered()
    assert not recovered.done()
    assert lane.recovered() is recovered  # one future for every waiter
    gate.opened.set()
    await asyncio.wait_for(recovered, 5)
    assert not lane.stalled


async def test_a_long_hop_that_keeps_finishing_steps_is_not_cut_short(
    executor: CountingExecutor,
) -> None:
    """Six steps of 0.1 s share one hop of 0.6 s; the deadline (0.5 s) bounds a step, not a
    hop. The sleep is the steps' work (a slow disk), not a wait for a race."""
    lane = _lane(executor, deadline=0.5)
    gate = Gate()
    first = lane.run(gate)
    await _wait_entered(gate)
    slow = [lane.run(lambda n=n: time.sleep(0.1) or n) for n in range(6)]
    gate.opened.set()
    await first
    assert await asyncio.gather(*slow) == list(range(6))
    assert not lane.stalled


async def test_a_step_that_escapes_with_a_base_exception_fails_its_hop_not_the_lane(
    executor: CountingExecutor,
) -> None:
    class Escape(BaseException):
        pass

    def escape() -> None:
        raise Escape

    lane = _lane(executor)
    gate = Gate()
    first = lane.run(gate)
    await _wait_entered(gate)
    doomed, neighbour = lane.run(escape), lane.run(lambda: "neighbour")
    gate.opened.set()
    await first
    for waiter in (doomed, neighbour):
        with pytest.raises(RuntimeError, match="worker step died"):
            await waiter
    assert await lane.run(lambda: "still working") == "still working"


async def test_a_shut_down_executor_fails_the_steps_instead_of_hanging() -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    pool.shutdown()
    lane = WorkerLane(asyncio.get_running_loop(), pool)
    with pytest.raises(RuntimeError):
        await lane.run(lambda: "never")
    with pytest.raises(RuntimeError):
        await lane.run(lambda: "not stuck behind the first either")


def _touches_its_first_argument(fn: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """Steps here take the item they change first; ``None`` first: it may change anything."""
    return None if args[0] is None else (args[0],)


async def test_an_item_is_busy_until_every_step_that_may_change_it_has_returned(
    executor: CountingExecutor,
) -> None:
    lane = WorkerLane(asyncio.get_running_loop(), executor, touches=_touches_its_first_argument)
    gate = Gate()
    first = lane.run(lambda item: gate(item), "a")
    await _wait_entered(gate)
    queued = [lane.run(lambda item: item, "b"), lane.run(lambda item: item, "b")]
    assert lane.busy_with("a")
    assert lane.busy_with("b")
    assert not lane.busy_with("c")
    gate.opened.set()
    assert await first == "a"
    assert await asyncio.gather(*queued) == ["b", "b"]
    assert not lane.busy_with("a")
    assert not lane.busy_with("b")


async def test_a_step_of_unknown_reach_makes_every_item_busy(executor: CountingExecutor) -> None:
    lane = WorkerLane(asyncio.get_running_loop(), executor, touches=_touches_its_first_argument)
    unknown = lane.run(lambda item: item, None)
    assert lane.busy_with("anything")
    await unknown
    assert not lane.busy_with("anything")
    plain = WorkerLane(asyncio.get_running_loop(), executor)  # no touches: any step, anything
    step = plain.run(lambda: "x")
    assert plain.busy_with("anything")
    await step
    assert not plain.busy_with("anything")


async def test_a_stuck_step_keeps_its_item_busy_until_it_returns_and_frees_the_queued_ones(
    executor: CountingExecutor,
) -> None:
    """Released waiters do not mean a step is done: the stuck step (and the rest of its hop)
    still runs once it returns, so a read of its item must still queue behind it. Steps
    queued behind the hop never run: their items are free at once."""
    lane = WorkerLane(
        asyncio.get_running_loop(),
        executor,
        deadline=0.05,
        touches=_touches_its_first_argument,
    )
    gate = Gate()
    stuck = lane.run(lambda item: gate(item), "stuck")
    await _wait_entered(gate)
    never = lane.run(lambda item: item, "queued")
    with pytest.raises(TimeoutError):
        await stuck
    with pytest.raises(TimeoutError):
        await never
    assert lane.busy_with("stuck")
    assert not lane.busy_with("queued")
    gate.opened.set()
    await eventually(lambda: not lane.busy_with("stuck"), what="the stuck step to return")


async def test_lanes_sharing_a_stall_all_refuse_new_steps_while_one_step_is_stuck() -> None:
    """A dead mount hangs every lane on it: the other lane fails new steps at once too, and
    both serve again once the stuck step returns."""
    loop = asyncio.get_running_loop()
    stall = Stall(loop)
    stuck_pool, other_pool = CountingExecutor(), CountingExecutor()
    try:
        stuck_lane = WorkerLane(loop, stuck_pool, deadline=0.05, stall=stall)
        other_lane = WorkerLane(loop, other_pool, deadline=0.05, stall=stall)
        gate = Gate()
        with pytest.raises(TimeoutError):
            await stuck_lane.run(gate)
        assert other_lane.stalled
        refused = other_lane.run(lambda: "not run")
        assert refused.done()
        with pytest.raises(TimeoutError, match="has been running"):
            await refused
        recovered = other_lane.recovered()
        assert not recovered.done()
        gate.opened.set()
        await asyncio.wait_for(recovered, 5)
        assert await other_lane.run(lambda: "again") == "again"
        assert await stuck_lane.run(lambda: "again") == "again"
    finally:
        stuck_pool.shutdown(wait=False)
        other_pool.shutdown(wait=False)


def test_the_deadline_must_be_positive(executor: CountingExecutor) -> None:
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(ValueError, match="deadline"):
            WorkerLane(loop, executor, deadline=0)
    finally:
        loop.close()


@given(st.lists(st.tuples(st.integers(), st.booleans()), max_size=150))
@settings(max_examples=60, deadline=None)
def test_any_burst_of_steps_runs_in_order_and_each_caller_gets_its_own_outcome(
    steps: list[tuple[int, bool]],
) -> None:
    """Any mix of succeeding and failing steps, asked at once, across however many hops:
    the thread runs them in the order asked, and each waiter sees exactly its own outcome."""
    ran: list[int] = []

    def step(value: int, fails: bool) -> int:
        ran.append(value)
        if fails:
            raise ValueError(value)
        return value

    pool = CountingExecutor()

    async def burst() -> list[Any]:
        lane = WorkerLane(asyncio.get_running_loop(), pool, deadline=5.0)
        waiters = [lane.run(step, value, fails) for value, fails in steps]
        return await asyncio.gather(*waiters, return_exceptions=True)

    try:
        outcomes = asyncio.run(burst())
    finally:
        pool.shutdown(wait=True)  # joins the worker thread, so off the loop
    assert ran == [value for value, _ in steps]
    for (value, fails), outcome in zip(steps, outcomes, strict=True):
        if fails:
            assert isinstance(outcome, ValueError)
            assert outcome.args == (value,)
        else:
            assert outcome == value
