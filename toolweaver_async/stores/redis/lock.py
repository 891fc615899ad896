"""A lock shared by every process that uses one Redis: one loader per key across processes.

``SET <name> <token> NX PX <ttl>`` takes it; only the holder of the random token may extend or
release it, each with one atomic compare-and-act script, so a holder that outlived its lock can
never delete the next holder's. A holder that dies simply stops extending it, and the lock
vanishes after its ``ttl``: that bounds how long a crash blocks everyone else.

An acquire cancelled or failed mid-call has no known outcome: its ``SET`` may still land after
the caller gave up, leaving a lock nobody holds. Such a lock is released in the background, by
its token, as soon as Redis answers (:meth:`RedisLock.release_unknown`).

A server whose ACL refuses scripts (``-eval``) gets the same two steps without a script
(``GET`` then ``DEL`` or ``PEXPIRE``): not atomic, but a holder only loses the race when its own
lock expired between the two, which its extensions prevent. Reported once per store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoPermissionError

from ...errors import ConfigError, StoreError

logger = logging.getLogger("toolweaver_async.stores.redis")

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


class LockPolicy:
    """What one store's locks learned about the server: whether it refuses scripts, and the
    releases still owed for acquires with no known outcome (``spawn`` runs them)."""

    __slots__ = ("scripts_refused", "spawn")

    def __init__(self, spawn: Callable[[Awaitable[None]], None]) -> None:
        self.scripts_refused = False
        self.spawn = spawn

    def refuse_scripts(self, exc: BaseException) -> None:
        if not self.scripts_refused:
            self.scripts_refused = True
            logger.warning(
                "redis refuses scripts for this user (%s): locks are extended and released "
                "without them",
                exc,
            )


def _refused_by_policy(exc: StoreError) -> bool:
    return isinstance(exc.__cause__, NoPermissionError)


class RedisLock:
    """A :class:`~toolweaver_async.stores.base.KeyLock` in Redis. ``command`` runs one Redis
    command and reports failures as :class:`~toolweaver_async.errors.StoreError` (the
    store's own translation seam)."""

    __slots__ = ("_command", "_policy", "_px", "name", "token", "ttl")

    def __init__(
        self,
        command: Callable[..., Awaitable[Any]],
        name: str,
        *,
        ttl: float,
        policy: LockPolicy | None = None,
    ) -> None:
        if not (isinstance(ttl, int | float) and math.isfinite(ttl) and ttl > 0):
            raise ConfigError(f"lock_ttl must be > 0 seconds, got {ttl!r}")
        self._command = command
        self.name = name
        self.ttl = float(ttl)
        self._px = max(1, math.ceil(ttl * 1000))
        self.token = secrets.token_hex(16)
        self._policy = policy

    def __repr__(self) -> str:
        return f"RedisLock(name={self.name!r}, ttl={self.ttl})"

    async def acquire(self) -> bool:
        try:
            if await self._command("SET", self.name, self.token, "NX", "PX", self._px):
                return True
        except StoreError as exc:
            # No connection at all: nothing was sent, so nothing can land later.
            if not isinstance(exc.__cause__, RedisConnectionError):
                self._owe_release()
            raise
        except BaseException:
            self._owe_release()
            raise
        # Held by someone. Ours always expire; one without an expiry was left by something
        # else and would hold every loader of this key off for good: give it ours (NX: only
        # when it has none, so a live holder's lock is never touched).
        # (Redis < 7 has no NX here; any failure shows on the next call anyway.)
        with contextlib.suppress(StoreError):
            await self._command("PEXPIRE", self.name, self._px, "NX")
        return False

    def _owe_release(self) -> None:
        """Cancelled or failed mid-call: the SET may land after we gave up. Never wait for it
        here (the caller is leaving); release it by token in the background."""
        if self._policy is not None:
            self._policy.spawn(self.release_unknown())

    async def extend(self) -> bool:
        if self._policy is None or not self._policy.scripts_refused:
            try:
                return bool(
                    await self._command("EVAL", _EXTEND, 1, self.name, self.token, self._px)
                )
            except StoreError as exc:
                if self._policy is None or not _refused_by_policy(exc):
                    raise
                self._policy.refuse_scripts(exc.__cause__ or exc)
        if await self._command("GET", self.name) != self.token.encode():
            return False
        return bool(await self._command("PEXPIRE", self.name, self._px))

    async def release(self) -> bool:
        if self._policy is None or not self._policy.scripts_refused:
            try:
                return bool(await self._command("EVAL", _RELEASE, 1, self.name, self.token))
            except StoreError as exc:
                if self._policy is None or not _refused_by_policy(exc):
                    raise
                self._policy.refuse_scripts(exc.__cause__ or exc)
        if await self._command("GET", self.name) != self.token.encode():
            return False
        return bool(await self._command("DEL", self.name))

    async def release_unknown(self) -> None:
        """Release this lock after an acquire with no known outcome: retried while Redis does
        not answer, for at most its ``ttl`` (by then it is gone anyway); done once released,
        or once Redis twice answered that it is not held (a late ``SET`` lands before a
        later command of ours reaches a live server)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.ttl
        delay, not_held = 0.02, 0
        while loop.time() < deadline:
            try:
                if await self.release():
                    return
                not_held += 1
                if not_held >= 2:
                    return
            except StoreError:
                pass
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
