"""One Redis connection on which round trips overlap: nothing waits for an earlier reply.

The write lane (:mod:`.write_lane`) must be a single connection, so that Redis's ``NOLOOP``
covers every write it carries. A connection that sends its next batch only once the previous
reply is in would make that one connection a queue: every write waits a round trip longer
under load, and a server that stops answering (SIGSTOP, a partition) fails one batch per
timeout, so the store's breaker, which counts each failed round trip once, would need five
timeouts to open. Here the calls of each event-loop turn leave as one write at once, and one
reader task takes the replies in order (Redis answers a connection's commands in the order
sent), so several batches are on the wire together and each fails on its own deadline.

Deadlines: every call is bounded by ``timeout`` from the moment it is made. A call still
unanswered at its deadline fails with a :class:`TimeoutError` it shares with the calls of its
batch (a breaker counts a batch once), or with a :class:`~.expiry.StalledTimeout` when this
process's loop ran the check more than half a timeout late (:mod:`.watchdog`). Its batch stays
in line: the replies, when they come, are read and dropped, so later batches get their own. A batch
unanswered for twice the timeout ends the connection, failing every batch on it with one
shared error; the next call opens a new one.

Order: batches are written in the order their calls were made, on one socket, so Redis runs
them in that order, including a batch whose callers have given up (cancelled or timed out):
the same key written twice lands in call order.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .expiry import timeout_error
from .replies import read_replies
from .resp import own_error, pack_command
from .watchdog import DeadlineWatchdog

__all__ = ["PipelinedConnection"]

# Batches written and not yet answered, at most, and commands per batch: while a server does
# not answer, what it will still run once it does stays small (as with four connections, one
# round trip each), so it has run long before an outage journal's replay overwrites it.
MAX_ON_WIRE: Final = 4
MAX_BATCH_COMMANDS: Final = 1000
_FAILURES: Final = (RedisError, OSError, TimeoutError)


class _Call:
    __slots__ = ("count", "deadline", "future", "packed")

    def __init__(
        self, future: asyncio.Future[list[Any]], packed: bytes, count: int, deadline: float
    ) -> None:
        self.future = future
        self.packed = packed
        self.count = count
        self.deadline = deadline


class _Batch:
    """The calls of one write, in order, and the replies they expect."""

    __slots__ = ("calls", "count", "failure", "sent_at")

    def __init__(self, calls: list[_Call], sent_at: float) -> None:
        self.calls = calls
        self.count = sum(call.count for call in calls)
        self.sent_at = sent_at
        self.failure: BaseException | None = None  # shared by every call of the batch

    def deliver(self, replies: list[Any]) -> None:
        offset = 0
        for call in self.calls:
            if not call.future.done():
                call.future.set_result(replies[offset : offset + call.count])
            offset += call.count

    def fail(self, failure: BaseException) -> None:
        for call in self.calls:
            if not call.future.done():
                call.future.set_exception(own_error(failure))


class PipelinedConnection:
    """Pipelined commands over one connection made by ``connect`` (see module doc)."""

    def __init__(self, connect: Callable[[], AbstractConnection], *, timeout: float) -> None:
        self._connect = connect
        self._timeout = timeout
        self._conn: AbstractConnection | None = None
        self._outbox: list[_Call] = []
        self._on_wire: deque[_Batch] = deque()
        self._sender: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchdog = DeadlineWatchdog(timeout, self._expire_due)
        self._closing: set[asyncio.Task[None]] = set()  # sockets given up, being closed
        self._closed = False
        self.round_trips = 0  # batches written
        self.requests = 0

    async def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Replies to ``commands``, in order; a command the server refused has its
        ``ResponseError`` as its reply."""
        self.requests += 1
        # Packed here, in the caller's task: a key that cannot be encoded fails this caller.
        packed = b"".join([pack_command(command) for command in commands])
        if self._closed:
            raise RedisConnectionError("redis store closed")
        loop = asyncio.get_running_loop()
        call = _Call(loop.create_future(), packed, len(commands), loop.time() + self._timeout)
        self._outbox.append(call)
        self._watchdog.arm(call.deadline)
        self._wake_sender()
        return await call.future

    @property
    def in_flight(self) -> int:
        """Batches written and not yet answered."""
        return len(self._on_wire)

    async def aclose(self) -> None:
        """Fail whatever waits and close the connection. Idempotent."""
        self._closed = True
        self._watchdog.stop()
        tasks = [task for task in (self._sender, self._reader) if task is not None]
        tasks += self._closing
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._drop(RedisConnectionError("redis store closed"))
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(*_FAILURES):
                await conn.disconnect()

    # -- writing and reading ---------------------------------------------------------------------

    async def _send(self) -> None:
        """Write what the outbox holds (this runs a loop turn after the first call of the
        turn, so every call of that turn is in), again while more arrives meanwhile."""
        try:
            while self._outbox and not self._closed and len(self._on_wire) < MAX_ON_WIRE:
                calls = self._take_batch()
                if not calls:
                    continue
                # In line before it is written: whatever fails from here fails it too.
                self._on_wire.append(_Batch(calls, asyncio.get_running_loop().time()))
                conn = self._conn
                if conn is None or not conn.is_connected:
                    conn = self._conn = self._connect()
                    # Bounded: a black-holed server accepts the socket, then never answers
                    # the handshake. (Sentinel-managed connections find the primary here.)
                    async with asyncio.timeout(2 * self._timeout):
                        await conn.connect()  # type: ignore[no-untyped-call]
                self.round_trips += 1
                async with asyncio.timeout(self._timeout):  # a full socket buffer waits here
                    await conn.send_packed_command(
                        b"".join([call.packed for call in calls]), check_health=False
                    )
                self._wake_reader()
        except Exception as exc:  # a driver failure, or a bug: every waiting caller gets it
            await self._lose(self._conn, exc)
        finally:
            self._sender = None

    def _take_batch(self) -> list[_Call]:
        """The next calls to write, in order, up to :data:`MAX_BATCH_COMMANDS` commands."""
        taken: list[_Call] = []
        commands = 0
        for at, call in enumerate(self._outbox):
            if call.future.done():
                continue
            if taken and commands + call.count > MAX_BATCH_COMMANDS:
                self._outbox = self._outbox[at:]
                return taken
            taken.append(call)
            commands += call.count
        self._outbox = []
        return taken

    def _wake_sender(self) -> None:
        if self._sender is None and self._outbox and not self._closed:
            self._sender = asyncio.get_running_loop().create_task(self._send())

    def _wake_reader(self) -> None:
        if self._reader is None and self._on_wire and self._conn is not None and not self._closed:
            self._reader = asyncio.get_running_loop().create_task(self._read(self._conn))

    async def _read(self, conn: AbstractConnection) -> None:
        """Take the replies of each batch on the wire, in order."""
        try:
            while self._on_wire and self._conn is conn:
                batch = self._on_wire[0]
                replies: list[Any] = []
                await read_replies(conn, batch.count, replies)
                if self._on_wire and self._on_wire[0] is batch:
                    self._on_wire.popleft()
                if batch.failure is None:
                    batch.deliver(replies)
                self._wake_sender()  # room on the wire for what waits
        except Exception as exc:
            await self._lose(conn, exc)
        finally:
            if self._reader is asyncio.current_task():
                self._reader = None
            # A batch written while the last reply was handed out, or on a new connection.
            self._wake_reader()

    async def _lose(self, conn: AbstractConnection | None, exc: BaseException) -> None:
        """``conn`` failed: every call on it or waiting for it fails with ``exc``. (A failure
        of a connection already replaced concerns nobody now.)"""
        if conn is not self._conn:
            return
        self._conn = None
        self._drop(exc)
        if conn is not None:
            with contextlib.suppress(*_FAILURES):
                await conn.disconnect(nowait=True)

    def _drop(self, exc: BaseException) -> None:
        on_wire, self._on_wire = self._on_wire, deque()
        for batch in on_wire:
            batch.fail(batch.failure or exc)
        outbox, self._outbox = self._outbox, []
        for call in outbox:
            if not call.future.done():
                call.future.set_exception(own_error(exc))

    # -- deadlines -------------------------------------------------------------------------------

    def _expire_due(self, due: float, stalled: bool) -> float | None:
        """The watchdog's pass: fail every call due by ``due`` (one shared timeout per batch,
        one for the calls not yet written), end a connection silent for two timeouts; the
        next deadline."""
        upcoming: list[float] = []
        for batch in self._on_wire:
            pending = [c.deadline for c in batch.calls if not c.future.done()]
            if pending and min(pending) <= due:
                if batch.failure is None:
                    batch.failure = timeout_error(self._timeout, stalled)
                batch.fail(batch.failure)
            elif pending:
                upcoming.append(min(pending))
        waiting = [c for c in self._outbox if not c.future.done()]
        late = [c for c in waiting if c.deadline <= due]
        if late:
            shared = timeout_error(self._timeout, stalled)
            for call in late:
                call.future.set_exception(own_error(shared))
        upcoming += [c.deadline for c in waiting if c.deadline > due]
        head = self._on_wire[0] if self._on_wire else None
        if head is not None:
            silent_until = head.sent_at + 2 * self._timeout
            if due >= silent_until and not stalled:
                self._end_silent_connection()
            else:
                upcoming.append(silent_until)
        return min(upcoming) if upcoming and not self._closed else None

    def _end_silent_connection(self) -> None:
        conn, self._conn = self._conn, None
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
        self._drop(RedisConnectionError(f"no reply from redis within {2 * self._timeout} s"))
        if conn is not None:
            # Cancelling the reader mid-read leaves the socket unusable; close it outright.
            closing = asyncio.get_running_loop().create_task(conn.disconnect(nowait=True))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
