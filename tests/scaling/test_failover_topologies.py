"""Failover on real topologies, under 50 agents: a cluster primary SIGKILLed and its replica
promoted, a Sentinel primary SIGKILLed and its replica promoted, a whole cluster down and back.

The promise is the single server's: no exception reaches an agent, the cache is back on Redis
after the promotion, and a fresh instance (another cache_dir, Redis only) reads every key an
agent wrote as its latest value or a miss, never an older one. A promoted replica may lack the
old primary's last acknowledged writes (replication is asynchronous): the last two tests show
that the cache deletes what such a promotion rolled back instead of serving the older value.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, BreakerSettings, BreakerState, CacheConfig
from toolweaver_async.stores.redis.cluster_keys import StripedNamespace

from ..polling import eventually
from ..test_failover import Agents, recovered, redis_layer
from ..topologies import (
    ClusterTopology,
    Node,
    SentinelTopology,
    cut_replication,
    pause,
    resume,
    wait_replicated,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.allow_blocking(
        reason="the test looks at the topology with a synchronous redis client (CLUSTER NODES, "
        "INFO) and kills processes; the library is still checked"
    ),
]

SETTINGS: dict[str, Any] = {
    "stores": ("redis", "file"),  # no memory layer: every get goes to Redis
    "redis_command_timeout": 0.25,
    "redis_connect_timeout": 0.1,
    "breaker": BreakerSettings(
        failure_threshold=3, recovery_timeout=0.05, max_recovery_timeout=0.2
    ),
}


@pytest.fixture
async def make_cache(tmp_path: Path) -> AsyncIterator[Callable[..., AsyncToolCache]]:
    made: list[AsyncToolCache] = []

    def make(url: str, prefix: str, **changes: Any) -> AsyncToolCache:
        settings = {
            **SETTINGS,
            "redis_url": url,
            "key_prefix": prefix,
            "cache_dir": tmp_path / f"cache{len(made)}",
            **changes,
        }
        cache = AsyncToolCache(CacheConfig(**settings))
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


async def run_through(
    cache: AsyncToolCache,
    make_fresh: Callable[[], AsyncToolCache],
    fail: Callable[[], object],
    heal: Callable[[], object],
) -> Agents:
    """50 agents: healthy, ``fail`` (agents keep writing), ``heal`` (blocking, in a thread),
    then reads only; checks every promise and returns the agents for more checks."""
    loop = asyncio.get_running_loop()

    def on_redis(instance: AsyncToolCache) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:  # discovery done and the breaker closed
            await instance.set("warm-up", 1)
            return recovered(instance)() and await instance.get("warm-up") == 1

        return check

    await eventually(on_redis(cache), within=10.0, what="the agents' cache on Redis")
    agents = Agents(cache, count=50)
    agents.start()
    await agents.run_for(0.3)
    await loop.run_in_executor(None, fail)
    agents.failed = True
    await loop.run_in_executor(None, heal)
    await agents.run_for(0.3)
    agents.writing = False
    await eventually(recovered(cache), within=10.0, what="breaker closed, journal replayed")
    hits_before = cache.stats().overall.hits.get("redis", 0)
    # Back on Redis: the agents' reads are answered by Redis again, not by the file store.
    await eventually(
        lambda: cache.stats().overall.hits.get("redis", 0) > hits_before + 100,
        within=10.0,
        what="agents' reads answered by Redis again",
    )
    await agents.stop()
    assert agents.errors == []
    assert agents.stale == []
    fresh = make_fresh()  # started now: another cache_dir, Redis alone
    await eventually(on_redis(fresh), within=10.0, what="the fresh cache on Redis")
    in_redis = {key: await fresh.get(key) for key in agents.latest}
    older = {
        key: (got, agents.latest[key])
        for key, got in in_redis.items()
        if got is not None and got != agents.latest[key]
    }
    assert older == {}
    assert any(got is not None for got in in_redis.values()), "Redis holds nothing at all"
    return agents


async def test_50_agents_survive_a_cluster_primary_killed_and_its_replica_promoted(
    healed_cluster: ClusterTopology, make_cache: Callable[..., AsyncToolCache]
) -> None:
    prefix = f"fo{time.monotonic_ns() % 10**9}"
    victim, survivor, _ = healed_cluster.primaries()
    cache = make_cache(f"redis://{victim.address}/0", prefix)  # discovers the others from it

    # A new instance starts from a live node: the URL's node is where discovery begins.
    def fresh() -> AsyncToolCache:
        return make_cache(f"redis://{survivor.address}/0", prefix, stores=("redis",))

    await run_through(cache, fresh, victim.kill, lambda: healed_cluster.wait_promoted(victim))


async def test_50_agents_survive_a_sentinel_failover(
    healed_sentinel: SentinelTopology, make_cache: Callable[..., AsyncToolCache]
) -> None:
    prefix = f"fo{time.monotonic_ns() % 10**9}"
    cache = make_cache(healed_sentinel.url(), prefix)
    victim = healed_sentinel.primary()

    def fresh() -> AsyncToolCache:
        return make_cache(healed_sentinel.url(), prefix, stores=("redis",))

    await run_through(cache, fresh, victim.kill, lambda: healed_sentinel.wait_promoted(victim))
    assert healed_sentinel.primary() is not victim


async def test_50_agents_survive_the_whole_cluster_down_and_back(
    healed_cluster: ClusterTopology, make_cache: Callable[..., AsyncToolCache]
) -> None:
    prefix = f"fo{time.monotonic_ns() % 10**9}"
    cache = make_cache(healed_cluster.url, prefix)

    def fresh() -> AsyncToolCache:
        return make_cache(healed_cluster.url, prefix, stores=("redis",))

    def everything_down() -> None:
        for node in healed_cluster.nodes:
            node.kill()

    agents = await run_through(cache, fresh, everything_down, healed_cluster.heal)
    # Every node lost its data (no persistence): what Redis holds now, the journal put there.
    assert agents.written_in_outage


# -- the lost-write window of asynchronous replication ---------------------------------------------


def settled(cache: AsyncToolCache, key: str) -> Callable[[], Awaitable[bool]]:
    """Reads ``key`` (never the older value) until the cache is back on Redis with its journal
    replayed: the writer's deletion of what the promotion rolled back has landed, so no other
    instance reads the older value either."""

    async def check() -> bool:
        for _ in range(5):
            assert await cache.get(key) in (None, "latest")
        return recovered(cache)()

    return check


def keys_served_by(node: Node, topology: ClusterTopology, prefix: str, count: int) -> list[str]:
    """``count`` cache keys of namespace ``default`` whose stripe lives in a slot ``node``
    serves."""
    striped = StripedNamespace(prefix, "default")
    row = next(r for r in topology.cluster_nodes() if r["address"] == node.address)
    ranges = []
    for part in row["slots"].split():
        low, _, high = part.partition("-")
        ranges.append((int(low), int(high or low)))
    found = []
    for n in range(10_000):
        key = f"k{n}"
        slot = striped.slots[striped.stripe_of(key.encode())]
        if any(low <= slot <= high for low, high in ranges):
            found.append(key)
            if len(found) == count:
                return found
    raise AssertionError("no stripe on this node")


async def test_a_promoted_cluster_replica_missing_the_last_write_never_serves_the_older_value(
    healed_cluster: ClusterTopology, make_cache: Callable[..., AsyncToolCache]
) -> None:
    prefix = f"lw{time.monotonic_ns() % 10**9}"
    victim, survivor, _ = healed_cluster.primaries()
    replica = healed_cluster.replica_of(victim)
    cache = make_cache(f"redis://{survivor.address}/0", prefix, stores=("redis",))
    key, probe = keys_served_by(victim, healed_cluster, prefix, 2)
    await cache.set(key, "older")
    run = asyncio.get_running_loop().run_in_executor
    await run(None, wait_replicated, victim, replica)
    pause(replica)  # so it cannot resync the moment its link drops
    try:
        cut_replication(victim)
        await cache.set(key, "latest")  # acknowledged by the primary, never replicated
        # On a loaded machine the write can time out and be journaled: its replay then reaches
        # the primary (still alive) before the kill, so it is acknowledged there either way.
        await eventually(lambda: not redis_layer(cache).journal, what="the write acknowledged")
        victim.kill()
    finally:
        resume(replica)
    await run(None, healed_cluster.wait_promoted, victim)

    # Redis alone in the chain, and the probe in a slot the victim served: a hit proves the
    # cache routes those slots to the promoted replica (a failed read is a miss, which would
    # let the checks below pass without ever asking it).
    def redis_answers(on: AsyncToolCache) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            await on.set(probe, 1)
            return bool(await on.get(probe) == 1)

        return check

    await eventually(redis_answers(cache), within=10.0, what="the cache uses the promoted replica")
    await eventually(
        settled(cache, key), within=10.0, what="the rolled-back key deleted, breaker closed"
    )
    fresh = make_cache(f"redis://{survivor.address}/0", prefix, stores=("redis",))
    await eventually(redis_answers(fresh), within=10.0, what="a fresh cache uses it too")
    assert await fresh.get(key) in (None, "latest")
    health = await cache.health_check()
    assert health["stores"]["redis"]["topology"]["lost_on_failover"] >= 1


async def test_a_promoted_sentinel_replica_missing_the_last_write_never_serves_the_older_value(
    healed_sentinel: SentinelTopology, make_cache: Callable[..., AsyncToolCache]
) -> None:
    prefix = f"lw{time.monotonic_ns() % 10**9}"
    victim = healed_sentinel.primary()
    replica = next(node for node in healed_sentinel.data_nodes if node is not victim)
    cache = make_cache(healed_sentinel.url(), prefix, stores=("redis",))
    await cache.set("k", "older")
    run = asyncio.get_running_loop().run_in_executor
    await run(None, wait_replicated, victim, replica)
    pause(replica)  # so it cannot resync the moment its link drops
    try:
        cut_replication(victim)
        await cache.set("k", "latest")  # acknowledged by the primary, never replicated
        # On a loaded machine the write can time out and be journaled: its replay then reaches
        # the primary (still alive) before the kill, so it is acknowledged there either way.
        await eventually(lambda: not redis_layer(cache).journal, what="the write acknowledged")
        victim.kill()
    finally:
        resume(replica)
    await run(None, healed_sentinel.wait_promoted, victim)

    def redis_answers(on: AsyncToolCache) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:  # Redis alone in the chain: a hit proves it is used
            await on.set("probe", 1)
            return bool(await on.get("probe") == 1)

        return check

    await eventually(redis_answers(cache), within=10.0, what="the cache uses the promoted replica")
    await eventually(
        settled(cache, "k"), within=10.0, what="the rolled-back key deleted, breaker closed"
    )
    fresh = make_cache(healed_sentinel.url(), prefix, stores=("redis",))
    await eventually(redis_answers(fresh), within=10.0, what="a fresh cache uses it too")
    assert await fresh.get("k") in (None, "latest")
    health = await cache.health_check()
    assert health["stores"]["redis"]["topology"]["lost_on_failover"] >= 1


# -- one breaker per cluster primary ------------------------------------------------------------
# A dead (SIGKILLed) or frozen (SIGSTOPped) primary takes out only its slots: its keys fall back
# to the file store and their writes are journaled; the other primaries' keys go on being
# answered by Redis, and the store's own breaker never opens.


@pytest.mark.parametrize("fault", ["sigkill", "sigstop"])
async def test_a_dead_primary_takes_out_only_its_slots(
    healed_cluster: ClusterTopology, make_cache: Callable[..., AsyncToolCache], fault: str
) -> None:
    prefix = f"nb{time.monotonic_ns() % 10**9}"
    victim, *others = healed_cluster.primaries()
    cache = make_cache(f"redis://{others[0].address}/0", prefix)  # Redis, then file
    on_victim = keys_served_by(victim, healed_cluster, prefix, count=5)
    elsewhere = [k for node in others for k in keys_served_by(node, healed_cluster, prefix, 5)]
    every = on_victim + elsewhere
    await cache.set_many(dict.fromkeys(every, 0))
    assert await cache.get_many(every) == dict.fromkeys(every, 0)  # every node in use
    layer = redis_layer(cache)
    trips: list[Any] = []
    layer.breaker.add_listener(lambda _name, _old, new: trips.append(new))
    stats_before = cache.stats().overall
    redis_hits, file_hits = stats_before.hits.get("redis", 0), stats_before.hits.get("file", 0)
    rounds = 0
    if fault == "sigkill":
        victim.kill()
    else:
        pause(victim)
    try:
        # Well inside cluster-node-timeout (1 s): no replica has been promoted yet.
        deadline = time.monotonic() + 0.7
        while time.monotonic() < deadline:
            rounds += 1
            await asyncio.gather(*(cache.set(key, rounds) for key in every))
            got = await asyncio.gather(*(cache.get(key) for key in every))
            assert got == [rounds] * len(every)
        topology = (await cache.health_check())["stores"]["redis"]["topology"]
    finally:
        if fault == "sigstop":
            resume(victim)
    assert trips == []  # the store's breaker stayed closed: the other slots were never skipped
    stats = cache.stats().overall
    # the other primaries answered every read of their keys but the first few ...
    assert stats.hits.get("redis", 0) - redis_hits >= len(elsewhere) * (rounds - 1)
    # ... and the dead one's keys came from the file store, their writes journaled
    assert stats.hits.get("file", 0) - file_hits >= len(on_victim)
    assert layer.journal is not None
    assert layer.journal.recorded > 0
    states = {node["address"]: node["breaker"] for node in topology["nodes"]}
    assert states[victim.address] in ("open", "half_open")
    assert all(states[node.address] == "closed" for node in others)
    assert BreakerState.OPEN not in trips


async def test_health_check_shows_each_primarys_breaker(
    redis_cluster: ClusterTopology, make_cache: Callable[..., AsyncToolCache]
) -> None:
    cache = make_cache(redis_cluster.url, f"nh{time.monotonic_ns() % 10**9}")
    await cache.set("k", 1)
    nodes = (await cache.health_check())["stores"]["redis"]["topology"]["nodes"]
    assert {node["address"] for node in nodes} == {n.address for n in redis_cluster.primaries()}
    assert all(node["breaker"] == "closed" for node in nodes)
