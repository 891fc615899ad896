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
from typing import Any

from ...errors import ConfigError

__all__ = ["RedisLock"]

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


class RedisLock:
    """A :class:`~toolweaver_async.stores.base.KeyLock` in Redis. ``command`` runs one Redis
    command and reports failures as :class:`~toolweaver_async.errors.StoreError` (the
    store's own translation seam)."""

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
