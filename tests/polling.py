"""Waiting for a condition in tests: poll with a deadline, never a fixed sleep."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest


async def eventually(
    check: Callable[[], Awaitable[bool] | bool], within: float = 5.0, *, what: str = ""
) -> None:
    """Poll ``check`` (sync or async) every few milliseconds until it holds; fail the test
    after ``within`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + within
    while True:
        outcome = check()
        if outcome if isinstance(outcome, bool) else await outcome:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"not within {within} s: {what or 'condition'}")
        await asyncio.sleep(0.002)
