"""The Redis store's write lane: this process's own writes are left out of its invalidation
channel (NOLOOP), every other change still reaches it, and a lane that loses its tracking ends
the channel's session. Real redis-server throughout."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async.stores.memory import MemoryStore
from toolweaver_async.stores.redis.store import RedisStore
from toolweaver_async.stores.redis.write_lane import LaneMismatch, WriteLane
from toolweaver_async.testing import RedisServer

from .polling import eventually


def _config(url: str, key_prefix: str, cache_dir: Path, **overrides: object) -> CacheConfig:
    settings: dict[str, object] = {
        "use_redis": True,
        "redis_url": url,
        "key_prefix": key_prefix,
        "cache_dir": cache_dir,
        "stores": ("memory", "redis"),
        "coherence_window": 30.0,
        **overrides,
    }
    return CacheConfig(**settings)  # type: ignore[arg-type]


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, driver_info=None)  # no metadata stat
    try:
        yield client
    finally:
        await client.aclose()


async def _tracking_clients(client: aioredis.Redis) -> list[dict[str, str]]:
    """``CLIENT LIST`` entries of connections whose tracking is redirected somewhere."""
    listed = await client.execute_command("CLIENT", "LIST")
    text = listed.decode() if isinstance(listed, bytes) else str(listed)
    lines = text.splitlines()
    clients = [dict(f.split("=", 1) for f in line.split() if "=" in f) for line in lines]
    return [c for c in clients if c.get("redir", "-1") != "-1"]


async def _heard(cache: AsyncToolCache, count: int) -> bool:
    return bool(cache.stats().coherence["invalidations"] >= count)


async def test_own_sets_do_not_come_back_but_another_clients_do(
    redis_url: str, key_prefix: str, cache_dir: Path
) -> None:
    config = _config(redis_url, key_prefix, cache_dir)
    async with AsyncToolCache(config) as writer, AsyncToolCache(config) as other:
        assert (await writer.health_check())["coherence"]["mode"] == "live"
        await writer.set("own", "v1")
        await writer.set_many({"a": 1, "b": 2})
        # Redis reports changes in the order they are made: once the other client's later
        # write is heard, an echo of the writer's own writes would have been heard before it.
        await other.set("probe", "p")
        await eventually(lambda: _heard(writer, 1), within=3, what="the other client's write")
        assert writer.stats().coherence["invalidations"] == 1
        assert await writer.get("own") == "v1"
        assert await writer.get_many(["a", "b"]) == {"a": 1, "b": 2}
        assert writer.stats().overall.hits == {"memory": 3, "redis": 0}
        health = await writer.health_check()
        assert health["coherence"]["channels"][0]["own_writes"] == "left out (NOLOOP lane)"


async def test_a_killed_lane_socket_ends_the_session_so_a_change_it_missed_is_not_served(
    redis_url: str, key_prefix: str, cache_dir: Path, raw: aioredis.Redis
) -> None:
    """While the lane's socket is gone nobody reports changes; the channel's heartbeat must
    notice, or the memory layer keeps serving v1 for its whole TTL (the channel itself stays
    live, so nothing caps it)."""
    config = _config(redis_url, key_prefix, cache_dir, coherence_window=1.0)
    async with (
        AsyncToolCache(config) as reader,
        AsyncToolCache(_config(redis_url, key_prefix, cache_dir, stores=("redis",))) as other,
    ):
        assert (await reader.health_check())["coherence"]["mode"] == "live"
        await reader.set("k", "v1")
        # The only tracked connection on the server: the other cache has no memory layer,
        # hence no channel and no tracked lane.
        (lane,) = await _tracking_clients(raw)
        await raw.execute_command("CLIENT", "KILL", "ID", lane["id"])
        await other.set("k", "v2")

        async def fresh() -> bool:
            return bool(await reader.get("k") == "v2")

        await eventually(fresh, within=5, what="the reader drops what it may have missed")
        coherence = reader.stats().coherence
        assert coherence["channel_losses"] >= 1
        await eventually(
            lambda: reader._coherence.mode == "live", within=5, what="the channel back, tracked"
        )


async def test_a_lane_on_another_server_than_the_channel_is_refused_untracked(
    redis_url: str, own_redis_server: RedisServer, key_prefix: str, raw: aioredis.Redis
) -> None:
    """After a Sentinel failover the channel and the lane may reach different primaries:
    tracking the lane for a channel elsewhere would vouch for changes nobody reports."""
    store = RedisStore(url=redis_url, key_prefix=key_prefix)
    other = aioredis.Redis.from_url(own_redis_server.url, driver_info=None)
    try:
        lane: WriteLane = store.write_lane
        elsewhere = str((await other.info("server"))["run_id"])
        here = str((await raw.info("server"))["run_id"])
        some_client = int(await raw.execute_command("CLIENT", "ID"))
        with pytest.raises(LaneMismatch):
            await lane.track(some_client, f"{key_prefix}:".encode(), elsewhere)
        assert not lane.attached
        assert not [c for c in await _tracking_clients(raw) if c["redir"] == str(some_client)]
        await lane.track(some_client, f"{key_prefix}:".encode(), here)
        assert lane.attached
        assert lane.tracked
        assert await lane.confirm()
    finally:
        await other.aclose()
        await store.aclose()


async def test_a_store_shared_by_two_caches_is_tracked_for_one_channel_only(
    redis_url: str, key_prefix: str, cache_dir: Path
) -> None:
    """Tracking the one lane for a second channel would redirect every report away from the
    first, which would go on vouching for changes it no longer hears of."""
    config = _config(redis_url, key_prefix, cache_dir)
    shared = RedisStore.from_config(config)
    other = AsyncToolCache(_config(redis_url, key_prefix, cache_dir, stores=("redis",)))
    first = AsyncToolCache(config, stores=[MemoryStore(), shared])
    second = AsyncToolCache(config, stores=[MemoryStore(), shared])
    try:
        await other.connect()
        await first.connect()
        await second.connect()
        own = [
            (await cache.health_check())["coherence"]["channels"][0]["own_writes"]
            for cache in (first, second)
        ]
        assert own == ["left out (NOLOOP lane)", "echoed"]
        await first.set("k", "v1")
        assert await second.get("k") == "v1"
        await other.set("k", "v2")
        for cache in (first, second):

            async def fresh(cache: AsyncToolCache = cache) -> bool:
                return bool(await cache.get("k") == "v2")

            await eventually(fresh, within=3, what="both hear the other client's write")
    finally:
        await second.aclose()
        await first.aclose()
        await other.aclose()
