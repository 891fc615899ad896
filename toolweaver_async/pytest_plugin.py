"""pytest fixtures for testing your own agent against toolweaver-async (``pytest11`` plugin).

Installed with the package and loaded by pytest on its own; nothing to import in ``conftest.py``:

- ``toolweaver_redis`` (session): a real ``redis-server`` on a free 127.0.0.1 port, with
  ``.url``, ``kill()``, ``pause()``, ``resume()`` and ``restart()``. A test that leaves it killed
  or paused gets it back running before the next test starts.
- ``toolweaver_cache``: an open ``AsyncToolCache`` on memory + file in the test's temporary
  folder, under a key prefix of its own, closed after the test. The environment (``USE_REDIS``,
  ``REDIS_URL``, ``TOOLWEAVER_CACHE_*``) is ignored: a test sees the same cache everywhere.
- ``toolweaver_redis_cache``: the same on memory + Redis (``toolweaver_redis``) + file; its
  prefix is cleared from Redis after the test.
- ``toolweaver_clock``: the wall clock both caches read; ``advance(seconds)`` expires entries
  without sleeping.

The async fixtures are ``pytest_asyncio`` fixtures, so they work in its ``auto`` and ``strict``
modes alike (strict: mark your tests ``@pytest.mark.asyncio``).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from .cache import AsyncToolCache
from .config import CacheConfig
from .testing import FakeClock, RedisServer

_asyncio_fixture: Any
try:
    from pytest_asyncio import fixture as _asyncio_fixture
except ImportError:  # pragma: no cover - the async fixtures then say what is missing
    _asyncio_fixture = None

__all__ = [
    "toolweaver_cache",
    "toolweaver_clock",
    "toolweaver_redis",
    "toolweaver_redis_cache",
]

_SERVER = pytest.StashKey[RedisServer]()


def _async_fixture(fn: Any) -> Any:
    if _asyncio_fixture is not None:
        return _asyncio_fixture(fn)

    @pytest.fixture(name=fn.__name__)
    def missing() -> None:
        pytest.fail(f"{fn.__name__} needs pytest-asyncio: pip install pytest-asyncio")

    return missing


def _prefix() -> str:
    return "twt" + uuid.uuid4().hex[:12]


@pytest.fixture(scope="session")
def toolweaver_redis(request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A real ``redis-server`` for the whole session (no persistence, loopback only)."""
    try:
        server = RedisServer.start_on_free_port()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    request.session.stash[_SERVER] = server
    try:
        yield server
    finally:
        del request.session.stash[_SERVER]
        server.stop()


@pytest.hookimpl(trylast=True)
def pytest_runtest_teardown(item: pytest.Item) -> None:
    """A test that killed or paused the shared server hands it back running."""
    server = item.session.stash.get(_SERVER, None)
    if server is not None:
        server.ensure_running()


@pytest.fixture
def toolweaver_clock() -> FakeClock:
    """A wall clock that moves only on ``advance(seconds)``; the caches below read it."""
    return FakeClock()


@_async_fixture
async def toolweaver_cache(
    tmp_path: Path, toolweaver_clock: FakeClock
) -> AsyncIterator[AsyncToolCache]:
    """An open cache on memory + file in a temporary folder, whatever the environment says."""
    config = CacheConfig(
        use_redis=False,
        stores=("memory", "file"),
        cache_dir=tmp_path / "toolweaver-cache",
        key_prefix=_prefix(),
        file_write_behind=False,  # a test sees the entry files as soon as set returns
    )
    async with AsyncToolCache(config, clock=toolweaver_clock) as cache:
        yield cache


@_async_fixture
async def toolweaver_redis_cache(
    tmp_path: Path, toolweaver_clock: FakeClock, toolweaver_redis: RedisServer
) -> AsyncIterator[AsyncToolCache]:
    """An open cache on memory + Redis (``toolweaver_redis``) + file; cleared afterwards."""
    toolweaver_redis.ensure_running()
    config = CacheConfig(
        use_redis=True,
        redis_url=toolweaver_redis.url,
        stores=("memory", "redis", "file"),
        cache_dir=tmp_path / "toolweaver-cache",
        key_prefix=_prefix(),
        file_write_behind=False,  # a test sees the entry files as soon as set returns
    )
    async with AsyncToolCache(config, clock=toolweaver_clock) as cache:
        yield cache
        toolweaver_redis.ensure_running()
        await cache.clear()
