"""Shared fixtures. Real servers and real folders: no fakeredis, no mocks."""

from __future__ import annotations

import importlib.util
import os
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from blockbuster import blockbuster_ctx

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
    _register_allow_blocking(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    _SCRATCH_HOME.cleanup()


# -- the event loop ------------------------------------------------------------------------------

# With @pytest.mark.allow_blocking only the library is checked: blocking calls count when a
# frame of toolweaver_async (less its test kit, which tests drive) is on the stack.
_LIBRARY = ["toolweaver_async"]
_TEST_KIT = [
    name
    for name in ("toolweaver_async.testing", "toolweaver_async.pytest_plugin")
    if importlib.util.find_spec(name) is not None
]


def _register_allow_blocking(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "allow_blocking(reason): the test's own code may block the event loop (it looks at "
        "files behind a store's back, runs a subprocess ...); the library is still checked",
    )


@pytest.fixture(autouse=True)
def blockbuster_on_every_test(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test fails on a blocking call (file I/O, sleep, a socket, a held lock, a
    subprocess) made while an event loop runs in its thread. A test whose own code must block
    says why with ``@pytest.mark.allow_blocking(reason=...)``; the library never may."""
    marker = request.node.get_closest_marker("allow_blocking")
    if marker is None:
        with blockbuster_ctx():
            yield
        return
    if not marker.kwargs.get("reason"):
        pytest.fail("@pytest.mark.allow_blocking needs reason=...", pytrace=False)
    with blockbuster_ctx(_LIBRARY, excluded_modules=_TEST_KIT):
        yield


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
            # Write-through here on purpose: these tests look at (or break) the entry files,
            # read them through a second instance, or count a refused file write the moment
            # set returns, which write-behind does a batch later (run with it on, 16 of them
            # fail for that reason alone). Write-behind, the default, has its own tests
            # (test_file_write_behind.py) and runs under the failover and scaling tests.
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
    client = aioredis.Redis.from_url(redis_url, driver_info=None)  # no SETINFO: no metadata stat
    yield client
    await client.aclose()


@pytest.fixture
async def redis_store(redis_url: str, key_prefix: str) -> AsyncIterator[RedisStore]:
    """A RedisStore of its own on the shared server, under the test's own prefix."""
    store = RedisStore(url=redis_url, key_prefix=key_prefix)
    yield store
    await store.aclose()
