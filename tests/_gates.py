"""Gates for race tests: hold a store's calls at a known point until the test lets them go."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any


def gate(store: Any, method: str) -> tuple[asyncio.Event, asyncio.Event]:
    """Hold ``store.method`` calls until ``go`` is set; ``reached`` says one is waiting."""
    reached, go = asyncio.Event(), asyncio.Event()
    real: Callable[..., Awaitable[Any]] = getattr(store, method)

    async def gated(*args: Any) -> Any:
        reached.set()
        await go.wait()
        return await real(*args)

    setattr(store, method, gated)
    return reached, go
