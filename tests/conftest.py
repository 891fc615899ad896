"""Shared fixtures. Real servers and real folders: no fakeredis, no mocks."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async.stores.redis import RedisStore
from toolweaver_async.testing import FakeClock, RedisServer, find_free_port

# -- the environment -----------------------------------------------------------------------------
_SCRATCH_HOME = tempfile.TemporaryDirectory(prefix="tw-tests-home-")


def pytest_configure(config: pytest.Config) -> None:
    """Nothing a test builds with the default cache folder may land under the user's $HOME:
    the default (``$XDG_CACHE_HOME``) and ``TOOLWEAVER_CACHE_DIR`` point at a scratch folder."""
    os.environ["XDG_CACHE_HOME"] = _SCRATCH_HOME.name
    os.environ["TOOLWEAVER_CACHE_DIR"] = os.path.join(_SCRATCH_HOME.name, "toolweaver-async")


def pytest_unconfigure(config: pytest.Config) -> None:
    _SCRATCH_HOME.cleanup()


# -- Redis ---------------------------------------------------------------------------------------


def _start_server() -> RedisServer:
    try:
        return RedisServer.start_on_free_port()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_server(toolweaver_redis: RedisServer) -> RedisServer:
    """One ``redis-server`` for the whole session (the pytest plugin's, the one users get);
    never flushed, tests isolate by key prefix."""
    return toolweaver_redis


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """URL of the shared server."""
    return redis_server.url


@pytest.fixture
def key_prefix() -> str:
    """A key prefix no other test uses, so tests share one server without seeing each other."""
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture
def own_redis_server() -> Iterator[RedisServer]:
    """A private server for fault tests that kill, pause or restart it; always cleaned up."""
    server = _start_server()
    try:
        yield server
    finally:
        server.resume()
        server.stop()


@pytest.fixture
def free_port() -> Callable[[], int]:
    """Factory of loopback ports nothing listens on."""
    return find_free_port


# -- files ---------------------------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path: Path) -> Path:
    """A cache folder that does not exist yet, inside the test's own temporary folder."""
    return tmp_path / "cache"


# -- caches ----------------------------------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    """The wall clock entries expire by; it moves only when the test advances it."""
    return FakeClock()


@pytest.fixture
async def make_cache(
    cache_dir: Path, key_prefix: str, redis_url: str, clock: FakeClock
) -> AsyncIterator[Callable[..., AsyncToolCache]]:
    """Builds caches sharing one cache_dir, prefix, Redis and clock (``CacheConfig`` fields as
    keywords, plus ``clock=`` and ``random=``); closes them all afterwards."""
    made: list[AsyncToolCache] = []

    def make(**changes: Any) -> AsyncToolCache:
        settings: dict[str, Any] = {
            "cache_dir": cache_dir,
            "key_prefix": key_prefix,
            "redis_url": redis_url,
            "use_redis": False,  # a given redis_url alone would turn Redis on
            # Tests here write through one cache and look at the files, or read them through
            # another cache, at once; write-behind has its own (test_file_write_behind.py).
            "file_write_behind": False,
        }
        settings.update(changes)
        use_clock = settings.pop("clock", clock)
        random = settings.pop("random", None)
        cache = AsyncToolCache(CacheConfig(**settings), clock=use_clock, random=random)
        made.append(cache)
        return cache

    yield make
    for cache in made:
        await cache.aclose()


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain redis.asyncio client on the shared server, to look behind the cache's back."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
async def redis_store(redis_url: str, key_prefix: str) -> AsyncIterator[RedisStore]:
    """A RedisStore of its own on the shared server, under the test's own prefix."""
    store = RedisStore(url=redis_url, key_prefix=key_prefix)
    yield store
    await store.aclose()
