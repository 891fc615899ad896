"""AsyncToolCache end to end: the chain over a real redis-server and real files."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import redis.asyncio as aioredis

from toolweaver_async import (
    AsyncToolCache,
    CacheConfig,
    InvalidKeyError,
    InvalidTTLError,
    NamespacePolicy,
    SerializationError,
    ValueTooLargeError,
)
from toolweaver_async.testing import FakeClock, RedisServer

MakeCache = Callable[..., AsyncToolCache]


CHAINS = {
    "embedded": {"use_redis": False},
    "full": {"use_redis": True},
    "redis-only": {"use_redis": True, "stores": ("redis",)},
    "file-only": {"stores": ("file",)},
    "memory-only": {"stores": ("memory",)},
}


@pytest.mark.parametrize("chain", CHAINS)
async def test_round_trip_through_every_chain(make_cache: MakeCache, chain: str) -> None:
    cache = make_cache(**CHAINS[chain])
    value = {"name": "Alice", "tags": ["a", "b"], "score": 1.5, "raw": b"\x00\x01", "n": None}
    await cache.set("user:123", value, ttl=60)
    assert await cache.get("user:123") == value
    assert await cache.get("user:999") is None
    assert await cache.get("user:999", default="fallback") == "fallback"
    assert await cache.delete("user:123") is True
    assert await cache.get("user:123") is None
    assert await cache.delete("user:123") is False


async def test_none_is_a_value_not_a_miss(make_cache: MakeCache) -> None:
    cache = make_cache(use_redis=True)
    await cache.set("k", None)
    assert await cache.get("k", default="missing") is None


@pytest.mark.parametrize("chain", ["embedded", "full", "redis-only", "file-only"])
async def test_entries_expire_in_every_store_on_the_injected_clock(
    make_cache: MakeCache, clock: FakeClock, chain: str
) -> None:
    cache = make_cache(**CHAINS[chain])
    await cache.set("k", "v", ttl=30)
    clock.advance(29)
    assert await cache.get("k") == "v"
    clock.advance(2)
    assert await cache.get("k") is None


async def test_namespace_policy_gives_the_ttl(make_cache: MakeCache, clock: FakeClock) -> None:
    cache = make_cache(namespaces={"short": NamespacePolicy(ttl=5)})
    await cache.set("q", [1], namespace="short")
    await cache.set("q", [2], namespace="search")  # default search policy: 1 h
    clock.advance(6)
    assert await cache.get("q", namespace="short") is None
    assert await cache.get("q", namespace="search") == [2]
    clock.advance(3600)
    assert await cache.get("q", namespace="search") is None


async def test_file_hit_is_promoted_into_memory(make_cache: MakeCache) -> None:
    writer = make_cache(stores=("file",))
    await writer.set("k", {"v": 1})
    reader = make_cache()  # memory + file, same folder
    assert await reader.get("k") == {"v": 1}
    assert await reader.get("k") == {"v": 1}
    hits = reader.stats().overall.hits
    assert hits == {"memory": 1, "file": 1}


async def test_redis_hit_is_promoted_into_memory_and_file_hit_into_redis(
    make_cache: MakeCache, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    writer = make_cache(stores=("file",))
    await writer.set("k", "from-file", ttl=100)
    reader = make_cache(use_redis=True)
    assert await reader.get("k") == "from-file"
    # the Redis copy is written in the background; wait for it with a deadline
    redis_only = make_cache(use_redis=True, stores=("redis",))
    for _ in range(200):
        if await redis_only.get("k") == "from-file":
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("file hit was never promoted into Redis")
    keys = [k async for k in raw_redis.scan_iter(match=f"{key_prefix}:default:*")]
    ttl_ms = await raw_redis.pttl(keys[0])
    assert 0 < ttl_ms <= 100_000
    again = make_cache(use_redis=True)
    assert await again.get("k") == "from-file"
    assert again.stats().overall.hits["redis"] == 1


async def test_promotion_never_overwrites_a_newer_write(make_cache: MakeCache) -> None:
    old = make_cache(stores=("file",))
    await old.set("k", "old")
    cache = make_cache(use_redis=True)
    read = asyncio.create_task(cache.get("k"))
    await asyncio.sleep(0)  # the read is now waiting on a slower store
    await cache.set("k", "new")
    assert await read in {"old", "new"}
    assert await cache.get("k") == "new"
    fresh = make_cache(use_redis=True)
    assert await fresh.get("k") == "new"


async def test_second_instance_reads_through_redis(make_cache: MakeCache, tmp_path: Path) -> None:
    first = make_cache(use_redis=True, cache_dir=tmp_path / "one")
    second = make_cache(use_redis=True, cache_dir=tmp_path / "two")
    await first.set_catalog("abc", {"tools": ["search", "calc"]})
    assert await second.get_catalog("abc") == {"tools": ["search", "calc"]}
    assert second.stats().overall.hits["redis"] == 1


async def test_second_instance_reads_through_the_same_cache_dir(make_cache: MakeCache) -> None:
    first = make_cache()
    second = make_cache()
    await first.set("k", [1, 2, 3], namespace="search")
    assert await second.get("k", namespace="search") == [1, 2, 3]
    assert second.stats().overall.hits["file"] == 1


async def test_invalidate_hides_one_namespace_in_every_store(make_cache: MakeCache) -> None:
    cache = make_cache(use_redis=True)
    other_process = make_cache(use_redis=True)
    await cache.set("a", 1, namespace="search")
    await cache.set("a", 2, namespace="catalog")
    assert await other_process.get("a", namespace="search") == 1  # warm its caches
    await cache.invalidate("search")
    assert await cache.get("a", namespace="search") is None
    assert await cache.get("a", namespace="catalog") == 2
    other_redis_file = make_cache(use_redis=True, stores=("redis", "file"))
    assert await other_redis_file.get("a", namespace="search") is None
    await cache.set("a", 3, namespace="search")
    assert await other_redis_file.get("a", namespace="search") == 3


async def test_clear_removes_only_this_prefix(
    make_cache: MakeCache, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    await raw_redis.set("foreign:key", b"keep me")
    await raw_redis.set(f"{key_prefix}x:lookalike", b"keep me too")
    neighbour = make_cache(use_redis=True, key_prefix=key_prefix + "n")
    await neighbour.set("k", "neighbour")
    cache = make_cache(use_redis=True)
    await cache.set_many({"a": 1, "b": 2})
    await cache.set("c", 3, namespace="search")
    await cache.clear()
    assert await cache.get_many(["a", "b"]) == {}
    assert await cache.get("c", namespace="search") is None
    assert await raw_redis.get("foreign:key") == b"keep me"
    assert await raw_redis.get(f"{key_prefix}x:lookalike") == b"keep me too"
    assert await neighbour.get("k") == "neighbour"
    await raw_redis.delete("foreign:key", f"{key_prefix}x:lookalike")


@pytest.mark.parametrize("chain", ["embedded", "full"])
async def test_unencodable_value_is_written_nowhere(make_cache: MakeCache, chain: str) -> None:
    cache = make_cache(**CHAINS[chain])
    await cache.set("k", "old")
    with pytest.raises(SerializationError, match=r"'k'.*Lock"):
        await cache.set("k", {"lock": asyncio.Lock()})
    assert await cache.get("k") == "old"
    assert await make_cache(**CHAINS[chain]).get("k") == "old"
    with pytest.raises(SerializationError):
        await cache.set_many({"a": 1, "b": object()})
    assert await cache.get_many(["a", "b"]) == {}


async def test_oversized_value_is_refused_and_written_nowhere(make_cache: MakeCache) -> None:
    cache = make_cache(use_redis=True, max_value_bytes=10_000)
    with pytest.raises(ValueTooLargeError) as info:
        await cache.set("big", "x" * 20_000)
    assert info.value.limit == 10_000
    assert await cache.get("big") is None
    assert cache.stats().overall.sets == 0


@pytest.mark.parametrize("bad_ttl", [0, -1, float("nan"), True, "60"])
async def test_bad_ttl_raises_value_error(make_cache: MakeCache, bad_ttl: Any) -> None:
    cache = make_cache()
    with pytest.raises(ValueError, match="ttl"):
        await cache.set("k", 1, ttl=bad_ttl)
    with pytest.raises(InvalidTTLError):
        await cache.set("k", 1, ttl=bad_ttl)


async def test_bad_key_and_namespace_are_clear_errors(make_cache: MakeCache) -> None:
    cache = make_cache()
    with pytest.raises(InvalidKeyError):
        await cache.set(123, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        await cache.get("k", namespace="../etc")


def _entry_files(cache_dir: Path) -> list[Path]:
    return [p for p in cache_dir.rglob("*") if p.is_file() and ".trash" not in p.parts]


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
@pytest.mark.allow_blocking(reason="looks at the entry files behind the cache's back")
async def test_broken_file_entry_is_a_counted_miss_and_removed(
    make_cache: MakeCache, cache_dir: Path, damage: str
) -> None:
    writer = make_cache(stores=("file",))
    await writer.set("k", {"payload": "x" * 500})
    [path] = _entry_files(cache_dir)
    content = path.read_bytes()
    path.write_bytes(
        {"truncate": content[: len(content) // 2], "garbage": os.urandom(300), "empty": b""}[damage]
    )
    reader = make_cache(stores=("file",))
    assert await reader.get("k") is None
    assert not path.exists()
    await writer.set("k", "repaired")
    assert await reader.get("k") == "repaired"


@pytest.mark.allow_blocking(reason="looks at the entry files behind the cache's back")
async def test_payload_corrupted_inside_a_valid_file_is_counted(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    writer = make_cache(stores=("file",))
    await writer.set("k", {"payload": "x" * 500})
    [path] = _entry_files(cache_dir)
    content = path.read_bytes()
    path.write_bytes(content[:-40])  # store header intact, our envelope cut short
    reader = make_cache(stores=("file",))
    assert await reader.get("k") is None
    # the file store either rejected the file itself or handed it over and the cache counted it
    assert not path.exists() or reader.stats().overall.corrupt == 1


@pytest.mark.parametrize(
    "foreign", [b"hello", b"\x80\x04\x95\x00\x00", msgspec.msgpack.encode([1, 2, 3])]
)
async def test_foreign_bytes_in_redis_are_a_counted_miss_and_removed(
    make_cache: MakeCache, raw_redis: aioredis.Redis, key_prefix: str, foreign: bytes
) -> None:
    cache = make_cache(use_redis=True, stores=("redis",))
    await cache.set("k", "ours")
    [redis_key] = [k async for k in raw_redis.scan_iter(match=f"{key_prefix}:default:*")]
    await raw_redis.set(redis_key, foreign)
    assert await cache.get("k") is None
    assert cache.stats().overall.corrupt == 1
    for _ in range(200):
        if not await raw_redis.exists(redis_key):
            break
        await asyncio.sleep(0.01)
    else:
        pytest.fail("corrupt Redis entry was not removed")


async def test_use_redis_with_nothing_listening_still_caches(
    make_cache: MakeCache, free_port: Callable[[], int]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    cache = make_cache(use_redis=True, redis_url=url)
    async with cache:
        await cache.set("k", {"v": 1})
        assert await cache.get("k") == {"v": 1}
        fresh = make_cache(use_redis=True, redis_url=url)
        assert await fresh.get("k") == {"v": 1}  # from the file store
        health = await cache.health_check()
    assert health["redis_available"] is False
    assert health["redis_ping"].startswith("FAILED")
    assert health["circuit_breaker_state"] == "open"
    assert health["stores"]["file"]["ok"] is True
    assert health["fallback_enabled"] is True


async def test_health_check_redacts_the_password(make_cache: MakeCache, redis_url: str) -> None:
    url = redis_url.replace("redis://", "redis://user:hunter2@")
    health = await make_cache(use_redis=True, redis_url=url).health_check()
    assert "hunter2" not in repr(health)
    assert "***" in health["redis_url"]


async def test_health_check_on_a_healthy_full_chain(make_cache: MakeCache, cache_dir: Path) -> None:
    health = await make_cache(use_redis=True).health_check()
    assert health["redis_available"] is True
    assert health["redis_ping"] == "OK"
    assert health["circuit_breaker_state"] == "closed"
    assert health["cache_dir"] == str(cache_dir)
    assert list(health["stores"]) == ["memory", "redis", "file"]
    assert all(s["ok"] for s in health["stores"].values())


@pytest.mark.parametrize("chain", ["embedded", "full"])
async def test_mutating_a_result_does_not_change_the_cached_value(
    make_cache: MakeCache, chain: str
) -> None:
    cache = make_cache(**CHAINS[chain])
    original = {"items": [1, 2], "meta": {"k": "v"}}
    await cache.set("k", original)
    original["items"].append(99)
    got = await cache.get("k")
    got["items"].append(3)
    got["meta"]["k"] = "changed"
    assert await cache.get("k") == {"items": [1, 2], "meta": {"k": "v"}}


@pytest.mark.parametrize("chain", ["embedded", "full"])
async def test_concurrent_writers_of_one_key_leave_a_readable_entry(
    make_cache: MakeCache, chain: str
) -> None:
    writers = [make_cache(**CHAINS[chain]) for _ in range(3)]
    values = [{"writer": i, "blob": "y" * 2000} for i in range(60)]
    await asyncio.gather(*(writers[i % 3].set("k", v) for i, v in enumerate(values)))
    for reader in (make_cache(**CHAINS[chain]), make_cache(stores=("file",))):
        assert await reader.get("k") in values


class Tool(msgspec.Struct):
    name: str
    cost: float


@dataclasses.dataclass
class Hit:
    id: int
    score: float


async def test_typed_gets_decode_structs_dataclasses_and_embeddings(make_cache: MakeCache) -> None:
    cache = make_cache(use_redis=True)
    await cache.set("tool", Tool("search", 2))
    await cache.set("hit", Hit(1, 0.5))
    await cache.set_embedding("h1", "model-a", [0.1, 0.2, 1])
    assert await cache.get("tool", type=Tool) == Tool("search", 2.0)
    assert await cache.get("hit", type=Hit) == Hit(1, 0.5)
    assert await cache.get_embedding("h1", "model-a") == [0.1, 0.2, 1.0]
    reader = make_cache(use_redis=True, stores=("redis",))
    assert await reader.get("tool", type=Tool) == Tool("search", 2.0)


@pytest.mark.parametrize("chain", ["embedded", "full", "file-only"])
async def test_wrong_type_is_one_counted_miss_that_keeps_the_entry(
    make_cache: MakeCache, chain: str
) -> None:
    cache = make_cache(**CHAINS[chain])
    await cache.set("k", {"a": 1})
    assert await cache.get("k", type=list[int]) is None
    assert await cache.get_many(["k"], type=list[int]) == {}
    stats = cache.stats().overall
    assert (stats.type_mismatches, stats.misses) == (2, 2)  # once per lookup, not per store
    assert await cache.get("k") == {"a": 1}


async def test_get_many_and_set_many_hit_and_miss_per_key(make_cache: MakeCache) -> None:
    cache = make_cache(use_redis=True)
    await cache.set_many({"a": 1, "b": [2], "c": {"x": 3}}, namespace="search", ttl=60)
    got = await cache.get_many(["a", "b", "zz", "c", "a"], namespace="search")
    assert got == {"a": 1, "b": [2], "c": {"x": 3}}
    remote = make_cache(use_redis=True, stores=("redis",))
    assert await remote.get_many(["c", "nope"], namespace="search") == {"c": {"x": 3}}
    files = make_cache(stores=("file",))
    assert await files.get_many(["a"], namespace="search") == {"a": 1}


async def test_tool_shaped_helpers_use_toolweaver_key_shapes_and_ttls(
    make_cache: MakeCache, clock: FakeClock
) -> None:
    cache = make_cache()
    await cache.set_search_results("q1", "v3", 5, [{"tool": "calc"}])
    await cache.set_tool("calc", "2", {"schema": {}})
    await cache.set_result("calc", {"x": 1, "y": 2}, {"sum": 3})
    assert await cache.get_search_results("q1", "v3", 5) == [{"tool": "calc"}]
    assert await cache.get_search_results("q1", "v3", 10) is None
    assert await cache.get_tool("calc", "2") == {"schema": {}}
    assert await cache.get_result("calc", {"y": 2, "x": 1}) == {"sum": 3}
    assert await cache.get("search:q1:v3:5", namespace="search") == [{"tool": "calc"}]
    clock.advance(301)  # tool results live 5 minutes, search results an hour
    assert await cache.get_result("calc", {"x": 1, "y": 2}) is None
    assert await cache.get_search_results("q1", "v3", 5) == [{"tool": "calc"}]


async def test_stats_count_hits_misses_sets_and_loaders(make_cache: MakeCache) -> None:
    cache = make_cache()
    await cache.set("a", 1, namespace="search")
    await cache.get("a", namespace="search")
    await cache.get("b", namespace="search")

    async def load() -> int:
        return 7

    assert await cache.get_or_set("c", load) == 7
    assert await cache.get_or_set("c", load) == 7
    stats = cache.stats()
    search = stats.namespaces["search"]
    assert (search.hits["memory"], search.misses, search.sets) == (1, 1, 1)
    assert stats.namespaces["default"].loader_calls == 1
    assert stats.overall.hit_rate == pytest.approx(2 / 4)
    assert stats.to_dict()["overall"]["sets"] == 2


async def test_cached_decorator_runs_the_function_once_per_distinct_arguments(
    make_cache: MakeCache,
) -> None:
    cache = make_cache()
    calls: list[tuple[str, dict[str, Any]]] = []

    @cache.cached(namespace="results", ttl=60)
    async def run_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
        calls.append((name, args))
        return {"name": name, "n": len(calls)}

    first = await run_tool("search", {"q": "x", "k": 2})
    assert await run_tool("search", args={"k": 2, "q": "x"}) == first
    assert (await run_tool("search", {"q": "y"}))["n"] == 2
    assert len(calls) == 2


async def test_aclose_is_idempotent_and_context_manager_closes(make_cache: MakeCache) -> None:
    cache = make_cache(use_redis=True)
    async with cache as entered:
        assert entered is cache
        await cache.set("k", 1)
    await cache.aclose()
    await cache.aclose()


@pytest.mark.allow_blocking(reason="looks at the entry files behind the cache's back")
async def test_from_env_builds_the_embedded_default(
    monkeypatch: pytest.MonkeyPatch, cache_dir: Path
) -> None:
    monkeypatch.setenv("USE_REDIS", "false")
    monkeypatch.setenv("TOOLWEAVER_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("TOOLWEAVER_CACHE_PREFIX", "envtest")
    async with AsyncToolCache.from_env() as cache:
        assert cache.config.enabled_stores == ("memory", "file")
        await cache.set("k", "v")
        assert await cache.get("k") == "v"
    assert (cache_dir / "envtest").is_dir()


async def test_killed_redis_is_absorbed_and_values_survive_in_the_other_stores(
    own_redis_server: RedisServer, tmp_path: Path, key_prefix: str
) -> None:
    config = CacheConfig(
        use_redis=True,
        redis_url=own_redis_server.url,
        cache_dir=tmp_path,
        key_prefix=key_prefix,
        file_write_behind=False,  # `other` reads the file right after set returns
    )
    async with AsyncToolCache(config) as cache:
        await cache.set("before", 1)
        await asyncio.to_thread(own_redis_server.kill)
        await cache.set("during", 2)  # no exception
        assert await cache.get("before") == 1
        assert await cache.get("during") == 2
        async with AsyncToolCache(config) as other:
            assert await other.get("during") == 2  # through the file store
            assert other.stats().overall.hits["file"] == 1


async def test_fresh_remote_value_replaces_a_stale_memory_copy_on_get(
    make_cache: MakeCache, clock: FakeClock
) -> None:
    policy = {"swr": NamespacePolicy(ttl=10, stale_ttl=100)}
    cache = make_cache(use_redis=True, namespaces=policy)
    await cache.set("k", "old", namespace="swr")
    clock.advance(11)  # memory keeps "old" for get_or_set's grace period
    other = make_cache(use_redis=True, stores=("redis",), namespaces=policy)
    await other.set("k", "new", namespace="swr")
    assert await cache.get("k", namespace="swr") == "new"  # from Redis
    assert await cache.get("k", namespace="swr") == "new"
    hits = cache.stats().overall.hits
    assert (hits["redis"], hits["memory"]) == (1, 1)  # the second read was served by memory


async def test_a_hit_is_not_promoted_into_a_store_whose_breaker_is_open(
    make_cache: MakeCache, free_port: Callable[[], int]
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    cache = make_cache(use_redis=True, redis_url=url, stores=("redis", "file"))
    await cache.connect()  # nothing listens: the Redis breaker starts open
    await make_cache(stores=("file",)).set("k", "v")
    tasks_before = len(asyncio.all_tasks())
    assert await cache.get("k") == "v"
    assert len(asyncio.all_tasks()) == tasks_before  # no background write was started
