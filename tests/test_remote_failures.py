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
import redis.asyncio as aioredis

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
    own_redis_server.pause()
    older = asyncio.ensure_future(cache.set("k", "v1"))  # in flight, fails at its deadline
    await asyncio.sleep(0)
    redis_layer(cache).breaker.trip()  # the newer write is journaled at once
    if newer == "set":
        await cache.set("k", "v2")
    else:
        await cache.delete("k")
    await older  # ... the older one fails later, and is noticed after it
    own_redis_server.resume()
    redis_layer(cache).breaker.reset()
    await eventually(recovered(cache), what="journal replayed")
    assert await reader.get("k") == ("v2" if newer == "set" else None)


# -- a journal at its byte bound ---------------------------------------------------------------


async def test_journal_over_its_byte_bound_never_lets_redis_serve_an_older_value(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache(journal_max_bytes=200_000)
    reader = await make_cache(stores=("redis",))
    keys = [f"k{n}" for n in range(40)]
    await reader.set_many(dict.fromkeys(keys, "old"))
    redis_layer(cache).breaker.trip()
    big = "new" + "x" * 20_000
    for key in keys:  # 800 KB of values: four times the bound
        await cache.set(key, big)
    journal = (await cache.health_check())["stores"]["redis"]["journal"]
    assert journal["bytes"] <= 200_000
    assert journal["sets_dropped"] > 0
    redis_layer(cache).breaker.reset()
    await eventually(recovered(cache), what="journal replayed")
    for key in keys:
        assert await reader.get(key) in (big, None)
        assert await cache.get(key) == big


# -- Redis out of memory -----------------------------------------------------------------------


@pytest.fixture
async def full_redis(own_redis_server: RedisServer) -> AsyncIterator[RedisServer]:
    """A private server that refuses every write that needs memory (noeviction), on demand:
    ``await full_redis.fill()``."""
    client = aioredis.Redis.from_url(own_redis_server.url)
    await client.config_set("maxmemory-policy", "noeviction")

    async def fill() -> None:
        await client.config_set("maxmemory", "1")

    own_redis_server.fill = fill  # type: ignore[attr-defined]
    yield own_redis_server
    await client.config_set("maxmemory", "0")
    await client.aclose()


async def test_a_set_refused_by_a_full_redis_leaves_no_older_value_for_other_processes(
    make_cache: MakeCache, full_redis: Any
) -> None:
    url = full_redis.url
    writer = await make_cache(redis_url=url)
    other = await make_cache(redis_url=url, stores=("redis",))
    await writer.set("k", "v1")
    await writer.set_many({"a": "v1", "b": "v1"})
    await full_redis.fill()
    await writer.set("k", "v2")
    await writer.set_many({"a": "v2", "b": "v2"})
    assert await other.get("k") is None  # the older value is gone, not served
    assert await other.get_many(["a", "b"]) == {}
    assert await writer.get("k") == "v2"


async def test_an_invalidate_refused_by_a_full_redis_leaves_nothing_readable(
    make_cache: MakeCache, full_redis: Any
) -> None:
    url = full_redis.url
    writer = await make_cache(redis_url=url)
    other = await make_cache(redis_url=url, stores=("redis",))
    await writer.set("k", "v1", namespace="results")
    await full_redis.fill()
    await writer.invalidate("results")
    assert await other.get("k", namespace="results") is None


# -- foreign bytes in a bookkeeping key --------------------------------------------------------


@pytest.mark.parametrize("repair", ["invalidate", "clear"])
async def test_foreign_bytes_in_a_generation_counter_are_a_miss_until_repaired(
    make_cache: MakeCache, raw_redis: aioredis.Redis, key_prefix: str, repair: str
) -> None:
    cache = await make_cache(stores=("redis",))
    await cache.set("k", "v1", namespace="results")
    await cache.set("k", "v1", namespace="search")
    await raw_redis.set(f"{key_prefix}:results:gen", b"\xffnot a number")
    for _ in range(10):  # never an outage: the breaker stays closed, other namespaces work
        assert await cache.get("k", namespace="results") is None
        assert await cache.get_many(["k"], namespace="results") == {}
        await cache.set("k", "v2", namespace="results")
    assert redis_layer(cache).breaker.state.value == "closed"
    assert await cache.get("k", namespace="search") == "v1"
    if repair == "invalidate":
        await cache.invalidate("results")
    else:
        await cache.clear()
    assert int(await raw_redis.get(f"{key_prefix}:results:gen")) > 1
    assert await cache.get("k", namespace="results") is None  # nothing older comes back
    await cache.set("k", "v3", namespace="results")
    assert await cache.get("k", namespace="results") == "v3"
    assert redis_layer(cache).breaker.state.value == "closed"
