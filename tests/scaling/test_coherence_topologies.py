"""Memory coherence on the shared Cluster and Sentinel topologies."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig

from ..polling import eventually
from ..topologies import ClusterTopology, SentinelTopology


async def test_a_cluster_runs_in_window_mode_rather_than_trust_one_node(
    redis_cluster: ClusterTopology, key_prefix: str, cache_dir: Path
) -> None:
    config = CacheConfig(
        redis_url=redis_cluster.url,
        key_prefix=key_prefix,
        cache_dir=cache_dir,
        stores=("memory", "redis"),
        coherence_window=0.3,
    )
    async with AsyncToolCache(config) as writer, AsyncToolCache(config) as reader:
        coherence = (await reader.health_check())["coherence"]
        assert coherence["mode"] == "window"
        assert coherence["channels"][0]["state"] == "unsupported"
        await writer.set("k", "v1")
        assert await reader.get("k") == "v1"
        await writer.set("k", "v2")

        async def sees_v2() -> bool:
            return bool(await reader.get("k") == "v2")

        await eventually(sees_v2, within=2, what="the window expires the memory copy")


async def test_a_sentinel_primary_carries_the_invalidation_channel(
    redis_sentinel: SentinelTopology, key_prefix: str, cache_dir: Path
) -> None:
    config = CacheConfig(
        redis_url=redis_sentinel.url(),
        key_prefix=key_prefix,
        cache_dir=cache_dir,
        stores=("memory", "redis"),
        coherence_window=30.0,
    )
    async with AsyncToolCache(config) as writer, AsyncToolCache(config) as reader:
        assert (await reader.health_check())["coherence"]["mode"] == "live"
        await writer.set("k", "v1")
        assert await reader.get("k") == "v1"
        await writer.set("k", "v2")

        async def sees_v2() -> bool:
            return bool(await reader.get("k") == "v2")

        await eventually(sees_v2, within=3, what="the channel reports the write")


@pytest.mark.slow
@pytest.mark.allow_blocking(reason="reads the sentinel topology with a blocking client")
async def test_the_channel_follows_a_sentinel_failover(
    healed_sentinel: SentinelTopology, key_prefix: str, cache_dir: Path
) -> None:
    config = CacheConfig(
        redis_url=healed_sentinel.url(),
        key_prefix=key_prefix,
        cache_dir=cache_dir,
        stores=("memory", "redis"),
        coherence_window=30.0,  # only the channel can explain a prompt answer
    )
    async with AsyncToolCache(config) as writer, AsyncToolCache(config) as reader:
        await writer.set("k", "v1")
        assert await reader.get("k") == "v1"
        old = healed_sentinel.primary()
        old.kill()
        await asyncio.to_thread(healed_sentinel.wait_promoted, old)
        async with AsyncToolCache(config.with_changes(stores=("redis",))) as fresh:

            async def written() -> bool:
                await fresh.set("k", "v2")
                return bool(await fresh.get("k") == "v2")

            await eventually(written, within=10, what="a write to the promoted primary")

            async def sees_v2() -> bool:
                return bool(await reader.get("k") == "v2")

            await eventually(sees_v2, within=10, what="the reader's channel on the new primary")
        channel = (await reader.health_check())["coherence"]["channels"][0]
        assert channel["sessions"] >= 2
