"""Redis-side failures that must never serve stale data nor take Redis out of service.

Each test runs against a real redis-server: a private one it may pause, fill up or lock down
with an ACL, or the shared one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async.testing import RedisServer

from .polling import eventually
from .test_failover import FAST, recovered, redis_layer

MakeCache = Callable[..., Awaitable[AsyncToolCache]]


@pytest.fixture
async def make_cache(cache_dir: Path, key_prefix: str, redis_url: str) -> AsyncIterator[MakeCache]:
    """Connected caches on the shared cache_dir and prefix, the shared Redis unless told."""
    made: list[AsyncToolCache] = []

    async def make(**changes: Any) -> AsyncToolCache:
        settings: dict[str, Any] = {
            "use_redis": True,
            "cache_dir": cache_dir,
            "key_prefix": key_prefix,
            "redis_url": redis_url,
            **FAST,
            **changes,
        }
        cache = AsyncToolCache(CacheConfig(**settings))
        made.append(cache)
        await cache.connect()
        return cache

    yield make
    for cache in made:
        await cache.aclose()


# -- order of writes during an outage ------------------------------------------------------------


@pytest.mark.parametrize("newer", ["set", "delete"])
async def test_a_write_failing_late_never_overtakes_a_newer_write_of_its_key(
    make_cache: MakeCache, own_redis_server: RedisServer, newer: str
) -> None:
    url = own_redis_server.url
    cache = await make_cache(redis_url=url, stores=("redis",))
    reader = await make_cache(redis_url=url, stores=("redis",))
    await cache.set("k", "v0")
    await asyncio.to_thread(own_redis_server.pause)
    older = asyncio.ensure_future(cache.set("k", "v1"))  # in flight, fails at its deadline
    await asyncio.sleep(0)
    redis_layer(cache).breaker.trip()  # the newer write is journaled at once
    if newer == "set":
        await cache.set("k", "v2")
    else:
        await cache.delete("k")
    await older  # ... the older one fails later, and is noticed after it
    await asyncio.to_thread(own_redis_server.resume)
    redis_layer(cache).breaker.reset()
    await eventually(recovered(cache), what="journal replayed")
    assert await reader.get("k") == ("v2" if newer == "set" else None)
