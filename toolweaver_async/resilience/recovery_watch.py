"""While a store's breaker is open, ping the store in the background, off every agent's path.

The breaker's open period grows after each failed probe (to 30 s by default) because a probe is a
real call that may cost an agent a timeout. A ping costs no agent anything, so it can run often:
the first ping the store answers ends the open period (``CircuitBreaker.end_open_period``), and
the next call, or the outage journal's replay, is the probe that closes the breaker. A store is
thus used again within about ``interval`` of coming back, however long it was away.

A store that answers pings but still fails the probe (it is loading, or out of memory) makes the
watch sit out the next open period, so such a store is probed at most twice as often as the
breaker alone would probe it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from ..errors import ConfigError
from .breaker import BreakerState, CircuitBreaker

__all__ = ["RecoveryWatch"]

logger = logging.getLogger("toolweaver_async.cache")


class RecoveryWatch:
    """Pings a store every ``interval`` seconds while its breaker is open (one task at most)."""

    __slots__ = ("_breaker", "_closed", "_ended_period", "_interval", "_name", "_ping", "_task")

    def __init__(
        self,
        breaker: CircuitBreaker,
        ping: Callable[[], Awaitable[None]],
        *,
        interval: float,
        name: str,
    ) -> None:
        if not interval > 0:
            raise ConfigError(f"interval must be > 0 seconds, got {interval!r}")
        self._breaker = breaker
        self._ping = ping
        self._interval = interval
        self._name = name
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._ended_period = False  # the half-open state now was brought about by a ping
        breaker.add_listener(self._breaker_changed)
        if breaker.state is BreakerState.OPEN:
            self._start()

    async def aclose(self) -> None:
        """Stop watching (idempotent)."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def _breaker_changed(self, _name: str, old: BreakerState, new: BreakerState) -> None:
        if new is BreakerState.OPEN:
            if old is BreakerState.HALF_OPEN and self._ended_period:
                self._ended_period = False  # it answered the ping, not the probe: sit one out
                return
            self._start()
        elif new is BreakerState.CLOSED:
            self._ended_period = False

    def _start(self) -> None:
        if self._closed or (self._task is not None and not self._task.done()):
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # tripped outside a loop: the breaker's own timer still works
            return
        self._task = loop.create_task(self._watch(), name=f"watch {self._name} store")

    async def _watch(self) -> None:
        breaker = self._breaker
        while True:
            await asyncio.sleep(self._interval)
            if breaker.state is not BreakerState.OPEN:
                return  # the open period ran out meanwhile: the breaker probes by itself
            try:
                async with asyncio.timeout(self._interval):
                    await self._ping()
            except Exception as exc:
                logger.debug("%s store: health ping failed: %r", self._name, exc)
                continue
            if breaker.state is BreakerState.OPEN:
                self._ended_period = True
                breaker.end_open_period(f"{self._name} store answered a health ping")
            return
