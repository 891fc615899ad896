"""A key lock behind its store's circuit breaker: one loader per key across processes.

The lock itself lives in a store that offers one (see
:class:`~toolweaver_async.stores.base.LockingStore`); this wrapper sends its calls through the
store's breaker, so a down lock store makes loaders coordinate within their own process only.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from ..resilience.guard import Unreachable
from ..stores.base import KeyLock

__all__ = ["GuardedLock"]


class GuardedLock:
    """A :class:`~toolweaver_async.stores.base.KeyLock` whose calls go through its store's
    circuit breaker.

    Each method answers ``None`` when the store could not be asked (breaker open, or the call
    failed and was counted): the caller then coordinates within its own process only.
    """

    __slots__ = ("_attempt", "lock")

    def __init__(
        self,
        lock: KeyLock,
        attempt: Callable[[Callable[[], Awaitable[bool]]], Awaitable[bool | Unreachable]],
    ) -> None:
        self.lock = lock
        self._attempt = attempt

    @property
    def ttl(self) -> float:
        return self.lock.ttl

    async def acquire(self) -> bool | None:
        return _answer(await self._attempt(self.lock.acquire))

    async def extend(self) -> bool | None:
        return _answer(await self._attempt(self.lock.extend))

    async def release(self) -> bool | None:
        return _answer(await self._attempt(self.lock.release))


def _answer(outcome: bool | Unreachable) -> bool | None:
    return None if isinstance(outcome, Unreachable) else outcome
