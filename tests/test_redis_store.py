"""RedisStore against a real redis-server: round trips, generations, faults and cancellation."""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection

from toolweaver_async.config import CacheConfig
from toolweaver_async.errors import ConfigError, StoreError
from toolweaver_async.stores.redis.store import RedisStore, build_client
from toolweaver_async.testing import RedisServer

from .polling import eventually

NS = "default"


@pytest.fixture
def store(redis_store: RedisStore) -> RedisStore:
    return redis_store


# -- protocol and round trips --------------------------------------------------------------------


async def test_entries_live_under_prefix_namespace_generation_key(
    store: RedisStore, raw_redis: Redis, key_prefix: str
) -> None:
    await store.set("tools", "search:v1", b"data", ttl=None)
    assert await raw_redis.get(f"{key_prefix}:tools:0:search:v1") == b"data"


async def test_set_many_with_no_items_writes_nothing(store: RedisStore, raw_redis: Redis) -> None:
    await store.set_many(NS, [])
    assert await raw_redis.keys(f"{store._prefix}:*") == []


async def test_set_with_ttl_expires_in_whole_milliseconds_rounded_up(
    store: RedisStore, raw_redis: Redis, key_prefix: str
) -> None:
    await store.set(NS, "ten", b"v", ttl=10)
    await store.set(NS, "tiny", b"v", ttl=0.0001)
    await store.set(NS, "forever", b"v", ttl=None)
    await store.set_many(NS, [("many", b"v", 2.5)])
    assert 9_000 < await raw_redis.pttl(f"{key_prefix}:{NS}:0:ten") <= 10_000
    assert await raw_redis.pttl(f"{key_prefix}:{NS}:0:tiny") in {
        -2,
        0,
        1,
    }  # 1 ms, maybe gone already
    assert await raw_redis.pttl(f"{key_prefix}:{NS}:0:forever") == -1
    assert 2_000 < await raw_redis.pttl(f"{key_prefix}:{NS}:0:many") <= 2_500


async def test_add_stores_only_where_no_entry_is_present(
    store: RedisStore, raw_redis: Redis
) -> None:
    assert await store.add(NS, "k", b"first", ttl=60) is True
    assert await store.add(NS, "k", b"second", ttl=60) is False
    assert await store.get(NS, "k") == b"first"
    assert 59_000 < await raw_redis.pttl(f"{store._prefix}:{NS}:0:k") <= 60_000


