"""Shared fixtures. Real servers and real folders: no fakeredis, no mocks."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from toolweaver_async.testing import RedisServer, find_free_port

# -- Redis ---------------------------------------------------------------------------------------


def _start_server() -> RedisServer:
    try:
        return RedisServer.start_on_free_port()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """One ``redis-server`` for the whole session; never flushed, tests isolate by key prefix."""
    server = _start_server()
    yield server
    server.stop()


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
