"""The write lane's pipelined connection, against a real redis-server: batches overlap on one
socket, answer in order, fail on their own deadlines, and a reply that comes after its callers
gave up never reaches anyone else."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, Connection

from toolweaver_async.stores.redis.client import _DRIVER_INFO
from toolweaver_async.stores.redis.pipelined import MAX_ON_WIRE, PipelinedConnection
from toolweaver_async.stores.redis.resp import RoundTripError, shared_failure
from toolweaver_async.testing import RedisServer

from .polling import eventually


def _connector(server: RedisServer, opened: list[AbstractConnection]) -> Callable[[], Connection]:
    def connect() -> Connection:
        conn = Connection(
            host="127.0.0.1", port=server.port, socket_timeout=None, driver_info=_DRIVER_INFO
        )
        opened.append(conn)
        return conn

    return connect


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis(host="127.0.0.1", port=redis_server.port, driver_info=None)
    try:
        yield client
    finally:
        await client.aclose()


def _key() -> str:
    return f"pipelined:{uuid.uuid4().hex}"


async def test_batches_leave_without_waiting_for_earlier_replies_and_answer_in_order(
    redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    opened: list[AbstractConnection] = []
    lane = PipelinedConnection(_connector(redis_server, opened), timeout=5.0)
    queue, key = _key(), _key()
    try:
        # BLPOP holds this connection's later commands until something is pushed.
        first = asyncio.ensure_future(lane.pipeline([("BLPOP", queue, "5")]))
        await eventually(lambda: lane.in_flight == 1, what="the BLPOP written")
        second = asyncio.ensure_future(lane.pipeline([("SET", key, "v"), ("GET", key)]))
        await eventually(lambda: lane.in_flight == 2, what="the second batch written too")
        assert not first.done()
        assert not second.done()
        await raw.rpush(queue, "item")
        assert await first == [[queue.encode(), b"item"]]
        assert await second == [b"OK", b"v"]
        assert len(opened) == 1
    finally:
        await lane.aclose()


async def test_on_a_silent_server_each_batch_fails_with_its_own_timeout(
    own_redis_server: RedisServer,
) -> None:
    """A breaker counts each shared failure once: batches that fail together as one would
    make a black hole look like a single failure per timeout."""
    lane = PipelinedConnection(_connector(own_redis_server, []), timeout=0.3)
    try:
        assert await lane.pipeline([("PING",)]) == [b"PONG"]
        await asyncio.to_thread(own_redis_server.pause)
        calls = []
        for n in range(MAX_ON_WIRE):
            calls.append(asyncio.ensure_future(lane.pipeline([("SET", _key(), str(n))])))
            await eventually(lambda n=n: lane.in_flight == n + 1, what="batch written")  # type: ignore[misc]
        outcomes = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(o, RoundTripError) for o in outcomes), outcomes
        failures = {id(shared_failure(o)) for o in outcomes if isinstance(o, BaseException)}
        assert len(failures) == MAX_ON_WIRE
        assert all(isinstance(shared_failure(o), TimeoutError) for o in outcomes)  # type: ignore[arg-type]
    finally:
        await asyncio.to_thread(own_redis_server.resume)
        await lane.aclose()


async def test_a_reply_that_comes_after_its_caller_gave_up_reaches_nobody_else(
    redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    opened: list[AbstractConnection] = []
    lane = PipelinedConnection(_connector(redis_server, opened), timeout=0.4)
    queue, key = _key(), _key()
    await raw.set(key, "mine")
    try:
        late = asyncio.ensure_future(lane.pipeline([("BLPOP", queue, "5")]))
        with pytest.raises(RoundTripError):
            await late
        await raw.rpush(queue, "not yours")
        # The BLPOP's reply arrives now and is dropped; the connection stays in step.
        assert await lane.pipeline([("GET", key)]) == [b"mine"]
        assert len(opened) == 1
    finally:
        await lane.aclose()


async def test_a_connection_silent_for_two_timeouts_is_replaced(
    own_redis_server: RedisServer,
) -> None:
    opened: list[AbstractConnection] = []
    lane = PipelinedConnection(_connector(own_redis_server, opened), timeout=0.2)
    try:
        assert await lane.pipeline([("PING",)]) == [b"PONG"]
        await asyncio.to_thread(own_redis_server.pause)
        with pytest.raises(RoundTripError):
            await lane.pipeline([("PING",)])
        await eventually(lambda: lane.in_flight == 0, what="the silent connection ended")
        await asyncio.to_thread(own_redis_server.resume)
        assert await lane.pipeline([("PING",)]) == [b"PONG"]
        assert len(opened) == 2
    finally:
        await asyncio.to_thread(own_redis_server.resume)
        await lane.aclose()


async def test_a_cancelled_callers_write_still_lands_before_a_later_one(
    redis_server: RedisServer, raw: aioredis.Redis
) -> None:
    lane = PipelinedConnection(_connector(redis_server, []), timeout=5.0)
    queue, key = _key(), _key()
    try:
        blocker = asyncio.ensure_future(lane.pipeline([("BLPOP", queue, "5")]))
        await eventually(lambda: lane.in_flight == 1, what="the BLPOP written")
        first = asyncio.ensure_future(lane.pipeline([("SET", key, "1")]))
        await eventually(lambda: lane.in_flight == 2, what="the first SET written")
        first.cancel()
        second = asyncio.ensure_future(lane.pipeline([("SET", key, "2")]))
        await raw.rpush(queue, "go")
        await blocker
        assert await second == [b"OK"]
        assert await raw.get(key) == b"2"
    finally:
        await lane.aclose()


async def test_closing_fails_what_waits_and_refuses_new_calls(
    own_redis_server: RedisServer,
) -> None:
    lane = PipelinedConnection(_connector(own_redis_server, []), timeout=5.0)
    assert await lane.pipeline([("PING",)]) == [b"PONG"]
    await asyncio.to_thread(own_redis_server.pause)
    try:
        waiting = asyncio.ensure_future(lane.pipeline([("PING",)]))
        await eventually(lambda: lane.in_flight == 1, what="the PING written")
        await lane.aclose()
        outcome: Any = await asyncio.gather(waiting, return_exceptions=True)
        assert isinstance(outcome[0], RoundTripError)
        with pytest.raises(Exception, match="closed"):
            await lane.pipeline([("PING",)])
    finally:
        await asyncio.to_thread(own_redis_server.resume)
