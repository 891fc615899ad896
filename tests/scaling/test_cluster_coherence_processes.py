"""A peer process's memory layer hears of changes to keys on every primary of a real cluster."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig

from ..polling import eventually
from ..test_coherence_processes import Peer
from ..topologies import ClusterTopology

pytestmark = pytest.mark.slow

LONG_WINDOW = 30.0  # no test waits this long: a prompt answer must come from the channels
KEYS = [f"k{i}" for i in range(40)]  # their stripes fall on every primary


@pytest.fixture(scope="module")
def cluster_peer() -> Iterator[Peer]:
    peer = Peer()
    yield peer
    peer.stop()


@pytest.fixture
def settings(redis_cluster: ClusterTopology, key_prefix: str, cache_dir: Path) -> dict[str, Any]:
    return {
        "redis_url": redis_cluster.url,
        "key_prefix": key_prefix,
        "cache_dir": cache_dir,
        "stores": ("memory", "redis"),
        "coherence_window": LONG_WINDOW,
    }


async def _peer_values(peer: Peer) -> dict[str, Any]:
    return {key: await peer.get(key) for key in KEYS}


CHANGES: dict[str, tuple[Any, Any]] = {
    "set": (lambda c: _each(c.set, 2), 2),
    "set_many": (lambda c: c.set_many(dict.fromkeys(KEYS, 2)), 2),
    "delete": (lambda c: _each(c.delete), None),
    "invalidate": (lambda c: c.invalidate("default"), None),
    "clear": (lambda c: c.clear(), None),
}


async def _each(operation: Any, *value: Any) -> None:
    for key in KEYS:
        await operation(key, *value)


@pytest.mark.parametrize("change", list(CHANGES))
async def test_peer_memory_sees_changes_on_every_primary(
    change: str, cluster_peer: Peer, settings: dict[str, Any]
) -> None:
    async with AsyncToolCache(CacheConfig(**settings)) as writer:
        await writer.set_many(dict.fromkeys(KEYS, 1))
        await cluster_peer.open(**settings)
        assert await cluster_peer.mode() == "live"

        async def held() -> bool:  # retried: a late echo of the writes may drop a first copy
            assert await _peer_values(cluster_peer) == dict.fromkeys(KEYS, 1)
            before = (await cluster_peer.hits())["memory"]
            assert await _peer_values(cluster_peer) == dict.fromkeys(KEYS, 1)
            return bool((await cluster_peer.hits())["memory"] == before + len(KEYS))

        await eventually(held, within=5, what="the peer holds every key in memory")
        operation, expected = CHANGES[change]
        await operation(writer)

        async def peer_sees_it() -> bool:
            return await _peer_values(cluster_peer) == dict.fromkeys(KEYS, expected)

        await eventually(peer_sees_it, within=5, what=f"the peer sees {change} on every primary")
