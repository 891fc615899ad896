"""Memory coherence on the shared Cluster and Sentinel topologies."""

from __future__ import annotations

from pathlib import Path

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
