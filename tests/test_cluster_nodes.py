"""The breaker in front of one cluster primary (:class:`NodeBatcher`), against a real
redis-server: a round trip shared by many gets is one outcome for that breaker, whether it was
answered or failed, and every caller of a failed one learns which node failed it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from toolweaver_async import BreakerState, CircuitBreaker
from toolweaver_async.stores.redis import RedisStore
from toolweaver_async.stores.redis.cluster_nodes import NodeBatcher, failed_node
from toolweaver_async.testing import RedisServer

from .polling import eventually
from .tcp_proxy import TcpProxy

NODE = "127.0.0.1:7000"


@contextlib.asynccontextmanager
async def node_batcher(
    url: str, key_prefix: str, breaker: CircuitBreaker
) -> AsyncIterator[NodeBatcher]:
    """A batcher for one node at ``url`` (one connection, one eager round trip, as the
    cluster engine's), behind ``breaker``, holding ``<key_prefix>:k`` = ``v``."""
    store = RedisStore(url=url, key_prefix=key_prefix)
    batcher = NodeBatcher(
        store._new_connection, node=NODE, breaker=breaker, connections=1, timeout=5, eager_trips=1
    )
    try:
        await batcher.pipeline([("SET", f"{key_prefix}:k", "v", "PX", 60_000)])
        yield batcher
    finally:
        await batcher.aclose()
        await store.aclose()


async def test_a_round_trip_shared_by_many_gets_is_one_success_for_the_nodes_breaker(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    """As a failed round trip counts once (one incident), an answered one counts once: the
    breaker weighs round trips against round trips, not 20 callers against one failure."""
    breaker = CircuitBreaker(name="node", failure_threshold=3)
    key = f"{key_prefix}:k".encode()
    async with node_batcher(own_redis_server.url, key_prefix, breaker) as batcher:
        assert breaker.snapshot()["window_calls"] == 1  # the SET, alone: one success
        await asyncio.to_thread(own_redis_server.pause)
        try:
            gets = [asyncio.ensure_future(batcher.mget([key]))]  # goes alone
            await asyncio.sleep(0)
            gets += [asyncio.ensure_future(batcher.mget([key])) for _ in range(20)]
            await asyncio.sleep(0)
            assert (batcher.in_flight, batcher.queued) == (1, 20)
        finally:
            await asyncio.to_thread(own_redis_server.resume)
        assert await asyncio.gather(*gets) == [[b"v"]] * 21
        # the lone get and the shared round trip: two outcomes, not 21
        assert breaker.snapshot()["window_calls"] == 1 + 2
        assert breaker.state is BreakerState.CLOSED


async def test_every_caller_of_a_failed_shared_round_trip_gets_its_own_node_down_counted_once(
    redis_server: RedisServer, key_prefix: str
) -> None:
    breaker = CircuitBreaker(name="node", failure_threshold=3)
    key = f"{key_prefix}:k".encode()
    async with (
        TcpProxy(redis_server.port) as proxy,
        node_batcher(proxy.url, key_prefix, breaker) as batcher,
    ):
        proxy.watch(b"MGET")
        proxy.black_hole = True  # requests reach nobody: the lone get stays in flight
        gets = [asyncio.ensure_future(batcher.mget([key]))]  # goes alone
        await asyncio.sleep(0)
        gets += [asyncio.ensure_future(batcher.mget([key])) for _ in range(20)]
        await eventually(lambda: proxy.count(b"MGET") == 1)
        assert (batcher.in_flight, batcher.queued) == (1, 20)
        proxy.refuse = True
        proxy.reset_all()  # the node "dies": connections reset, new ones refused
        results = await asyncio.gather(*gets, return_exceptions=True)
        assert all(failed_node(result) == NODE for result in results), results
        assert len({id(result) for result in results}) == len(results)  # each its own
        # the lone get's failure and the shared round trip's (its reconnection refused):
        # two, not 21
        assert breaker.consecutive_failures == 2
        assert breaker.state is BreakerState.CLOSED


async def test_while_the_nodes_breaker_is_open_gets_are_refused_without_a_round_trip(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    breaker = CircuitBreaker(name="node", failure_threshold=1, recovery_timeout=20)
    key = f"{key_prefix}:k".encode()
    async with node_batcher(own_redis_server.url, key_prefix, breaker) as batcher:
        await asyncio.to_thread(own_redis_server.pause)
        try:
            busy = asyncio.ensure_future(batcher.mget([key]))  # holds the one round trip
            await asyncio.sleep(0)
            breaker.trip()
            before = batcher.requests
            refused = await asyncio.gather(
                *(batcher.mget([key]) for _ in range(5)), return_exceptions=True
            )
            assert all(failed_node(result) == NODE for result in refused), refused
            assert batcher.queued == 0  # none queued
            assert batcher.requests == before
        finally:
            await asyncio.to_thread(own_redis_server.resume)
        assert await busy == [b"v"]
