"""cache.keys(): every fresh key of a namespace once, across memory, Redis and files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import anyio
import anyio.to_thread
import pytest

from toolweaver_async import AsyncToolCache
from toolweaver_async.__main__ import main
from toolweaver_async.testing import FakeClock, RedisServer

MakeCache = Callable[..., AsyncToolCache]

CHAINS = {
    "embedded": {"use_redis": False},
    "full": {"use_redis": True},
    "redis-only": {"use_redis": True, "stores": ("redis",)},
    "file-only": {"stores": ("file",)},
    "memory-only": {"stores": ("memory",)},
}
PERSISTENT = ["embedded", "full", "redis-only", "file-only"]
GLOBBY = ["a*b", "a?b", "a[1]", "a]", "a\\b", "a\\*", "ab", "axb", "a[b", "*", "?"]


async def _listed(cache: AsyncToolCache, **kwargs: str) -> list[str]:
    return [key async for key in cache.keys(**kwargs)]


@pytest.mark.parametrize("chain", CHAINS)
async def test_keys_lists_each_fresh_key_once_without_expired_deleted_or_invalidated(
    make_cache: MakeCache, clock: FakeClock, chain: str
) -> None:
    cache = make_cache(**CHAINS[chain])
    await cache.set("short", 1, ttl=5)
    await cache.set_many({f"k{i}": i for i in range(5)}, ttl=60)
    await cache.set("gone", 1)
    await cache.delete("gone")
    await cache.set("other-ns", 1, namespace="search")
    await cache.set("dropped", 1, namespace="tools")
    await cache.invalidate("tools")
    clock.advance(10)
    listed = await _listed(cache)
    assert sorted(listed) == [f"k{i}" for i in range(5)]
    assert await _listed(cache, namespace="tools") == []
    assert await _listed(cache, namespace="search") == ["other-ns"]


@pytest.mark.parametrize("chain", CHAINS)
async def test_keys_and_prefixes_with_glob_characters_are_matched_literally(
    make_cache: MakeCache, chain: str
) -> None:
    cache = make_cache(**CHAINS[chain])
    await cache.set_many(dict.fromkeys(GLOBBY, 1))
    assert sorted(await _listed(cache)) == sorted(GLOBBY)
    for prefix in {"a*", "a?", "a[", "a]", "a\\", "a\\*", "*", "?", "a", "ax"}:
        expected = sorted(k for k in GLOBBY if k.startswith(prefix))
        assert sorted(await _listed(cache, prefix=prefix)) == expected, prefix


@pytest.mark.parametrize("chain", PERSISTENT)
async def test_keys_held_by_different_stores_are_each_listed_once(
    make_cache: MakeCache, chain: str
) -> None:
    writer = make_cache(**CHAINS[chain])
    await writer.set_many({f"shared{i}": i for i in range(3)})
    if chain in ("full", "embedded"):
        await make_cache(stores=("file",)).set("file-only", 1)
    if chain == "full":
        await make_cache(use_redis=True, stores=("redis",)).set("redis-only", 1)
    # a second cache: its memory holds one key (by a read), the slower stores hold them all
    reader = make_cache(**CHAINS[chain])
    assert await reader.get("shared0") == 0
    listed = await _listed(reader)
    assert len(listed) == len(set(listed))
    expected = {f"shared{i}" for i in range(3)}
    if chain in ("full", "embedded"):
        expected.add("file-only")
    if chain == "full":
        expected.add("redis-only")
    assert set(listed) == expected


@pytest.mark.parametrize("chain", ["redis-only", "file-only", "full"])
async def test_keys_streams_more_keys_than_one_page(make_cache: MakeCache, chain: str) -> None:
    cache = make_cache(**CHAINS[chain], memory_max_entries=100)
    wanted = {f"item:{i:05d}": i for i in range(2500)}
    await cache.set_many(wanted)
    listed = await _listed(cache, prefix="item:")
    assert len(listed) == len(wanted)
    assert set(listed) == set(wanted)


async def test_keys_of_a_stale_entry_in_memory_is_not_listed_from_a_slower_store(
    make_cache: MakeCache, clock: FakeClock
) -> None:
    cache = make_cache(use_redis=True)
    await cache.set("k", 1, ttl=5)
    clock.advance(6)
    assert await _listed(cache) == []


def test_cli_keys_prints_the_namespace_keys_with_the_prefix(
    monkeypatch: pytest.MonkeyPatch,
    cache_dir: Path,
    key_prefix: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import asyncio

    monkeypatch.setenv("USE_REDIS", "false")
    monkeypatch.setenv("TOOLWEAVER_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("TOOLWEAVER_CACHE_PREFIX", key_prefix)

    async def write() -> None:
        async with AsyncToolCache.from_env() as cache:
            await cache.set_many({"user:1": 1, "user:2": 2, "team:1": 3}, namespace="search")

    asyncio.run(write())
    assert main(["keys", "--namespace", "search", "--prefix", "user:"]) == 0
    assert sorted(capsys.readouterr().out.split()) == ["user:1", "user:2"]


@pytest.mark.parametrize("fault", ["killed", "paused"])
async def test_keys_lists_from_the_other_stores_when_redis_fails_and_counts_it(
    make_cache: MakeCache, own_redis_server: RedisServer, fault: str
) -> None:
    writer = make_cache(use_redis=True, redis_url=own_redis_server.url)
    await writer.set_many({f"k{i}": i for i in range(5)})
    reader = make_cache(use_redis=True, redis_url=own_redis_server.url)  # empty memory
    # the fault itself waits for the server process: off the loop, which blockbuster watches
    await anyio.to_thread.run_sync(
        own_redis_server.kill if fault == "killed" else own_redis_server.pause
    )
    with anyio.fail_after(5):
        listed = await _listed(reader)
    assert sorted(listed) == [f"k{i}" for i in range(5)]  # from the file store
    assert reader.stats().overall.errors["redis"] >= 1
