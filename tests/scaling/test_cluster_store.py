"""The Redis store on a real Redis Cluster (3 primaries, 3 replicas): every public operation
across slots, per-node batching, clear(), invalidate() and the get_or_set lock."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async.stores.redis import RedisStore
from toolweaver_async.stores.redis.cluster_keys import key_slot

from ..polling import eventually
from ..topologies import ClusterTopology, Node

KEYS = [f"key-{n}" for n in range(300)]

pytestmark = pytest.mark.allow_blocking(
    reason="the test looks behind the cache's back with a synchronous redis client on each "
    "node; the library is still checked"
)


@pytest.fixture
def prefix() -> str:
    return "c" + uuid.uuid4().hex[:10]


@pytest.fixture
async def make_store(
    redis_cluster: ClusterTopology, prefix: str
) -> AsyncIterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def make(**options: Any) -> RedisStore:
        store = RedisStore(url=redis_cluster.url, key_prefix=prefix, **options)
        made.append(store)
        return store

    yield make
    for store in made:
        await store.aclose()


@pytest.fixture
async def make_cache(
    redis_cluster: ClusterTopology, prefix: str, tmp_path: Path
) -> AsyncIterator[Callable[..., AsyncToolCache]]:
    made: list[AsyncToolCache] = []

    def make(**changes: Any) -> AsyncToolCache:
        settings: dict[str, Any] = {
            "redis_url": redis_cluster.url,
            "key_prefix": prefix,
            "cache_dir": tmp_path / f"cache{len(made)}",
            "stores": ("redis",),
            # These tests check routing across slots, not deadlines (the failover tests do):
            # with Redis the only store, a round trip a loaded CI box delays past the default
            # 0.25 s would be a miss here, as it should be for an agent.
            "redis_command_timeout": 2.0,
        }
        settings.update(changes)
        cache = AsyncToolCache(CacheConfig(**settings))
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


def keys_by_primary(topology: ClusterTopology, pattern: str) -> dict[str, list[bytes]]:
    """Every key matching ``pattern`` on each primary, by address."""
    found: dict[str, list[bytes]] = {}
    for node in topology.primaries():
        with node.client() as client:
            found[node.address] = list(client.scan_iter(match=pattern, count=1000))
    return found


def foreign_key_on(node: Node, topology: ClusterTopology) -> str:
    """A key outside any cache prefix whose slot ``node`` serves."""
    rows = {row["address"]: row for row in topology.cluster_nodes()}
    ranges = []
    for part in rows[node.address]["slots"].split():
        low, _, high = part.partition("-")
        ranges.append((int(low), int(high or low)))
    for n in range(100_000):
        name = f"foreign:{{{n}}}"
        slot = key_slot(name.encode())
        if any(low <= slot <= high for low, high in ranges):
            return name
    raise AssertionError("no slot of this node found")


async def test_a_plain_url_to_one_node_is_detected_as_a_cluster(
    make_store: Callable[..., RedisStore],
) -> None:
    store = make_store()
    assert store.mode == "pending"
    await store.set("ns", "k", b"v", 60)
    assert store.mode == "cluster"
    assert await store.get("ns", "k") == b"v"


async def test_cluster_true_skips_detection_and_standalone_stays_off(
    make_store: Callable[..., RedisStore], redis_cluster: ClusterTopology
) -> None:
    forced = make_store(cluster=True)
    assert forced.mode == "cluster"
    await forced.set("ns", "k", b"v", 60)
    assert await forced.get("ns", "k") == b"v"
    # Forced standalone on a cluster node: a key of another node's slot is refused (MOVED),
    # which is exactly what detection saves users from.
    standalone = make_store(cluster=False)
    outcomes = await asyncio.gather(
        *(standalone.get("ns", key) for key in KEYS[:30]), return_exceptions=True
    )
    assert any(isinstance(outcome, Exception) for outcome in outcomes)


@pytest.mark.allow_blocking(reason="reads the cluster's topology with a blocking client")
async def test_every_operation_works_with_keys_spread_over_all_primaries(
    make_cache: Callable[..., AsyncToolCache], redis_cluster: ClusterTopology, prefix: str
) -> None:
    cache = make_cache()
    await cache.set_many({key: {"n": key} for key in KEYS})
    on_nodes = keys_by_primary(redis_cluster, f"{prefix}:*")
    assert len(on_nodes) == 3
    assert all(len(keys) > 50 for keys in on_nodes.values()), {
        a: len(k) for a, k in on_nodes.items()
    }
    assert await cache.get_many(KEYS) == {key: {"n": key} for key in KEYS}
    assert await asyncio.gather(*(cache.get(key) for key in KEYS)) == [{"n": k} for k in KEYS]
    await cache.set("one", 1, ttl=30)
    assert await cache.get("one") == 1
    assert await cache.delete("one") is True
    assert await cache.get("one") is None
    assert await cache.delete("one") is False
    calls = []

    async def load() -> str:
        calls.append(1)
        return "loaded"

    assert await cache.get_or_set("lazy", load) == "loaded"
    assert await cache.get_or_set("lazy", load) == "loaded"
    assert calls == [1]
    listed = [key async for key in cache.keys(prefix="key-1")]
    assert sorted(listed) == sorted(key for key in KEYS if key.startswith("key-1"))


async def test_get_many_and_set_many_cost_one_round_trip_per_primary(
    make_store: Callable[..., RedisStore],
) -> None:
    store = make_store()
    await store.set("ns", "warm", b"x", 60)  # detection and slot table
    await store.set_many("ns", [(key, key.encode(), 60.0) for key in KEYS])
    engine = store._cluster
    assert engine is not None
    before = {name: b.round_trips for name, b in engine._batchers.items()}
    assert len(before) == 3
    assert await store.get_many("ns", KEYS) == [key.encode() for key in KEYS]
    after = {name: b.round_trips for name, b in engine._batchers.items()}
    assert {name: after[name] - before[name] for name in before} == dict.fromkeys(before, 1)


async def test_concurrent_gets_share_round_trips_per_primary(
    make_store: Callable[..., RedisStore],
) -> None:
    store = make_store()
    await store.set_many("ns", [(key, key.encode(), 60.0) for key in KEYS])
    engine = store._cluster
    assert engine is not None
    before = sum(b.round_trips for b in engine._batchers.values())
    got = await asyncio.gather(*(store.get("ns", key) for key in KEYS))
    assert got == [key.encode() for key in KEYS]
    # A lone first get per node goes out at once, the rest share one pipeline each.
    assert sum(b.round_trips for b in engine._batchers.values()) - before <= 3 * 3


@pytest.mark.allow_blocking(reason="reads the cluster's topology with a blocking client")
async def test_clear_removes_this_caches_keys_and_leaves_a_foreign_key_on_every_node(
    make_cache: Callable[..., AsyncToolCache], redis_cluster: ClusterTopology, prefix: str
) -> None:
    cache = make_cache()
    other = make_cache(key_prefix=prefix + "x")
    await cache.set_many({key: key for key in KEYS})
    await other.set("theirs", "kept")
    await cache.invalidate("default")  # counters must survive clear()
    await cache.set_many({key: key for key in KEYS})
    foreign = {}
    for node in redis_cluster.primaries():
        name = foreign_key_on(node, redis_cluster)
        with node.client() as client:
            client.set(name, b"not ours")
        foreign[node.address] = name
    await cache.clear()
    left = keys_by_primary(redis_cluster, f"{prefix}:*")
    assert all(key.endswith(b"}:gen") for keys in left.values() for key in keys), left
    for address, name in foreign.items():
        node = next(n for n in redis_cluster.nodes if n.address == address)
        with node.client() as client:
            assert client.get(name) == b"not ours"
            client.delete(name)
    assert await cache.get_many(KEYS) == {}
    assert await other.get("theirs") == "kept"


async def test_invalidate_hides_every_entry_from_every_instance_at_once(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    writer, reader = make_cache(), make_cache()
    await writer.set_many(dict.fromkeys(KEYS, 1), namespace="search")
    await writer.set("kept", 1, namespace="other")
    assert len(await reader.get_many(KEYS, namespace="search")) == len(KEYS)
    await writer.invalidate("search")
    assert await reader.get_many(KEYS, namespace="search") == {}
    assert [await reader.get(key, namespace="search") for key in KEYS[:20]] == [None] * 20
    await reader.set("after", 2, namespace="search")
    assert await writer.get("after", namespace="search") == 2
    assert await writer.get("kept", namespace="other") == 1


@pytest.mark.allow_blocking(reason="reads the cluster's topology with a blocking client")
async def test_generation_counters_spread_over_every_primary(
    make_store: Callable[..., RedisStore], redis_cluster: ClusterTopology, prefix: str
) -> None:
    store = make_store()
    await store.invalidate("ns")
    counters = keys_by_primary(redis_cluster, f"{prefix}:ns:*:gen")
    # No single slot or node carries a namespace's generation: each primary holds ~1/3.
    assert all(15 <= len(keys) <= 28 for keys in counters.values()), counters
    slots = {key_slot(key) for keys in counters.values() for key in keys}
    assert len(slots) == 64


async def test_get_or_set_runs_one_loader_across_two_cache_instances(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    first, second = make_cache(stores=("memory", "redis")), make_cache(stores=("memory", "redis"))
    started = asyncio.Event()
    release = asyncio.Event()
    calls: list[str] = []

    def loader(name: str) -> Callable[[], Any]:
        async def load() -> str:
            calls.append(name)
            started.set()
            await release.wait()
            return name

        return load

    holding = asyncio.create_task(first.get_or_set("shared", loader("first")))
    await asyncio.wait_for(started.wait(), 2)
    waiting = asyncio.create_task(second.get_or_set("shared", loader("second")))
    await asyncio.sleep(0.03)  # the second instance polls the lock a few times meanwhile
    assert not waiting.done()
    release.set()
    assert await asyncio.wait_for(holding, 2) == "first"
    assert await asyncio.wait_for(waiting, 2) == "first"
    assert calls == ["first"]


@pytest.mark.allow_blocking(reason="reads the cluster's topology with a blocking client")
async def test_health_check_shows_the_cluster_topology(
    make_cache: Callable[..., AsyncToolCache], redis_cluster: ClusterTopology
) -> None:
    cache = make_cache()
    report = await cache.health_check()
    topology = report["stores"]["redis"]["topology"]
    assert topology["mode"] == "cluster"
    assert sorted(n["address"] for n in topology["nodes"]) == sorted(
        n.address for n in redis_cluster.primaries()
    )
    assert all(n["state"] == "ok" for n in topology["nodes"])
    assert sum(n["slots"] for n in topology["nodes"]) == 16384


def test_doctor_prints_the_cluster_topology(redis_cluster: ClusterTopology, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "USE_REDIS": "true",
        "REDIS_URL": redis_cluster.url,
        "TOOLWEAVER_CACHE_DIR": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-m", "toolweaver_async", "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert '"mode": "cluster"' in done.stdout
    for node in redis_cluster.primaries():
        assert node.address in done.stdout


async def test_delete_if_removes_an_entry_only_while_it_holds_the_bytes_found(
    make_store: Callable[..., RedisStore],
) -> None:
    store = make_store()
    keys = [f"d{n}" for n in range(20)]  # stripes on every primary
    for key in keys:
        await store.set("ns", key, b"broken", None)
    assert [await store.delete_if("ns", key, b"other bytes") for key in keys] == [False] * 20
    assert await store.get_many("ns", keys) == [b"broken"] * 20
    assert [await store.delete_if("ns", key, b"broken") for key in keys] == [True] * 20
    assert await store.get_many("ns", keys) == [None] * 20


def _migrate_slot(topology: ClusterTopology, slot: int, source: Node, target: Node) -> None:
    """Move ``slot`` from ``source`` to ``target`` as ``redis-cli --cluster reshard`` does: mark
    it importing and migrating, move its keys one ``MIGRATE`` at a time (clients meet ASK and
    TRYAGAIN meanwhile), then give it to ``target`` on every primary."""
    ids = {row["address"]: row["id"] for row in topology.cluster_nodes()}
    with target.client() as into, source.client() as out:
        into.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", ids[source.address])
        out.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", ids[target.address])
        host, port = target.address.split(":")
        while keys := out.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 1):
            out.execute_command("MIGRATE", host, port, "", 0, 5000, "KEYS", *keys)
        for node in topology.primaries():
            with node.client() as client:
                client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", ids[target.address])


async def test_a_slot_moving_between_primaries_under_load_is_followed_and_never_stale(
    make_cache: Callable[..., AsyncToolCache], redis_cluster: ClusterTopology, prefix: str
) -> None:
    """A live reshard of a slot holding our entries (and their stripe's generation counter)
    while agents write and read them: the client follows ASK, TRYAGAIN and MOVED itself. A read
    during the move may miss, never answers an older value; afterwards every key reads its
    latest value from the slot's new primary."""
    cache = make_cache(redis_command_timeout=0.5)
    await cache.set_many(dict.fromkeys(KEYS, 0))
    source, target = redis_cluster.primaries()[:2]
    names = keys_by_primary(redis_cluster, f"{prefix}:*")[source.address]
    slot = key_slot(names[0])
    moving = [
        key
        for key in KEYS
        if any(n.endswith(f":{key}".encode()) and key_slot(n) == slot for n in names)
    ]
    assert moving, "no entry in the slot"
    latest = dict.fromkeys(KEYS, 0)
    older: list[tuple[str, Any, int]] = []
    done = asyncio.Event()

    async def agent(keys: list[str]) -> None:
        version = 0
        while not done.is_set():
            version += 1
            for key in keys:
                await cache.set(key, version)
                latest[key] = version
                got = await cache.get(key)
                if got is not None and got != version:
                    older.append((key, got, version))
            await asyncio.sleep(0)

    agents = [asyncio.ensure_future(agent(moving[n::4])) for n in range(min(4, len(moving)))]
    agents.append(asyncio.ensure_future(agent([k for k in KEYS if k not in moving][:20])))
    try:
        await asyncio.to_thread(_migrate_slot, redis_cluster, slot, source, target)
    finally:
        done.set()
        await asyncio.gather(*agents)
    assert older == []
    with target.client() as client:
        assert client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) > 0

    async def all_latest() -> bool:
        return await cache.get_many(KEYS) == latest

    await eventually(all_latest, within=10, what="every key's latest value, after the move")
    health = await cache.health_check()
    assert health["stores"]["redis"]["state"] == "closed"
