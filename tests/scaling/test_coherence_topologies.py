"""Memory coherence on the shared Cluster and Sentinel topologies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig

from ..polling import eventually
from ..topologies import ClusterTopology, SentinelTopology


def _cluster_config(
    cluster: ClusterTopology, prefix: str, cache_dir: Path, *, window: float = 30.0
) -> CacheConfig:
    """Memory + Redis on the cluster; a long window unless the test is about the window."""
    return CacheConfig(
        redis_url=cluster.url,
        key_prefix=prefix,
        cache_dir=cache_dir,
        stores=("memory", "redis"),
        coherence_window=window,
    )


def _coherence_of(cache: AsyncToolCache) -> Any:
    return cache._coherence  # the test looks inside to drive a topology change by hand


async def test_a_cluster_is_live_with_one_channel_per_primary(
    redis_cluster: ClusterTopology, key_prefix: str, cache_dir: Path
) -> None:
    config = _cluster_config(redis_cluster, key_prefix, cache_dir)
    async with AsyncToolCache(config) as writer, AsyncToolCache(config) as reader:
        coherence = (await reader.health_check())["coherence"]
        assert coherence["mode"] == "live"
        channel = coherence["channels"][0]
        assert channel["mode"] == "cluster"
        primaries = {node.address for node in await asyncio.to_thread(redis_cluster.primaries)}
        assert {p["address"] for p in channel["primaries"]} == primaries
        assert all(p["state"] == "live" for p in channel["primaries"])
        keys = [f"k{i}" for i in range(40)]  # stripes over every primary
        await writer.set_many(dict.fromkeys(keys, 1))
        assert await reader.get_many(keys) == dict.fromkeys(keys, 1)
        await writer.set_many(dict.fromkeys(keys, 2))

        async def sees_2() -> bool:
            return bool(await reader.get_many(keys) == dict.fromkeys(keys, 2))

        await eventually(sees_2, within=3, what="every primary's channel reports its keys")


async def test_a_primary_without_a_channel_is_not_live_until_the_refresh_fixes_it(
    redis_cluster: ClusterTopology, key_prefix: str, cache_dir: Path
) -> None:
    config = _cluster_config(redis_cluster, key_prefix, cache_dir, window=1.0)
    async with AsyncToolCache(config) as reader:
        coherence = _coherence_of(reader)
        assert coherence.mode == "live"
        channels = coherence._channels[0]
        first = (await asyncio.to_thread(redis_cluster.primaries))[0]
        replica = await asyncio.to_thread(redis_cluster.replica_of, first)
        host, _, port = replica.address.rpartition(":")
        # As if the cluster named one more primary: not live until it is followed, and a
        # replica's channel refuses to vouch (ROLE), so only the next refresh (which reads
        # the real topology) makes the set whole again.
        channels._reconcile({*channels._known, (host, int(port))})
        assert coherence.mode == "reconnecting"

        async def refused() -> bool:
            node = channels._nodes.get((host, int(port)))
            return node is not None and "not a primary" in (node.last_error or "")

        await eventually(refused, within=3, what="the replica's channel refuses")
        assert coherence.mode == "reconnecting"

        async def live() -> bool:
            return bool(coherence.mode == "live")

        await eventually(live, within=3, what="the refresh drops the replica")
        assert (host, int(port)) not in channels._nodes


@pytest.mark.slow
@pytest.mark.allow_blocking(reason="kills a node and reads the cluster with a blocking client")
async def test_cluster_coherence_covers_a_primary_failover_and_is_live_again(
    healed_cluster: ClusterTopology, key_prefix: str, cache_dir: Path
) -> None:
    window = 2.0
    config = _cluster_config(healed_cluster, key_prefix, cache_dir, window=window)
    keys = [f"k{i}" for i in range(40)]
    async with AsyncToolCache(config) as reader:
        await reader.set_many(dict.fromkeys(keys, 1))
        assert await reader.get_many(keys) == dict.fromkeys(keys, 1)
        coherence = _coherence_of(reader)
        assert coherence.mode == "live"
        primaries = await asyncio.to_thread(healed_cluster.primaries)
        # not the node the URL names: fresh caches below discover the cluster through it
        dead = next(node for node in primaries if node is not healed_cluster.nodes[0])
        dead.kill()

        async def not_live() -> bool:
            return bool(coherence.mode != "live")

        await eventually(not_live, within=2, what="the dead primary's channel is lost")
        await asyncio.to_thread(healed_cluster.wait_promoted, dead)
        async with AsyncToolCache(config.with_changes(stores=("redis",))) as fresh:

            async def written() -> bool:
                await fresh.set_many(dict.fromkeys(keys, 2))
                return bool(await fresh.get_many(keys) == dict.fromkeys(keys, 2))

            await eventually(written, within=10, what="writes reach the promoted primary")
            written_at = time.monotonic()

            async def sees_2() -> bool:
                return bool(await reader.get_many(keys) == dict.fromkeys(keys, 2))

            # during the gap memory entries live at most the window: never stale past it
            await eventually(sees_2, within=window + 1.0, what="no stale value past the window")
            assert time.monotonic() - written_at <= window + 1.0

            async def live_again() -> bool:
                return bool(coherence.mode == "live")

            await eventually(live_again, within=10, what="a channel on the promoted primary")
            followed = {p["address"] for p in coherence.describe()["channels"][0]["primaries"]}
            assert dead.address not in followed
            now = await asyncio.to_thread(healed_cluster.primaries)
            assert followed == {node.address for node in now}
            # live again: an entry stored now is uncapped, so only a channel explains this
            assert await reader.get_many(keys) == dict.fromkeys(keys, 2)
            await fresh.set_many(dict.fromkeys(keys, 3))

            async def sees_3() -> bool:
                return bool(await reader.get_many(keys) == dict.fromkeys(keys, 3))

            await eventually(sees_3, within=window, what="the channels after the failover")


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
