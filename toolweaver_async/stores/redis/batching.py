"""Concurrent Redis commands sharing round trips over a few dedicated connections.

A command that finds nothing in flight goes out at once, in the caller's own task, so a lone get
pays no batching delay. Commands that arrive while a round trip is in flight are queued and leave
together on the next free connection, at the end of the current event-loop turn: every queued
read in one ``MGET`` (duplicate keys sent once), every queued write after it in the same
pipeline. Reads may name a group (on a Redis Cluster: the hash slot their keys share); each group
gets its own ``MGET`` in the pipeline, since one ``MGET`` may only span one slot there. The
store's common read, a generation counter and one entry, is a *pair*: pairs with the same lead
(the counter) share one ``MGET`` with the lead sent once, packed with a dict lookup or two per
pair instead of a group's gather-and-deduplicate (a cluster round trip at 100 coroutines spans
~14 slots for ~22 gets, and packing it as groups cost ~19 us). Each caller gets its own reply
or its own exception; cancelling a caller never touches a round trip it shares with others.

How many round trips run at once: a call that finds fewer than ``eager_trips`` in flight starts
one at the end of the turn; otherwise it waits for one to end and leaves with everything queued
meanwhile. A further connection is taken only when more than a full batch waits. Each round trip
costs a send and a read on the socket, ~45 us of CPU on a busy loopback (the largest single cost
of a batched get): on a cluster, one round trip per node at a time cut CPU per get by ~18 % and
raised gets/s at 100 coroutines by ~30 % against four, measured interleaved. The replies are
taken straight from the hiredis reader (:mod:`.replies`): redis-py spends ~0.8 us of CPU per
reply, and a cluster round trip at 100 coroutines carries ~17 ``MGET`` (one per slot touched).
A call that joins a shared round trip awaits that round trip's future itself (``mget`` is no
coroutine): each frame between a caller and its reply costs ~0.3 us when the reply wakes it.

Every call is bounded by ``timeout`` from the moment it is made (queue wait included), and every
round trip by ``timeout`` from the moment it is sent, both by one shared timer
(:mod:`.watchdog`: it costs a clock read per call, and is fair to a stalled loop). The callers of
one round trip fail with its one timeout, even when their deadlines fall in different watchdog
passes: a breaker counts a round trip once, however its callers' deadlines are spread.

Why dedicated connections and not ``Redis.execute_command``: on loopback, redis-py's client layer
(pool checkout under an ``asyncio.Condition``, a liveness probe of the socket, per-command
instrumentation hooks) costs ~30 us of a ~45 us GET; a connection of our own, written and read
directly, answers a lone ``MGET`` in ~12 us.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from .batch_requests import GROUPS, ONE_GROUP, PAIR, WRITES, ReadGroup, pack_batch
from .batch_requests import InFlightRoundTrip as _RoundTrip
from .batch_requests import Request as _Request
from .expiry import StalledTimeout, expire, trip_timeout
from .replies import read_replies
from .resp import RoundTripError, pack_command
from .resp import own_error as _own_error
from .watchdog import DeadlineWatchdog

__all__ = [
    "MAX_BATCH_KEYS",
    "ReadGroup",
    "RoundTripBatcher",
    "RoundTripError",
    "StalledTimeout",
    "pack_command",
]

# A batch stops growing at this many keys plus write commands; the rest go in the next one.
MAX_BATCH_KEYS: Final = 1000


class RoundTripBatcher:
    """Runs MGETs and pipelines over up to ``connections`` connections made by ``connect``,
    with ``eager_trips`` (default: all of them) started without waiting for a full batch.

    ``connect`` returns an unconnected redis-py connection without a socket timeout of its own
    (it connects on first use, and again after any failure: a connection whose round trip did
    not finish cleanly is disconnected, so a late reply can never reach a later caller).
    """

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        *,
        connections: int,
        timeout: float,
        max_batch_keys: int = MAX_BATCH_KEYS,
        eager_trips: int | None = None,
    ) -> None:
        if connections < 1:
            raise ValueError("connections must be >= 1")
        if eager_trips is not None and eager_trips < 1:
            raise ValueError("eager_trips must be >= 1")
        self._connect = connect
        self._max_connections = connections
        self._eager_trips = connections if eager_trips is None else min(eager_trips, connections)
        self._timeout = timeout
        self._max_batch_keys = max_batch_keys
        self._connections: list[AbstractConnection] = []
        self._idle: list[AbstractConnection] = []
        self._queue: list[_Request] = []
        self._queued_weight = 0  # the weights of the queue's requests, summed
        self._in_flight = 0  # round trips running or scheduled
        self._running: dict[AbstractConnection, _RoundTrip] = {}
        self._flushes: set[asyncio.Task[None]] = set()
        self._watchdog = DeadlineWatchdog(timeout, self._expire_due)
        self._closed = False
        # Counters for tests and benchmarks.
        self.round_trips = 0
        self.requests = 0

    # -- callers ---------------------------------------------------------------------------------

    def mget(self, keys: Sequence[bytes], group: Hashable = None) -> Awaitable[list[Any]]:
        """``MGET keys``: the values in order, ``None`` where absent. Calls naming the same
        ``group`` may share one ``MGET``.

        Not a coroutine: a call that joins a shared round trip gets that round trip's future
        itself, queued at once, which saves the caller a coroutine frame (the busy path); a
        call that may go out alone gets a coroutine that decides when it runs."""
        self.requests += 1
        if self._in_flight == 0 and not self._closed:
            return self._mget_alone(keys, group)
        return self._enqueue(ONE_GROUP, ((group, keys),), b"", 0, len(keys))

    def mget_pair(self, lead: bytes, key: bytes) -> Awaitable[list[Any]]:
        """``MGET lead key``: both values. Calls with the same ``lead`` share one ``MGET``, the
        lead sent once (a generation counter and one of its entries: on a cluster they share
        a hash tag, hence a slot). Not a coroutine, as :meth:`mget`."""
        self.requests += 1
        if self._in_flight == 0 and not self._closed:
            return self._mget_alone((lead, key), lead)
        return self._enqueue(PAIR, (lead, key), b"", 0, 2)

    async def _mget_alone(self, keys: Sequence[bytes], group: Hashable) -> list[Any]:
        # Checked again here: a call scheduled as a task runs a turn or more after it was made.
        if self._in_flight == 0 and not self._closed:
            conn = self._take_connection()
            if conn is not None:
                replies = await self._alone(conn, pack_command(("MGET", *keys)), 1)
                reply = replies[0]
                if isinstance(reply, Exception):
                    raise reply
                result: list[Any] = reply
                return result
        return await self._enqueue(ONE_GROUP, ((group, keys),), b"", 0, len(keys))

    async def mget_groups(self, groups: Sequence[ReadGroup]) -> list[Any]:
        """One ``MGET`` per group: for each group its values in order, or the error that
        group's ``MGET`` got (the other groups still ran)."""
        self.requests += 1
        if self._in_flight == 0 and not self._closed:
            conn = self._take_connection()
            if conn is not None:
                packed = b"".join([pack_command(("MGET", *keys)) for _, keys in groups])
                return await self._alone(conn, packed, len(groups))
        weight = sum(len(keys) for _, keys in groups)
        return await self._enqueue(GROUPS, groups, b"", 0, weight)

    async def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        """Replies to ``commands``, in order; a command the server refused has its
        ``ResponseError`` as its reply (the others still ran)."""
        self.requests += 1
        # Packed here, in the caller's task: a key that cannot be encoded fails this caller only.
        packed = b"".join([pack_command(command) for command in commands])
        count = len(commands)
        if self._in_flight == 0 and not self._closed:
            conn = self._take_connection()
            if conn is not None:
                return await self._alone(conn, packed, count)
        return await self._enqueue(WRITES, None, packed, count, count)

    @property
    def queued(self) -> int:
        """Calls waiting for a round trip."""
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        """Round trips on the wire or about to be sent."""
        return self._in_flight

    async def aclose(self) -> None:
        """Fail whatever waits, stop running batches and close every connection. Idempotent."""
        self._closed = True
        self._watchdog.stop()
        flushes = list(self._flushes)
        for task in flushes:
            task.cancel()
        if flushes:
            await asyncio.gather(*flushes, return_exceptions=True)
        queued, self._queue = self._queue, []
        self._queued_weight = 0
        closed = RedisConnectionError("redis store closed")  # one failure, shared by all
        for request in queued:
            if not request.future.done():
                request.future.set_exception(self._caller_error(closed))
        for conn in self._connections:
            with contextlib.suppress(RedisError, OSError):
                await conn.disconnect()
        self._idle.clear()

    # -- round trips -----------------------------------------------------------------------------

    async def _alone(self, conn: AbstractConnection, packed: bytes, count: int) -> list[Any]:
        """One caller's round trip in its own task: nothing to share it with."""
        self._in_flight += 1
        self.round_trips += 1
        try:
            return await self._exchange(conn, packed, count, None)
        finally:
            self._in_flight -= 1
            self._release(conn)

    def _enqueue(
        self, kind: int, reads: Any, commands: bytes, count: int, weight: int
    ) -> asyncio.Future[list[Any]]:
        """Queue a call for the next shared round trip; the future its replies will settle.
        (Not a coroutine: the caller awaits the future itself, one frame fewer per call.)"""
        if self._closed:
            raise RedisConnectionError("redis store closed")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        request = _Request(
            future, loop.time() + self._timeout, kind, reads, commands, count, weight
        )
        queue = self._queue
        queue.append(request)
        self._queued_weight += weight
        if len(queue) == 1:
            self._watchdog.arm(request.deadline)
            if self._in_flight < self._eager_trips:
                conn = self._take_connection()
                if conn is not None:
                    self._start_flush(conn)
            # else: the first round trip to end takes the queue.
        return future

    def _take_connection(self) -> AbstractConnection | None:
        if self._idle:
            return self._idle.pop()
        if len(self._connections) < self._max_connections:
            conn = self._connect()
            self._connections.append(conn)
            return conn
        return None

    def _release(self, conn: AbstractConnection) -> None:
        if self._queue and not self._closed:
            self._start_flush(conn)
        else:
            self._idle.append(conn)

    def _start_flush(self, conn: AbstractConnection) -> None:
        self._in_flight += 1
        task = asyncio.get_running_loop().create_task(self._flush(conn))
        self._flushes.add(task)
        task.add_done_callback(self._flushes.discard)

    async def _flush(self, conn: AbstractConnection) -> None:
        """Send what is queued now (this runs one loop turn after it was scheduled, so every
        call of that turn is in), up to ``max_batch_keys``."""
        try:
            batch = [request for request in self._take_batch() if not request.future.done()]
            if self._queue:  # more than one batch's worth: use another connection if one is free
                extra = self._take_connection()
                if extra is not None:
                    self._start_flush(extra)
            if batch:
                await self._run_batch(conn, batch)
        finally:
            self._in_flight -= 1
            self._release(conn)

    def _take_batch(self) -> list[_Request]:
        queue = self._queue
        if self._queued_weight < self._max_batch_keys:  # all of it (no loop over requests)
            self._queue = []
            self._queued_weight = 0
            return queue
        weight = 0
        for end, request in enumerate(queue):
            weight += request.weight
            if weight >= self._max_batch_keys:
                batch, self._queue = queue[: end + 1], queue[end + 1 :]
                self._queued_weight -= weight
                return batch
        self._queue = []  # (not reached: the weights sum to at least a batch)
        self._queued_weight = 0
        return queue

    async def _run_batch(self, conn: AbstractConnection, batch: list[_Request]) -> None:
        packed = pack_batch(batch)
        asked, group_index, positions, reads = (
            packed.asked,
            packed.group_index,
            packed.positions,
            packed.reads,
        )
        writes, expected = packed.writes, packed.expected
        self.round_trips += 1
        token = self._trip_leaving()
        try:
            replies = await self._exchange(conn, b"".join(reads + writes), expected, batch)
        except BaseException as exc:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(self._caller_error(exc))
            if not isinstance(exc, Exception):
                raise
            return
        self._trip_answered(token)
        leads = packed.leads
        # Per group: the values of every key asked, in asked order (or the group's error).
        picked: list[Any] = [
            values
            if numbered is None or isinstance(values, Exception)
            else list(map(values.__getitem__, map(numbered.__getitem__, keys)))
            for values, numbered, keys in zip(replies[leads:], positions, asked, strict=False)
        ]
        taken = [0] * len(asked)  # per group, how many of its picked values callers took
        offset = len(reads)
        for request in batch:
            future = request.future
            kind = request.kind
            if kind == PAIR:
                if not future.done():
                    values = replies[request.at]
                    if isinstance(values, Exception):
                        future.set_exception(self._caller_error(values))
                    else:
                        future.set_result([values[0], values[request.position]])
            elif kind == WRITES:
                result = replies[offset : offset + request.count]
                offset += request.count
                if not future.done():
                    future.set_result(result)
            elif kind == GROUPS:
                shares = []
                for group, keys in request.reads:
                    index = group_index[group]
                    start = taken[index]
                    taken[index] = end = start + len(keys)
                    values = picked[index]
                    shares.append(
                        _own_error(values) if isinstance(values, Exception) else values[start:end]
                    )
                if not future.done():
                    future.set_result(shares)
            else:
                group, keys = request.reads[0]
                index = group_index[group]
                start = taken[index]
                taken[index] = end = start + len(keys)
                if not future.done():
                    values = picked[index]
                    if isinstance(values, Exception):
                        future.set_exception(self._caller_error(values))
                    else:
                        future.set_result(values[start:end])

    async def _exchange(
        self,
        conn: AbstractConnection,
        packed: bytes,
        count: int,
        requests: list[_Request] | None,
    ) -> list[Any]:
        """Write ``packed`` and read ``count`` replies before the deadline. redis-py disconnects
        ``conn`` on any failure or cancellation mid-way, so it never holds a stray reply.

        A connection that sat idle may have been closed by the server meanwhile (a restart, its
        idle ``timeout``); when it fails before the first reply, the round trip is tried once
        more on a new socket, as redis-py's pool would by probing it before each use.
        """
        task = asyncio.current_task()
        assert task is not None
        deadline = asyncio.get_running_loop().time() + self._timeout
        trip = self._running[conn] = _RoundTrip(task, deadline, requests)
        self._watchdog.arm(deadline)
        replies: list[Any] = []
        try:
            if conn.is_connected:
                try:
                    await self._send_and_read(conn, packed, count, replies)
                except RedisConnectionError:
                    if replies:
                        raise
                else:
                    return replies
            await self._send_and_read(conn, packed, count, replies)
            return replies
        except asyncio.CancelledError:
            # Ours only if the watchdog cancelled and nobody else did too (as asyncio.timeout).
            if trip.expired and task.uncancel() <= trip.cancelling:
                raise trip_timeout(trip, self._timeout, trip.stalled) from None
            raise
        finally:
            del self._running[conn]

    @staticmethod
    async def _send_and_read(
        conn: AbstractConnection, packed: bytes, count: int, replies: list[Any]
    ) -> None:
        if not conn.is_connected and type(conn).connect is not AbstractConnection.connect:
            # A Sentinel-managed connection asks the sentinels for the primary's address in
            # its own connect(), which the implicit connect of a send would skip.
            await conn.connect()  # type: ignore[no-untyped-call]
        await conn.send_packed_command(packed, check_health=False)
        await read_replies(conn, count, replies)

    # -- outcomes of shared round trips (a breaker in front of a node counts them, see
    # cluster_nodes.py; here they change nothing) ------------------------------------------------

    def _trip_leaving(self) -> Any:
        """A shared round trip is leaving; what this returns goes to :meth:`_trip_answered`."""
        return None

    def _trip_answered(self, token: Any) -> None:
        """The shared round trip that left when :meth:`_trip_leaving` returned ``token`` was
        answered (each command's reply may still be an error reply: an answer too)."""

    def _caller_error(self, error: BaseException) -> BaseException:
        """What one caller sharing ``error`` (a failed round trip's, an expired or closed
        queue's, an error reply to its ``MGET``) raises: its own exception (see
        :func:`~.resp.own_error`). Called once per caller, always with the shared object."""
        return _own_error(error)

    # -- deadlines -------------------------------------------------------------------------------

    def _expire_due(self, due: float, stalled: bool) -> float | None:
        """The watchdog's pass: fail every call and cancel every round trip whose deadline is
        ``due`` or earlier; the next deadline."""
        upcoming: list[float] = []
        for trip in self._running.values():
            if trip.deadline <= due:
                if not trip.expired:
                    trip.expired = True
                    trip.stalled = stalled
                    trip.task.cancel()
            else:
                upcoming.append(trip.deadline)
            if trip.requests is not None:
                upcoming += expire(
                    trip.requests, due, self._timeout, stalled, trip, self._caller_error
                )
        upcoming += expire(self._queue, due, self._timeout, stalled, None, self._caller_error)
        return min(upcoming) if upcoming and not self._closed else None
