"""A cluster with one primary dead for good (its replica gone too, so none is promoted): the
outage journal's operations for that primary's slots must not hold back the other primaries'.

A replay batch, or a ``set_many``, spanning a dead and a live primary lands what the live one
took and keeps only the dead one's part journaled, and the replay goes on past the dead one's
operations (they are retried after the others); before, the whole batch failed, so a write to a
live primary that had once timed out stayed journaled (its reads skipping Redis) for as long as
the dead primary's operations sat at the head of the journal.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig

from ..polling import eventually
from ..test_failover import redis_layer
from ..topologies import ClusterTopology, Node, pause, resume
from .test_failover_topologies import SETTINGS, keys_served_by

pytestmark = [
    pytest.mark.slow,
    pytest.mark.allow_blocking(
        reason="the test looks at the topology with a synchronous redis client and kills "
        "processes; the library is still checked"
    ),
]


@pytest.fixture
async def make_cache(tmp_path: Path) -> AsyncIterator[Callable[[str, str], AsyncToolCache]]:
    made: list[AsyncToolCache] = []

    def make(url: str, prefix: str) -> AsyncToolCache:
        config = CacheConfig(
            **SETTINGS, redis_url=url, key_prefix=prefix, cache_dir=tmp_path / f"c{len(made)}"
        )
        made.append(AsyncToolCache(config))
        return made[-1]

    yield make
    for cache in made:
        await cache.aclose()


def kill_for_good(cluster: ClusterTopology, victim: Node) -> None:
    """``victim`` and its replica SIGKILLed: no promotion; the others go on serving (the
    cluster does not require full coverage). ``healed_cluster`` restarts both afterwards."""
    replica = cluster.replica_of(victim)
    replica.kill()
    victim.kill()


async def test_a_dead_primarys_journaled_writes_never_hold_back_a_live_primarys(
    healed_cluster: ClusterTopology, make_cache: Callable[[str, str], AsyncToolCache]
) -> None:
    prefix = f"cr{time.monotonic_ns() % 10**9}"
    victim, live, other = healed_cluster.primaries()
    cache = make_cache(f"redis://{other.address}/0", prefix)
    on_victim = keys_served_by(victim, healed_cluster, prefix, count=100)  # > a replay batch
    [on_live] = keys_served_by(live, healed_cluster, prefix, count=1)
    await cache.set_many(dict.fromkeys([*on_victim, on_live], 0))
    assert await cache.get(on_live) == 0
    layer = redis_layer(cache)
    journal = layer.journal
    assert journal is not None
    kill_for_good(healed_cluster, victim)
    for key in on_victim:
        await cache.set(key, 1)  # journaled: their primary is gone
    assert all(journal.covers("default", key) for key in on_victim)
    pause(live)  # a blip: this one write times out and is journaled behind the dead ones
    try:
        await cache.set(on_live, 1)
    finally:
        resume(live)
    assert journal.covers("default", on_live)
    # The replay lands the live primary's part of each batch and goes past batches the dead
    # primary refused whole: the live key is read from Redis again.
    await eventually(
        lambda: not journal.covers("default", on_live),
        within=3,
        what="the live primary's journaled write replayed past the dead primary's",
    )
    redis_hits = cache.stats().overall.hits.get("redis", 0)
    assert await cache.get(on_live) == 1
    assert cache.stats().overall.hits.get("redis", 0) == redis_hits + 1
    assert all(journal.covers("default", key) for key in on_victim)  # still waiting for it

    # A set_many spanning both primaries journals only the dead one's part.
    await cache.set_many({on_victim[0]: 2, on_live: 2})
    assert journal.covers("default", on_victim[0])
    assert not journal.covers("default", on_live)
    assert await cache.get(on_live) == 2
    assert cache.stats().overall.hits.get("redis", 0) == redis_hits + 2
