"""SyncToolCache: the whole API from synchronous code, one background event loop."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import anyio.to_thread
import pytest

from toolweaver_async import AsyncToolCache, CacheConfig, SyncInEventLoopError, SyncToolCache
from toolweaver_async.testing import FakeClock


@pytest.fixture
def config(cache_dir: Path, key_prefix: str, redis_url: str) -> CacheConfig:
    return CacheConfig(cache_dir=cache_dir, key_prefix=key_prefix, redis_url=redis_url)


@pytest.mark.parametrize("use_redis", [False, True], ids=["embedded", "full"])
def test_sync_cache_from_plain_code_offers_the_async_api_without_await(
    config: CacheConfig, use_redis: bool
) -> None:
    from dataclasses import replace

    calls: list[str] = []

    def load() -> dict[str, int]:
        calls.append("load")
        return {"answer": 42}

    with SyncToolCache(replace(config, use_redis=use_redis)) as cache:
        cache.set("a", {"x": 1}, ttl=60)
        assert cache.get("a") == {"x": 1}
        assert cache.get("missing", default="d") == "d"
        assert cache.get_or_set("q", load) == {"answer": 42}
        assert cache.get_or_set("q", load) == {"answer": 42}
        assert calls == ["load"]
        cache.set_many({"b": 2, "c": 3})
        assert cache.get_many(["a", "b", "c", "zz"]) == {"a": {"x": 1}, "b": 2, "c": 3}
        assert sorted(cache.keys()) == ["a", "b", "c", "q"]
        assert cache.delete("a") is True
        cache.set_embedding("h", "m", [0.5, 0.25])
        assert cache.get_embedding("h", "m") == [0.5, 0.25]
        cache.invalidate("embeddings")
        assert cache.get_embedding("h", "m") is None
        assert cache.health_check()["stores"]
        assert cache.stats().overall.hits["memory"] >= 1
        cache.clear()
        assert list(cache.keys()) == []


def test_sync_cached_decorator_runs_a_sync_function_once_per_arguments(config: CacheConfig) -> None:
    calls: list[tuple[int, int]] = []

    with SyncToolCache(config) as cache:

        @cache.cached(namespace="results", ttl=60)
        def add(a: int, b: int) -> int:
            calls.append((a, b))
            return a + b

        assert add(1, 2) == 3
        assert add(1, 2) == 3
        assert add(2, 2) == 4
        assert calls == [(1, 2), (2, 2)]
        assert add.__name__ == "add"


def test_sync_cache_from_from_env_takes_overrides(
    monkeypatch: pytest.MonkeyPatch, cache_dir: Path, key_prefix: str
) -> None:
    monkeypatch.setenv("USE_REDIS", "false")
    monkeypatch.setenv("TOOLWEAVER_CACHE_DIR", str(cache_dir))
    with SyncToolCache.from_env(key_prefix=key_prefix) as cache:
        cache.set("k", 1)
        assert cache.config.key_prefix == key_prefix
    assert any(cache_dir.rglob("*"))


async def test_sync_cache_from_a_worker_thread_while_the_main_thread_runs_a_loop(
    config: CacheConfig,
) -> None:
    cache = SyncToolCache(config)
    try:
        await anyio.to_thread.run_sync(cache.set, "k", [1, 2])
        assert await anyio.to_thread.run_sync(cache.get, "k") == [1, 2]
    finally:
        await anyio.to_thread.run_sync(cache.close)


async def test_sync_calls_from_a_worker_thread_run_on_the_loop_the_cache_lives_on(
    config: CacheConfig,
) -> None:
    async with AsyncToolCache(config) as shared:
        facade = SyncToolCache(cache=shared)  # made on this loop: it is the cache's home
        ran_on: list[int] = []

        def load() -> str:
            return "v"

        async def probe() -> int:
            ran_on.append(threading.get_ident())
            return 1

        main = threading.get_ident()
        await anyio.to_thread.run_sync(facade.set, "k", "from-thread")
        assert await shared.get("k") == "from-thread"
        assert await anyio.to_thread.run_sync(facade.get_or_set, "l", load) == "v"
        await anyio.to_thread.run_sync(facade._bridge.run, "probe", probe)
        assert ran_on == [main]


@pytest.mark.timeout(10)
async def test_sync_call_inside_a_running_loop_raises_instead_of_deadlocking(
    config: CacheConfig,
) -> None:
    cache = SyncToolCache(config)
    try:
        with pytest.raises(SyncInEventLoopError, match="await the async API"):
            cache.get("k")
        with pytest.raises(RuntimeError):  # also a RuntimeError, for generic handlers
            cache.set("k", 1)
    finally:
        await anyio.to_thread.run_sync(cache.close)


def test_sync_cache_close_is_idempotent_and_stops_its_thread(config: CacheConfig) -> None:
    before = {t.ident for t in threading.enumerate()}
    cache = SyncToolCache(config)
    cache.set("k", 1)
    assert len({t.ident for t in threading.enumerate()} - before) >= 1
    cache.close()
    cache.close()
    assert not [t for t in threading.enumerate() if t.name == "toolweaver-sync"]


def test_interpreter_exits_when_a_sync_cache_is_never_closed(
    cache_dir: Path, key_prefix: str, redis_url: str
) -> None:
    script = (
        "from toolweaver_async import CacheConfig, SyncToolCache\n"
        f"c = SyncToolCache(CacheConfig(cache_dir={str(cache_dir)!r}, key_prefix={key_prefix!r},"
        f" redis_url={redis_url!r}, use_redis=True))\n"
        "c.set('k', 1)\n"
        "print(c.get('k'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "1"


def test_sync_cache_honours_an_injected_clock(config: CacheConfig) -> None:
    clock = FakeClock()
    with SyncToolCache(config, clock=clock) as cache:
        cache.set("k", 1, ttl=5)
        clock.advance(6)
        assert cache.get("k") is None
