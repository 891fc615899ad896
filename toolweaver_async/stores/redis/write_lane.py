"""One connection for this process's cache writes, tracked so that they never echo back.

The invalidation channel (:mod:`.tracking`) hears of every change to the cache's keys. Heard
through the channel's own tracking, a change this process made comes back too, and the writer
drops the memory copy it has just stored: the next get of that key pays a Redis round trip.
Redis's ``NOLOOP`` leaves out the changes of the very connection that asked for tracking, so the
store's sets and deletes travel one connection of their own, tracked for the channel::

    CLIENT TRACKING on REDIRECT <channel's client id> BCAST PREFIX <prefix>: NOLOOP

Every other client's change (another process, an operator, an expiry, this process's own
bookkeeping on other connections) still reaches the channel, exactly as before; a key changed
by this lane and by another client in the same server turn is reported too. One connection
does not mean one round trip at a time: batches overlap on it (:mod:`.pipelined`), and they
land in the order they were written, so two writes of a key land in call order.

The lane holds the channel's promise only while its socket lives: a new socket is untracked.
So :attr:`WriteLane.epoch` counts sockets (a redis-py connect callback), tracking belongs to
the epoch it was turned on in, and the channel checks :meth:`WriteLane.confirm` every heartbeat:
a PING answered on the still-tracked socket proves the tracking held until the PING. Anything
else ends the channel's session, which the memory layer treats as a lost channel.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from .pipelined import PipelinedConnection

__all__ = ["LaneHeartbeat", "LaneLost", "LaneMismatch", "WriteLane", "run_id_of"]

# Tracking is off until the channel turns it on.
_UNTRACKED: Final = -1


class LaneMismatch(ResponseError):
    """The lane reached another server than the channel it was to be tracked for."""


def run_id_of(info: Any) -> str | None:
    """The ``run_id`` an ``INFO server`` reply names."""
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("run_id:"):
            return line.partition(":")[2].strip()
    return None


class WriteLane:
    """The store's write connection (one, so that NOLOOP covers every write it carries)."""

    def __init__(self, connect: Callable[[], AbstractConnection], *, timeout: float) -> None:
        self._connect = connect
        self.epoch = 0  # sockets opened so far
        self._tracked_epoch = _UNTRACKED
        # Set once the channel first tracked the lane; the store's writes use it from then on,
        # tracked or not, so that one key's writes never switch connections back and forth.
        self.attached = False
        self._claimed = False
        self.connection = PipelinedConnection(self._new_connection, timeout=timeout)

    def claim(self) -> bool:
        """Reserve the lane for one invalidation channel; ``False`` when another has it (a
        store shared by two caches): tracking it for a second channel would silence the
        first, so the second tracks for itself and hears its own writes."""
        if self._claimed:
            return False
        self._claimed = True
        return True

    @property
    def tracked(self) -> bool:
        """The socket in use still has the tracking the channel turned on."""
        return self._tracked_epoch == self.epoch

    def _new_connection(self) -> AbstractConnection:
        connection = self._connect()
        connection.register_connect_callback(self._connected)  # type: ignore[no-untyped-call]
        return connection

    def _connected(self, connection: AbstractConnection) -> None:
        self.epoch += 1

    async def track(self, redirect: int, prefix: bytes, run_id: str | None) -> None:
        """Send this lane's changes under ``prefix`` to client ``redirect`` of the server whose
        ``run_id`` is given, leaving out the lane's own. Raises when the lane's server refuses
        or is another server (after a Sentinel failover, the channel and the lane may briefly
        reach different primaries)."""
        tracking = ("CLIENT", "TRACKING", "on", "REDIRECT", redirect, "BCAST", "NOLOOP")
        replies = await self.connection.pipeline(
            [("CLIENT", "TRACKING", "off"), (*tracking, "PREFIX", prefix), ("INFO", "server")]
        )
        epoch = self.epoch
        for reply in replies:
            if isinstance(reply, Exception):
                raise reply
        if run_id is not None and run_id_of(replies[2]) != run_id:
            await self.connection.pipeline([("CLIENT", "TRACKING", "off")])
            raise LaneMismatch("the write lane reached another server than the channel")
        self._tracked_epoch = epoch
        self.attached = True

    async def confirm(self) -> bool:
        """PING on the lane: ``True`` when answered by the socket still tracked."""
        await self.connection.pipeline([("PING",)])
        return self.tracked

    def describe(self) -> dict[str, Any]:
        return {"attached": self.attached, "tracked": self.tracked, "sockets": self.epoch}

    async def aclose(self) -> None:
        await self.connection.aclose()


class LaneLost(RedisConnectionError):
    """The lane stopped proving its tracking: the channel's session must end."""


class LaneHeartbeat:
    """The lane's half of a channel's heartbeat: a PING on the lane beside each PING on the
    channel. A channel vouches for changes up to the older of its own last answered PING and
    the lane's: only then was the lane still reporting, and the report delivered."""

    def __init__(self, lane: WriteLane, *, deadline: float, started: float) -> None:
        self._lane = lane
        self._deadline = deadline
        self._pending: deque[tuple[float, asyncio.Task[bool]]] = deque()
        self.vouched_at = started

    def ping(self, now: float) -> None:
        self._pending.append((now, asyncio.ensure_future(self._lane.confirm())))

    def check(self, now: float) -> None:
        """Raise :class:`LaneLost` (or ``TimeoutError``) when the lane can no longer vouch."""
        if not self._lane.tracked:
            raise LaneLost("the write lane opened a new socket: its tracking ended")
        pending = self._pending
        while pending and pending[0][1].done():
            sent, task = pending.popleft()
            failure = task.exception() if not task.cancelled() else LaneLost("PING cancelled")
            if failure is not None:
                raise LaneLost(f"write lane: {type(failure).__name__}: {failure}")
            if not task.result():
                raise LaneLost("the write lane opened a new socket: its tracking ended")
            self.vouched_at = sent
        if pending and now - pending[0][0] > self._deadline:
            raise TimeoutError(f"write lane: no PONG within {self._deadline:.2f} s")

    async def aclose(self) -> None:
        tasks = [task for _, task in self._pending]
        self._pending.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
