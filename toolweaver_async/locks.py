"""A lock shared by every process that uses one Redis: one loader per key across processes.

``SET <name> <token> NX PX <ttl>`` takes it; only the holder of the random token may extend or
release it, each with one atomic compare-and-act script, so a holder that outlived its lock can
never delete the next holder's. A holder that dies simply stops extending it, and the lock
vanishes after its ``ttl``: that bounds how long a crash blocks everyone else.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from .errors import ConfigError
from .guard import Unreachable

__all__ = ["GuardedLock", "KeyLock", "RedisLock"]

T = TypeVar("T")

# KEYS[1] lock name, ARGV[1] token: delete only while we hold it.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
"""

# KEYS[1] lock name, ARGV[1] token, ARGV[2] new lifetime in ms: extend only while we hold it.
_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""


class KeyLock(Protocol):
    """A lock on one cache key, held for at most ``ttl`` seconds unless extended."""

    ttl: float

    async def acquire(self) -> bool:
        """Take the lock if nobody holds it; ``True`` when taken. Never waits."""
        ...

    async def extend(self) -> bool:
        """Give the held lock a full ``ttl`` again; ``False`` when it is no longer ours."""
        ...

    async def release(self) -> bool:
        """Let go of the lock; ``False`` when it was no longer ours."""
        ...


class RedisLock:
    """A :class:`KeyLock` in Redis. ``command`` runs one Redis command and reports failures as
    :class:`~toolweaver_async.errors.StoreError` (the store's own translation seam)."""

    __slots__ = ("_command", "_px", "name", "token", "ttl")

    def __init__(self, command: Callable[..., Awaitable[Any]], name: str, *, ttl: float) -> None:
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
            raise ConfigError(f"lock_ttl must be > 0 seconds, got {ttl!r}")
        self._command = command
        self.name = name
        self.ttl = float(ttl)
        self._px = max(1, math.ceil(ttl * 1000))
        self.token = secrets.token_hex(16)

    def __repr__(self) -> str:
        return f"RedisLock(name={self.name!r}, ttl={self.ttl})"

    async def acquire(self) -> bool:
        return bool(await self._command("SET", self.name, self.token, "NX", "PX", self._px))

    async def extend(self) -> bool:
        return bool(await self._command("EVAL", _EXTEND, 1, self.name, self.token, self._px))

    async def release(self) -> bool:
        return bool(await self._command("EVAL", _RELEASE, 1, self.name, self.token))


class GuardedLock:
    """A :class:`KeyLock` whose calls go through its store's circuit breaker.

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
