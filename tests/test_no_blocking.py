"""The suite-wide guard against blocking calls on the event loop (tests/conftest.py)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from blockbuster import BlockingError

from toolweaver_async import CircuitBreaker


def _sleepy_clock() -> float:
    time.sleep(0)
    return 0.0


async def test_a_blocking_call_on_the_loop_fails_any_test() -> None:
    with pytest.raises(BlockingError):
        time.sleep(0)  # noqa: ASYNC251 - the call under test


async def test_a_blocking_call_the_library_makes_on_the_loop_fails_the_test() -> None:
    breaker = CircuitBreaker(failure_threshold=1, clock=_sleepy_clock)
    with pytest.raises(BlockingError):
        breaker.record_failure()  # reads the clock as it opens


def test_code_outside_a_running_loop_may_block(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"no loop runs in this thread")
    time.sleep(0)


@pytest.mark.allow_blocking(reason="checks that the opt-out covers the test's own code only")
async def test_an_opted_out_test_may_block_but_the_library_still_may_not(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"the test's own file I/O")
    time.sleep(0)  # noqa: ASYNC251 - the call under test
    breaker = CircuitBreaker(failure_threshold=1, clock=_sleepy_clock)
    with pytest.raises(BlockingError):
        breaker.record_failure()