@settings(max_examples=50, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(key=st.text(max_size=300), data=st.binary(max_size=2048))
async def test_any_key_and_bytes_round_trip(store: RedisStore, key: str, data: bytes) -> None:
    await store.set(NS, key, data, ttl=60)
    assert await store.get(NS, key) == data
    assert await store.get_many(NS, [key]) == [data]


# -- generations ---------------------------------------------------------------------------------


async def test_invalidate_makes_every_old_entry_unreadable(store: RedisStore) -> None:
    await store.set_many(NS, [("a", b"1", 60), ("b", b"2", None)])
    await store.set("other", "a", b"kept", ttl=60)
    await store.invalidate(NS)
    assert await store.get(NS, "a") is None
    assert await store.get_many(NS, ["a", "b"]) == [None, None]
    assert await store.get("other", "a") == b"kept"
    await store.set(NS, "a", b"new", ttl=60)
    assert await store.get(NS, "a") == b"new"


async def test_invalidate_by_another_store_is_seen_on_the_next_read(
    store: RedisStore, redis_url: str, key_prefix: str
) -> None:
    other = RedisStore(url=redis_url, key_prefix=key_prefix)
    try:
        await store.set_many(NS, [("a", b"1", 60), ("b", b"2", 60)])
        assert await other.get(NS, "a") == b"1"  # other's generation cache is now warm
        await store.invalidate(NS)
        assert await other.get(NS, "a") is None
        assert await other.get_many(NS, ["a", "b"]) == [None, None]
    finally:
        await other.aclose()


async def test_writes_by_a_store_with_a_stale_generation_land_in_the_live_one(
    store: RedisStore, redis_url: str, key_prefix: str, raw_redis: Redis
) -> None:
    other = RedisStore(url=redis_url, key_prefix=key_prefix)
    try:
        await other.set(NS, "warm", b"x", ttl=60)  # other now believes generation 0
        await store.invalidate(NS)
        await other.set(NS, "k", b"after invalidate", ttl=60)
        assert await store.get(NS, "k") == b"after invalidate"
        assert await raw_redis.exists(f"{key_prefix}:{NS}:0:k") == 0  # the misplaced copy is gone

        await store.invalidate(NS)
        await other.set_many(NS, [("m1", b"1", 60), ("m2", b"2", None)])
        assert await store.get_many(NS, ["m1", "m2"]) == [b"1", b"2"]

        await store.invalidate(NS)
        await store.set(NS, "present", b"live", ttl=60)
        assert await other.add(NS, "present", b"stale writer", ttl=60) is False
        assert await store.get(NS, "present") == b"live"
        await store.invalidate(NS)
        assert await other.add(NS, "absent", b"added", ttl=60) is True
        assert await store.get(NS, "absent") == b"added"

        await store.set(NS, "d", b"v", ttl=60)
        await store.invalidate(NS)
        await store.set(NS, "d", b"v", ttl=60)
        assert await other.delete(NS, "d") is True
        assert await store.get(NS, "d") is None
    finally:
        await other.aclose()


async def test_a_fresh_store_finds_the_live_generation_on_its_first_call(
    store: RedisStore, redis_url: str, key_prefix: str, raw_redis: Redis
) -> None:
    await store.invalidate(NS)
    await store.invalidate(NS)
    fresh = RedisStore(url=redis_url, key_prefix=key_prefix)
    try:
        await fresh.set_many(NS, [("a", b"1", 60), ("b", b"2", 60)])
        assert sorted(await raw_redis.keys(f"{key_prefix}:{NS}:*:*")) == [
            f"{key_prefix}:{NS}:2:a".encode(),
            f"{key_prefix}:{NS}:2:b".encode(),
        ]
        assert await store.get_many(NS, ["a", "b"]) == [b"1", b"2"]
    finally:
        await fresh.aclose()


async def test_invalidate_removes_old_generation_keys_in_the_background(
    store: RedisStore, raw_redis: Redis, key_prefix: str
) -> None:
    await store.set_many(NS, [(f"k{i}", b"v", None) for i in range(1500)])
    await store.invalidate(NS)

    async def old_generation_gone() -> bool:
        return not [
            k async for k in raw_redis.scan_iter(match=f"{key_prefix}:{NS}:0:*", count=1000)
        ]

    await eventually(old_generation_gone)
    assert await raw_redis.get(f"{key_prefix}:{NS}:gen") == b"1"


async def test_non_integer_generation_counter_is_a_miss_until_invalidate_repairs_it(
    store: RedisStore, raw_redis: Redis, key_prefix: str
) -> None:
    await store.set(NS, "k", b"old", None)
    await raw_redis.set(f"{key_prefix}:{NS}:gen", b"not a number")
    assert await store.get(NS, "k") is None
    assert await store.get_many(NS, ["k"]) == [None]
    await store.invalidate(NS)
    assert await store.get(NS, "k") is None
    await store.set(NS, "k", b"new", None)
    assert await store.get(NS, "k") == b"new"


async def test_namespace_that_could_break_the_key_layout_is_rejected(store: RedisStore) -> None:
    with pytest.raises(ConfigError):
        await store.get("a:0", "k")


# -- clear ---------------------------------------------------------------------------------------


async def test_clear_removes_this_prefix_and_nothing_else(
    store: RedisStore, raw_redis: Redis, key_prefix: str
) -> None:
    foreign = ["other:key", f"{key_prefix}x:{NS}:0:k", f"{key_prefix}x", key_prefix]
    for key in foreign:
        await raw_redis.set(key, b"foreign")
    await store.set_many(NS, [(f"k{i}", b"v", None) for i in range(1200)])
    await store.set("tools", "t", b"v", ttl=60)
    await store.invalidate("tools")
    await store.set("tools", "t", b"v", ttl=60)

    await store.clear()

    assert await store.get(NS, "k0") is None
    assert await store.get("tools", "t") is None
    left = sorted([k async for k in raw_redis.scan_iter(match=f"{key_prefix}:*", count=1000)])
    assert left == [f"{key_prefix}:tools:gen".encode()]  # generations never go backwards
    for key in foreign:
        assert await raw_redis.get(key) == b"foreign"
    await raw_redis.delete(*foreign)


# -- construction and configuration ---------------------------------------------------------------


def test_constructing_a_store_does_no_io(free_port: Callable[[], int], key_prefix: str) -> None:
    # Synchronous on purpose: no event loop, nothing listening, still no error.
    RedisStore(url=f"redis://127.0.0.1:{free_port()}/0", key_prefix=key_prefix)


def test_from_config_rejects_a_url_with_the_wrong_scheme() -> None:
    config = CacheConfig(redis_url="http://127.0.0.1:6379/0", use_redis=False)  # not checked
    with pytest.raises(ConfigError, match="redis://"):
        RedisStore.from_config(config)
    with pytest.raises(ConfigError):
        CacheConfig(use_redis=True, redis_url="memcached://127.0.0.1:11211")


async def test_from_config_applies_timeouts_pool_size_and_prefix(
    redis_url: str, key_prefix: str, raw_redis: Redis
) -> None:
    config = CacheConfig(
        use_redis=True,
        redis_url=redis_url,
        key_prefix=key_prefix,
        redis_connect_timeout=0.1,
        redis_command_timeout=0.3,
        redis_pool_size=7,
    )
    store = RedisStore.from_config(config)
    try:
        pool = store._client.connection_pool
        assert pool.max_connections == 7
        assert pool.timeout == 0.3  # type: ignore[attr-defined]  # waiting for a free connection
        assert pool.connection_kwargs["socket_timeout"] == 0.3
        assert pool.connection_kwargs["socket_connect_timeout"] == 0.1
        assert pool.connection_kwargs["retry"].get_retries() == 0
        await store.set(NS, "k", b"v", ttl=60)
        assert await raw_redis.get(f"{key_prefix}:{NS}:0:k") == b"v"
    finally:
        await store.aclose()


def test_rediss_url_requires_a_verified_certificate_unless_disabled() -> None:
    # The query string must not be able to switch verification off behind the config's back.
    pool = build_client("rediss://cache.example:6380/0?ssl_cert_reqs=none").connection_pool
    conn: Any = pool.make_connection()  # type: ignore[no-untyped-call]
    assert isinstance(conn, SSLConnection)
    assert conn.cert_reqs == ssl.CERT_REQUIRED
    assert conn.check_hostname is True

    pool = build_client("rediss://cache.example:6380/0", tls_verify=False).connection_pool
    conn = pool.make_connection()  # type: ignore[no-untyped-call]
    assert conn.cert_reqs == ssl.CERT_NONE


# -- failures ------------------------------------------------------------------------------------


async def test_get_with_nothing_listening_fails_in_milliseconds(
    free_port: Callable[[], int], key_prefix: str
) -> None:
    store = RedisStore(url=f"redis://127.0.0.1:{free_port()}/0", key_prefix=key_prefix)
    try:
        for call in (store.get(NS, "k"), store.set(NS, "k", b"v", 1), store.ping()):
            started = time.perf_counter()
            with pytest.raises(StoreError) as caught:
                await call
            assert time.perf_counter() - started < 1.0  # milliseconds, not the seconds of retries
            assert caught.value.store == "redis"
            assert caught.value.__cause__ is not None
    finally:
        await store.aclose()


async def test_get_from_a_paused_server_fails_within_the_command_timeout(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix, command_timeout=0.2)
    cold = RedisStore(url=own_redis_server.url, key_prefix=key_prefix, command_timeout=0.2)
    try:
        await store.set(NS, "k", b"v", ttl=60)  # a pooled, connected connection
        await asyncio.to_thread(own_redis_server.pause)
        try:
            for paused_store in (store, cold):  # a live connection, then a fresh one
                started = time.perf_counter()
                with pytest.raises(StoreError):
                    await paused_store.get(NS, "k")
                assert time.perf_counter() - started < 2.0
        finally:
            await asyncio.to_thread(own_redis_server.resume)
        assert await store.get(NS, "k") == b"v"
        assert await cold.get(NS, "k") == b"v"
    finally:
        await store.aclose()
        await cold.aclose()


async def test_store_works_again_after_the_server_is_killed_and_restarted(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix)
    try:
        await asyncio.gather(*(store.set(NS, f"k{i}", b"v", ttl=60) for i in range(8)))
        await asyncio.to_thread(own_redis_server.kill)
        with pytest.raises(StoreError):
            await store.get(NS, "k0")
        await asyncio.to_thread(own_redis_server.restart)
        assert await store.get(NS, "k0") is None  # no persistence: the data died with it
        await store.set(NS, "k0", b"again", ttl=60)
        assert await asyncio.gather(*(store.get(NS, "k0") for _ in range(16))) == [b"again"] * 16
    finally:
        await store.aclose()


async def test_password_never_appears_in_errors_or_logs(
    redis_url: str, free_port: Callable[[], int], key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    secret = "Sup3r-Secret-pw"
    dead = f"redis://:{secret}@127.0.0.1:{free_port()}/0"
    live = redis_url.replace("redis://", f"redis://user:{secret}@")  # server has no such user
    stores = [
        RedisStore(url=dead, key_prefix=key_prefix),
        RedisStore(url=live, key_prefix=key_prefix),
        RedisStore(url=redis_url, key_prefix=key_prefix, password=secret),
    ]
    try:
        for store in stores:
            assert secret not in repr(store)
            for call in (store.get(NS, "k"), store.invalidate(NS), store.clear()):
                with pytest.raises(StoreError) as caught:
                    await call
                for text in (str(caught.value), repr(caught.value), str(caught.value.__cause__)):
                    assert secret not in text
    finally:
        for store in stores:
            await store.aclose()
    assert secret not in caplog.text


async def test_calls_after_aclose_fail_and_aclose_is_idempotent(
    redis_url: str, key_prefix: str
) -> None:
    store = RedisStore(url=redis_url, key_prefix=key_prefix)
    await store.set(NS, "k", b"v", ttl=60)
    await store.aclose()
    await store.aclose()
    with pytest.raises(StoreError, match="closed"):
        await store.get(NS, "k")


async def test_an_injected_client_is_used_and_left_open(
    redis_url: str, key_prefix: str, raw_redis: Redis
) -> None:
    store = RedisStore(url="redis://unused.invalid:1/0", key_prefix=key_prefix, client=raw_redis)
    await store.set(NS, "k", b"v", ttl=60)
    await store.aclose()
    assert await raw_redis.get(f"{key_prefix}:{NS}:0:k") == b"v"


# -- concurrency and cancellation -----------------------------------------------------------------


async def test_a_thousand_concurrent_gets_wait_for_a_small_pool_instead_of_failing(
    redis_url: str, key_prefix: str
) -> None:
    # The pool's wait is bounded by command_timeout; give it room on a loaded CI machine.
    store = RedisStore(url=redis_url, key_prefix=key_prefix, pool_size=4, command_timeout=2)
    try:
        await store.set_many(NS, [(f"k{i}", str(i).encode(), 60) for i in range(1000)])
        got = await asyncio.gather(*(store.get(NS, f"k{i}") for i in range(1000)))
        assert got == [str(i).encode() for i in range(1000)]
    finally:
        await store.aclose()


async def test_cancelled_gets_never_hand_their_replies_to_later_gets(
    redis_url: str, key_prefix: str
) -> None:
    store = RedisStore(url=redis_url, key_prefix=key_prefix, pool_size=8)
    keys = [f"k{i}" for i in range(200)]
    expected = {key: f"value of {key}".encode() for key in keys}
    rng = random.Random(20240611)
    try:
        await store.set_many(NS, [(key, value, 60) for key, value in expected.items()])
        for _ in range(5):
            order = [rng.choice(keys) for _ in range(400)]
            tasks = [asyncio.create_task(store.get(NS, key)) for key in order]
            cancel_at = [rng.randrange(12) for _ in tasks]  # spread over every stage of a call
            for step in range(12):
                for task, when in zip(tasks, cancel_at, strict=True):
                    if when == step:
                        task.cancel()
                await asyncio.sleep(0)
            results = await asyncio.gather(*tasks, return_exceptions=True)
            for key, result in zip(order, results, strict=True):
                assert isinstance(result, asyncio.CancelledError) or result == expected[key]
            got = await asyncio.gather(*(store.get(NS, key) for key in keys))
            assert got == [expected[key] for key in keys]
    finally:
        await store.aclose()


async def test_gets_cancelled_while_waiting_on_a_paused_server_leave_no_stray_replies(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    # A generous timeout: the gets must end by cancellation, not by timing out.
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix, command_timeout=5)
    keys = [f"k{i}" for i in range(8)]
    batcher = store._batcher
    try:
        await store.set_many(NS, [(key, key.encode(), 60) for key in keys])
        await asyncio.to_thread(own_redis_server.pause)
        try:
            # One get goes out alone, the other seven share a second round trip.
            tasks = [asyncio.create_task(store.get(NS, key)) for key in keys]

            async def all_sent() -> bool:
                return not batcher._queue and batcher._in_flight == 2

            await eventually(all_sent)
            for _ in range(10):
                await asyncio.sleep(0)
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, asyncio.CancelledError) for r in results)
        finally:
            await asyncio.to_thread(own_redis_server.resume)
        # The server now answers the cancelled MGETs; no later get may read those replies.
        for _ in range(3):
            got = await asyncio.gather(*(store.get(NS, key) for key in reversed(keys)))
            assert got == [key.encode() for key in reversed(keys)]
    finally:
        await store.aclose()
