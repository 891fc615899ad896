"""toolweaver_async.compat: ToolWeaver's RedisCache / ToolCache names on a real Redis."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, CacheConfig, ConfigError, SerializationError
from toolweaver_async.compat import RedisCache, ToolCache
from toolweaver_async.testing import RedisServer


@pytest.fixture
async def make_compat(
    redis_url: str, cache_dir: Path, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., RedisCache]]:
    monkeypatch.setenv("TOOLWEAVER_CACHE_PREFIX", key_prefix)
    monkeypatch.delenv("USE_REDIS", raising=False)
    made: list[RedisCache] = []

    def make(**kwargs: Any) -> RedisCache:
        kwargs.setdefault("redis_url", redis_url)
        kwargs.setdefault("cache_dir", cache_dir)
        cache = RedisCache(**kwargs)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


def test_redis_cache_keeps_toolweavers_signature() -> None:
    params = inspect.signature(RedisCache).parameters
    defaults = {name: p.default for name, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD}
    assert defaults == {
        "redis_url": None,
        "password": None,
        "ssl": False,
        "cache_dir": None,
        "enable_fallback": True,
        "pool_size": 10,
    }
    assert inspect.signature(RedisCache.set).parameters["ttl"].default == 3600


async def test_redis_cache_writes_reach_redis_and_read_back(
    make_compat: Callable[..., RedisCache], raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    cache = make_compat(pool_size=10)
    assert await cache.set("session:1", {"step": 2}, ttl=60) is True
    assert await cache.get("session:1") == {"step": 2}
    assert [k async for k in raw_redis.scan_iter(f"{key_prefix}:default:*")]
    assert await cache.delete("session:1") is True
    assert await cache.get("session:1") is None


async def test_clear_removes_this_prefix_only_never_flushdb(
    make_compat: Callable[..., RedisCache], raw_redis: aioredis.Redis
) -> None:
    await raw_redis.set("someone-else:key", b"keep me")
    cache = make_compat()
    await cache.set("mine", 1)
    assert await cache.clear() is True
    assert await cache.get("mine") is None
    assert await raw_redis.get("someone-else:key") == b"keep me"
    await raw_redis.delete("someone-else:key")


async def test_health_check_has_toolweavers_keys_and_upper_case_state(
    make_compat: Callable[..., RedisCache], redis_url: str
) -> None:
    async with make_compat() as cache:
        report = await cache.health_check()
    for key in (
        "redis_available",
        "redis_url",
        "circuit_breaker_state",
        "fallback_enabled",
        "cache_dir",
        "redis_ping",
    ):
        assert key in report
    assert report["redis_available"] is True
    assert report["circuit_breaker_state"] == "CLOSED"
    assert report["fallback_enabled"] is True


def test_password_never_shows_in_the_url() -> None:
    cache = RedisCache(redis_url="redis://:s3cret@127.0.0.1:1/0", password="other")
    assert "s3cret" not in cache.redis_url
    assert cache.cache.config.redis_password == "other"


async def test_enable_fallback_false_leaves_the_file_store_out(
    make_compat: Callable[..., RedisCache],
) -> None:
    cache = make_compat(enable_fallback=False)
    assert cache.cache.config.enabled_stores == ("memory", "redis")
    assert (await cache.health_check())["fallback_enabled"] is False


def test_ssl_true_turns_a_redis_url_into_tls() -> None:
    cache = RedisCache(redis_url="redis://127.0.0.1:1/0", ssl=True)
    assert cache.ssl is True
    assert cache.redis_url == "rediss://127.0.0.1:1/0"


async def test_unencodable_value_raises_instead_of_being_pickled(
    make_compat: Callable[..., RedisCache],
) -> None:
    cache = make_compat()
    with pytest.raises(SerializationError):
        await cache.set("lock", object())


async def test_breaker_view_reports_failures_and_availability_when_redis_dies(
    cache_dir: Path, key_prefix: str, own_redis_server: RedisServer
) -> None:
    cache = RedisCache(redis_url=own_redis_server.url, cache_dir=cache_dir)
    try:
        await cache.set("k", 1)
        assert cache.circuit_breaker.state == "CLOSED"
        assert cache.circuit_breaker.failures == 0
        assert cache.redis_available is True
        await asyncio.to_thread(own_redis_server.kill)
        for _ in range(cache.circuit_breaker.failure_threshold):
            cache.circuit_breaker.record_failure()
        assert cache.circuit_breaker.state == "OPEN"
        assert cache.circuit_breaker.failures >= cache.circuit_breaker.failure_threshold
        assert cache.circuit_breaker.is_available() is False
        assert cache.redis_available is False
        assert await cache.get("k") == 1  # memory still answers
    finally:
        await cache.aclose()


async def test_tool_cache_uses_toolweavers_ttls_keys_and_namespaces(
    make_compat: Callable[..., RedisCache], raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    assert (ToolCache.CATALOG_TTL, ToolCache.SEARCH_TTL) == (86400, 3600)
    assert (ToolCache.EMBEDDING_TTL, ToolCache.TOOL_TTL) == (7 * 86400, 86400)
    cache = make_compat()
    tools = ToolCache(cache)
    tools.SEARCH_TTL = 5
    assert await tools.set_catalog("h", {"tools": []}) is True
    assert await tools.set_search_results("q", "v1", 3, [{"id": 1}]) is True
    assert await tools.set_embedding("t", "m", [0.5, 0.25]) is True
    assert await tools.set_tool("calc", "2", {"schema": {}}) is True
    assert await tools.get_catalog("h") == {"tools": []}
    assert await tools.get_search_results("q", "v1", 3) == [{"id": 1}]
    assert await tools.get_embedding("t", "m") == [0.5, 0.25]
    assert await tools.get_tool("calc", "2") == {"schema": {}}
    # the same entries, read through AsyncToolCache's own helpers
    assert await cache.cache.get_tool("calc", "2") == {"schema": {}}
    keys = {k.decode() async for k in raw_redis.scan_iter(f"{key_prefix}:*")}
    assert any(k.startswith(f"{key_prefix}:catalog:") and k.endswith("catalog:v2:h") for k in keys)
    search = next(k for k in keys if k.endswith("search:q:v1:3"))
    assert 0 < await raw_redis.ttl(search) <= 5
    tool = next(k for k in keys if k.endswith("tool:calc:v2"))
    assert await raw_redis.ttl(tool) > 86000


# -- config: an explicit redis_url turns Redis on ------------------------------------------


def test_explicit_redis_url_turns_redis_on() -> None:
    assert CacheConfig(redis_url="redis://127.0.0.1:6379/0").use_redis is True
    assert CacheConfig().use_redis is False
    assert CacheConfig(redis_url="redis://127.0.0.1:6379/0", use_redis=False).use_redis is False


def test_from_env_redis_url_override_turns_redis_on_but_env_url_alone_does_not() -> None:
    env = {"REDIS_URL": "redis://127.0.0.1:6379/0"}
    assert CacheConfig.from_env(env).use_redis is False
    assert CacheConfig.from_env({**env, "USE_REDIS": "false"}, redis_url=env["REDIS_URL"]).use_redis
    assert not CacheConfig.from_env(env, redis_url=env["REDIS_URL"], use_redis=False).use_redis


def test_async_tool_cache_takes_config_fields_as_keywords(tmp_path: Path) -> None:
    cache = AsyncToolCache(redis_url="redis://127.0.0.1:1/0", cache_dir=tmp_path)
    assert cache.config.enabled_stores == ("memory", "redis", "file")
    assert cache.config.cache_dir == tmp_path
    with pytest.raises(ConfigError, match="enable_fallback -> stores"):
        AsyncToolCache(enable_fallback=True)
    with pytest.raises(ConfigError, match="either"):
        AsyncToolCache(CacheConfig(), cache_dir=tmp_path)


async def test_connect_logs_the_active_chain_once_at_info(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="toolweaver_async.cache")
    async with AsyncToolCache(cache_dir=tmp_path, key_prefix="logged"):
        pass
    lines = [r for r in caplog.records if "memory -> file" in r.getMessage()]
    assert len(lines) == 1
    assert lines[0].levelname == "INFO"
    assert "Redis off" in lines[0].getMessage()
