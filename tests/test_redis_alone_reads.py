"""A chain of Redis alone (memory off): the reader awaits the store in its own frame, without
the guard's coroutine around it, and must answer exactly as the guarded call would: an outage
is a miss counted against Redis, a bug is a miss that never counts, a cancellation is the
caller's. Against a real redis-server the tests kill or pause.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, BreakerState, CacheConfig
from toolweaver_async.testing import RedisServer

from .polling import eventually
from .test_failover import redis_layer


@pytest.fixture
async def redis_alone(
    cache_dir: Path, key_prefix: str, own_redis_server: RedisServer
) -> AsyncIterator[AsyncToolCache]:
    cache = AsyncToolCache(
        CacheConfig(
            redis_url=own_redis_server.url,
            key_prefix=key_prefix,
            cache_dir=cache_dir,
            stores=("redis",),
            redis_command_timeout=5.0,  # only the test ends a call
        )
    )
    await cache.connect()
    assert redis_layer(cache).direct  # the path under test
    yield cache
    await cache.aclose()


async def test_an_outage_is_a_miss_counted_against_redis(
    redis_alone: AsyncToolCache, own_redis_server: RedisServer
) -> None:
    await redis_alone.set("k", "v")
    assert await redis_alone.get("k") == "v"
    await asyncio.to_thread(own_redis_server.kill)
    assert await redis_alone.get("k", default="fallback") == "fallback"
    assert redis_alone.stats().overall.errors["redis"] == 1
    layer = redis_layer(redis_alone)
    assert layer.failures == 1
    assert layer.breaker.consecutive_failures == 1
    assert layer.last_error is not None


async def test_a_bug_in_the_store_is_a_miss_that_the_breaker_ignores(
    redis_alone: AsyncToolCache, monkeypatch: pytest.MonkeyPatch
) -> None:
    await redis_alone.set("k", "v")
    layer = redis_layer(redis_alone)

    async def broken(namespace: str, key: str) -> Any:
        raise KeyError(key)

    monkeypatch.setattr(layer.store, "get", broken)
    assert await redis_alone.get("k", default="fallback") == "fallback"
    assert layer.bugs == 1
    assert layer.failures == 0
    assert layer.breaker.consecutive_failures == 0
    assert redis_alone.stats().overall.errors["redis"] == 0


async def test_a_cancelled_get_is_cancelled_and_counts_neither_way(
    redis_alone: AsyncToolCache, own_redis_server: RedisServer
) -> None:
    await redis_alone.set("k", "v")
    store: Any = redis_layer(redis_alone).store
    await asyncio.to_thread(own_redis_server.pause)
    try:
        get = asyncio.ensure_future(redis_alone.get("k"))
        await eventually(lambda: store._batcher.in_flight > 0)
        get.cancel()
        with pytest.raises(asyncio.CancelledError):
            await get
    finally:
        await asyncio.to_thread(own_redis_server.resume)
    layer = redis_layer(redis_alone)
    assert layer.breaker.state is BreakerState.CLOSED
    assert layer.failures == 0
    assert layer.bugs == 0
    assert await redis_alone.get("k") == "v"  # the store is as good as before
