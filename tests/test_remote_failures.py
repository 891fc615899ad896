"""Redis-side failures that must never serve stale data nor take Redis out of service.

Each test runs against a real redis-server: a private one it may pause, fill up or lock down
with an ACL, or the shared one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from blockbuster import BlockingError, blockbuster_ctx
from redis.exceptions import ConnectionError as RedisConnectionError

from toolweaver_async import AsyncToolCache, CacheConfig, CacheError, RedisStore, StoreError
from toolweaver_async.stores.redis.batching import RoundTripError
from toolweaver_async.stores.redis.client import store_error
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
    client = aioredis.Redis.from_url(own_redis_server.url, driver_info=None)  # no metadata stat
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


# -- input that can never succeed --------------------------------------------------------------


async def test_keys_redis_cannot_encode_are_misses_never_redis_failures(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache()  # memory, Redis and file; three failures would open the breaker
    bad = ["\udc80", "a\ud800b", "x\udfff"]
    for key in bad * 3:
        with pytest.raises(CacheError):  # the caller's error, written nowhere
            await cache.set(key, "v")
        assert await cache.get(key) is None
        assert await cache.get_many([key, "plain"]) == {}
        assert await cache.delete(key) is False
        with pytest.raises(CacheError):
            await cache.get_or_set(key, _load)
    layer = redis_layer(cache)
    assert (layer.failures, layer.last_error) == (0, None)
    assert layer.breaker.state.value == "closed"
    assert not layer.journal
    await cache.set("plain", "v")  # Redis is still in service
    assert await cache.get("plain") == "v"


async def _load() -> str:
    return "loaded"


# -- locks -------------------------------------------------------------------------------------


async def _lock_keys(client: aioredis.Redis, key_prefix: str) -> list[bytes]:
    return [key async for key in client.scan_iter(match=f"{key_prefix}:!lock:*")]


async def test_get_or_set_cancelled_while_taking_its_lock_leaves_no_lock_behind(
    make_cache: MakeCache, own_redis_server: RedisServer, key_prefix: str
) -> None:
    cache = await make_cache(redis_url=own_redis_server.url, redis_command_timeout=0.3)
    await cache.get("warm")  # connections made
    await asyncio.to_thread(own_redis_server.pause)
    started = asyncio.Event()

    async def load() -> str:
        started.set()
        return "v"

    task = asyncio.ensure_future(cache.get_or_set("k", load))
    layer = redis_layer(cache)
    await eventually(lambda: layer.failures >= 1, what="the read missed Redis")
    await asyncio.sleep(0.05)  # the lock's SET NX is now waiting in the paused server
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.to_thread(own_redis_server.resume)  # ... and lands after the caller gave up
    assert not started.is_set()
    admin = aioredis.Redis.from_url(own_redis_server.url, driver_info=None)
    try:
        # Without the clean-up the next get_or_set of "k" anywhere waits for the lock's ttl.
        await eventually(lambda: _no_lock(admin, key_prefix), within=2.0, what="lock released")
    finally:
        await admin.aclose()


async def _no_lock(client: aioredis.Redis, key_prefix: str) -> bool:
    return not await _lock_keys(client, key_prefix)


@pytest.fixture
async def acl_user(own_redis_server: RedisServer) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """``await acl_user("-eval")`` : the URL of a user the private server refuses those
    commands to."""
    admin = aioredis.Redis.from_url(own_redis_server.url, driver_info=None)

    async def make(*rules: str) -> str:
        await admin.acl_setuser(
            "limited",
            enabled=True,
            passwords=["+secret"],
            keys=["*"],
            channels=["*"],
            commands=["+@all", *rules],
        )
        return f"redis://limited:secret@127.0.0.1:{own_redis_server.port}/0"

    yield make
    await admin.aclose()


async def test_locks_work_without_scripts_when_the_acl_refuses_eval(
    make_cache: MakeCache, acl_user: Callable[..., Awaitable[str]], key_prefix: str
) -> None:
    url = await acl_user("-eval", "-evalsha")
    cache = await make_cache(redis_url=url)
    admin = aioredis.Redis.from_url(url.replace("limited:secret@", ""), driver_info=None)
    try:
        for n in range(5):
            assert await cache.get_or_set(f"k{n}", _load) == "loaded"
        # released, not left for their ttl (10 s)
        await eventually(lambda: _no_lock(admin, key_prefix), within=2.0, what="locks released")
        layer = redis_layer(cache)
        assert layer.breaker.state.value == "closed"
        assert layer.failures == 0
    finally:
        await admin.aclose()


async def test_clear_without_scan_permission_is_no_outage_and_leaves_nothing_readable(
    make_cache: MakeCache, acl_user: Callable[..., Awaitable[str]]
) -> None:
    url = await acl_user("-scan", "-keys")
    cache = await make_cache(redis_url=url)
    other = await make_cache(redis_url=url, stores=("redis",))
    await cache.set("k", "v1")
    await cache.set("k", "v1", namespace="custom")
    await cache.clear()
    assert await other.get("k") is None
    assert await other.get("k", namespace="custom") is None
    layer = redis_layer(cache)
    assert not layer.journal  # nothing queued to be retried forever
    assert (layer.failures, layer.breaker.state.value) == (0, "closed")
    await cache.set("k", "v2")
    assert await other.get("k") == "v2"  # Redis stays in service
    listed = [key async for key in cache.keys()]  # noqa: SIM118 - an async iterator method
    assert listed == ["k"]  # from the other stores


async def test_deletes_without_unlink_permission_use_del(
    make_cache: MakeCache, acl_user: Callable[..., Awaitable[str]]
) -> None:
    url = await acl_user("-unlink")
    cache = await make_cache(redis_url=url, stores=("redis",))
    await cache.set("k", "v1")
    assert await cache.delete("k") is True
    assert await cache.get("k") is None
    assert redis_layer(cache).failures == 0


# -- the event loop ----------------------------------------------------------------------------


async def test_new_redis_connections_make_no_blocking_call_on_the_loop(
    redis_url: str, key_prefix: str
) -> None:
    store = RedisStore(url=redis_url, key_prefix=key_prefix, pool_size=8)
    try:
        with blockbuster_ctx():
            # Concurrent calls open the batcher's connections and the pool's.
            await asyncio.gather(*[store.set("ns", f"k{n}", b"v", None) for n in range(20)])
            assert await store.get("ns", "k0") == b"v"
            await store.invalidate("ns")
            await store.ping()
    finally:
        await store.aclose()


async def test_a_blocking_call_while_connecting_is_a_bug_not_a_redis_failure() -> None:
    # redis-py wraps anything raised in connect() in a ConnectionError; the seam unwraps what
    # is no socket or driver failure, so the guard reports a bug instead of an outage.
    detected = BlockingError("os.stat")
    wrapped = RedisConnectionError(str(detected))
    wrapped.__cause__ = detected
    assert store_error("get", wrapped, ()) is detected
    shared = RoundTripError("ConnectionError: os.stat")  # a batched round trip's own error
    shared.__cause__ = wrapped
    assert store_error("get", shared, ()) is detected
    refused = RedisConnectionError("Error 111 connecting")
    refused.__cause__ = ConnectionRefusedError(111, "refused")
    assert isinstance(store_error("get", refused, ()), StoreError)


async def test_a_lock_key_left_without_expiry_holds_loaders_off_for_one_lock_ttl_only(
    make_cache: MakeCache, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    await raw_redis.set(f"{key_prefix}:!lock:default:k", b"not ours")  # no expiry
    cache = await make_cache()
    started = time.monotonic()
    got = await cache.get_or_set("k", _load, lock_ttl=0.2, lock_timeout=5.0)
    assert got == "loaded"
    assert time.monotonic() - started < 2.0  # not the whole lock_timeout
    assert redis_layer(cache).failures == 0
