"""Every process's memory layer hears of changes made by others (real processes, real Redis).

A peer process (tests/_coherence_peer.py) holds a value in its memory layer; this process, or a
plain Redis client, changes it; the peer must answer the new value. Peers on Redis run with a
long coherence window (30 s) so that only the invalidation channel can explain a prompt answer;
the window itself is tested with a short one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async.testing import RedisServer

from .polling import eventually

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
LONG_WINDOW = 30.0  # no test waits this long: a prompt answer must come from the channel


class Peer:
    """The peer process: one JSON request per line in, one answer per line out."""

    def __init__(self) -> None:
        # the peer's stderr, kept for as long as the peer runs and read when it dies
        self._log = tempfile.TemporaryFile()  # noqa: SIM115
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests._coherence_peer"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )

    def _exchange(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self._log.seek(0)
            raise AssertionError(f"peer died: {self._log.read().decode(errors='replace')}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise AssertionError(f"peer failed {request['op']}: {answer['error']}")
        return answer

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        async with asyncio.timeout(20):
            return await asyncio.to_thread(self._exchange, {"op": op, **fields})

    async def open(self, **config: Any) -> None:
        config["cache_dir"] = str(config["cache_dir"])
        await self.call("open", config=config)

    async def get(self, key: str, namespace: str = "default") -> Any:
        return (await self.call("get", key=key, namespace=namespace))["value"]

    async def hits(self) -> dict[str, int]:
        hits: dict[str, int] = (await self.call("health"))["hits"]
        return hits

    async def mode(self) -> str:
        mode: str = (await self.call("health"))["value"]["mode"]
        return mode

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(AssertionError, OSError, ValueError):
                self._exchange({"op": "close"})
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


@pytest.fixture(scope="module")
def peer_process() -> Iterator[Peer]:
    """One peer process for the module; each test opens its own cache in it."""
    peer = Peer()
    yield peer
    peer.stop()


@pytest.fixture
def peer(peer_process: Peer) -> Peer:
    return peer_process


@pytest.fixture
async def writer_for() -> AsyncIterator[Callable[..., Awaitable[AsyncToolCache]]]:
    """Connected caches in this process (the other process of each test)."""
    made: list[AsyncToolCache] = []

    async def make(**settings: Any) -> AsyncToolCache:
        # Written through: the other process reads the files right after set returns (with
        # write-behind it sees them once their batch lands, a few ms later).
        settings.setdefault("file_write_behind", False)
        cache = AsyncToolCache(CacheConfig(**settings))
        made.append(cache)
        await cache.connect()
        return cache

    yield make
    for cache in made:
        await cache.aclose()


async def _in_peer_memory(peer: Peer, key: str, value: Any, namespace: str = "default") -> None:
    """Read ``key`` in the peer until it answers ``value`` from its memory layer. The echo of
    the write that stored ``value`` may reach the peer after its first read (more so on a loaded
    machine) and drop that copy, so the read through is retried until a hit follows it."""

    async def held() -> bool:
        assert await peer.get(key, namespace) == value  # read through, then kept in memory
        before = (await peer.hits())["memory"]
        assert await peer.get(key, namespace) == value
        return bool((await peer.hits())["memory"] == before + 1)

    await eventually(held, within=5, what=f"the peer holds {key!r} in memory")


async def _peer_holding_v1(
    peer: Peer, writer_for: Callable[..., Awaitable[AsyncToolCache]], settings: dict[str, Any]
) -> AsyncToolCache:
    """A writer in this process that set ``k`` to "v1", and the peer process holding that value
    in its memory layer (so what happens next must reach the peer to be seen)."""
    writer = await writer_for(**settings)
    await writer.set("k", "v1")
    await peer.open(**settings)
    await _in_peer_memory(peer, "k", "v1")
    return writer


async def _peer_answers(peer: Peer, expected: Any, *, within: float, what: str) -> None:
    """Poll the peer's ``get("k")`` until it answers ``expected``."""

    async def answers() -> bool:
        return bool(await peer.get("k") == expected)

    await eventually(answers, within=within, what=what)


@asynccontextmanager
async def _raw_client(url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(url, driver_info=None)  # no SETINFO: no metadata stat
    try:
        yield client
    finally:
        await client.aclose()


def _redis_settings(url: str, prefix: str, cache_dir: Path, **more: Any) -> dict[str, Any]:
    return {
        "use_redis": True,
        "redis_url": url,
        "key_prefix": prefix,
        "cache_dir": cache_dir,
        "stores": ("memory", "redis"),
        **more,
    }


OPERATIONS: dict[str, tuple[Callable[[AsyncToolCache], Awaitable[Any]], Any]] = {
    "set": (lambda c: c.set("k", "v2"), "v2"),
    "set_many": (lambda c: c.set_many({"k": "v2", "other": 1}), "v2"),
    "delete": (lambda c: c.delete("k"), None),
    "invalidate": (lambda c: c.invalidate("default"), None),
    "clear": (lambda c: c.clear(), None),
}


@pytest.mark.parametrize("operation", list(OPERATIONS))
async def test_peer_memory_layer_sees_each_write_through_redis(
    operation: str,
    peer: Peer,
    writer_for: Callable[..., Awaitable[AsyncToolCache]],
    redis_url: str,
    key_prefix: str,
    cache_dir: Path,
) -> None:
    settings = _redis_settings(redis_url, key_prefix, cache_dir, coherence_window=LONG_WINDOW)
    writer = await writer_for(**settings)
    await peer.open(**settings)
    assert await peer.mode() == "live"
    await writer.set("k", "v1")
    await _in_peer_memory(peer, "k", "v1")
    change, expected = OPERATIONS[operation]
    await change(writer)
    await _peer_answers(peer, expected, within=5, what=f"peer sees {operation}")
    coherence = (await peer.call("health"))["coherence"]
    assert coherence["invalidations"] >= 1


async def test_peer_memory_keeps_serving_hits_while_nothing_changes(
    peer: Peer,
    writer_for: Callable[..., Awaitable[AsyncToolCache]],
    redis_url: str,
    key_prefix: str,
    cache_dir: Path,
) -> None:
    settings = _redis_settings(redis_url, key_prefix, cache_dir)
    await _peer_holding_v1(peer, writer_for, settings)
    before = await peer.hits()
    for _ in range(50):
        assert await peer.get("k") == "v1"
    after = await peer.hits()
    assert after["memory"] == before["memory"] + 50
    assert after["redis"] == before["redis"]
    assert await peer.mode() == "live"


async def test_peer_memory_sees_a_raw_del_by_another_client(
    peer: Peer,
    writer_for: Callable[..., Awaitable[AsyncToolCache]],
    raw_redis: aioredis.Redis,
    redis_url: str,
    key_prefix: str,
    cache_dir: Path,
) -> None:
    settings = _redis_settings(redis_url, key_prefix, cache_dir, coherence_window=LONG_WINDOW)
    await _peer_holding_v1(peer, writer_for, settings)
    physical = await raw_redis.keys(f"{key_prefix}:default:*:k")
    assert len(physical) == 1
    await raw_redis.delete(*physical)
    await _peer_answers(peer, None, within=5, what="peer sees the raw DEL")


async def test_peer_memory_sees_flushdb(
    peer: Peer,
    writer_for: Callable[..., Awaitable[AsyncToolCache]],
    own_redis_server: RedisServer,
    key_prefix: str,
    cache_dir: Path,
) -> None:
    url = own_redis_server.url
    settings = _redis_settings(url, key_prefix, cache_dir, coherence_window=LONG_WINDOW)
    await _peer_holding_v1(peer, writer_for, settings)
    async with _raw_client(url) as client:
        await client.flushdb()
    await _peer_answers(peer, None, within=5, what="peer sees FLUSHDB")


async def test_peer_flushes_memory_when_its_killed_channel_comes_back(
    peer: Peer,
    writer_for: Callable[..., Awaitable[AsyncToolCache]],
    own_redis_server: RedisServer,
    key_prefix: str,
    cache_dir: Path,
) -> None:
    url = own_redis_server.url
    settings = _redis_settings(url, key_prefix, cache_dir, coherence_window=LONG_WINDOW)
    writer = await _peer_holding_v1(peer, writer_for, settings)
    async with _raw_client(url) as client:
        # The peer's channel is the only pubsub client of this server; the write lands while
        # it is gone (or at best while it resubscribes), so no invalidation reaches the peer.
        await client.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
        await writer.set("k", "v2")

    async def back() -> bool:
        health = (await peer.call("health"))["value"]
        return bool(health["mode"] == "live" and health["channels"][0]["sessions"] >= 2)

    await eventually(back, within=5, what="peer channel resubscribed")
    assert await peer.get("k") == "v2"
    assert (await peer.call("health"))["value"]["channel_losses"] >= 1


async def test_peer_never_serves_an_overwritten_value_across_a_redis_restart(
    peer: Peer,
    writer_for: Callable[..., Awaitable[AsyncToolCache]],
    own_redis_server: RedisServer,
    key_prefix: str,
    cache_dir: Path,
) -> None:
    window = 0.5
    url = own_redis_server.url
    settings = _redis_settings(url, key_prefix, cache_dir, coherence_window=window)
    await _peer_holding_v1(peer, writer_for, settings)
    await asyncio.to_thread(own_redis_server.kill)

    async def not_from_memory() -> bool:
        return await peer.get("k") is None  # Redis is down and memory may not vouch for v1

    # The channel is lost at once (the socket closes); the entry lives at most the window.
    await eventually(not_from_memory, within=window + 1.0, what="v1 dropped within the window")
    assert await peer.mode() in ("reconnecting", "connecting")
    await asyncio.to_thread(own_redis_server.start)  # same port, empty
    fresh = await writer_for(**{**settings, "stores": ("redis",)})
    await fresh.set("k", "v2")
    await _peer_answers(peer, "v2", within=5, what="peer reads the write made after the restart")

    async def live() -> bool:
        return await peer.mode() == "live"

    await eventually(live, within=5, what="peer channel back")
    assert await peer.get("k") == "v2"
    health = (await peer.call("health"))["value"]
    assert health["channels"][0]["server_restarts"] >= 1


FILE_OPERATIONS: dict[str, tuple[Callable[[AsyncToolCache], Awaitable[Any]], Any]] = {
    "set": (lambda c: c.set("k", "v2"), "v2"),
    "delete": (lambda c: c.delete("k"), None),
    "invalidate": (lambda c: c.invalidate("default"), None),
    "clear": (lambda c: c.clear(), None),
}


@pytest.mark.parametrize("operation", list(FILE_OPERATIONS))
async def test_processes_sharing_a_cache_dir_see_each_others_writes_within_the_window(
    operation: str,
    peer: Peer,
    writer_for: Callable[..., Awaitable[AsyncToolCache]],
    key_prefix: str,
    cache_dir: Path,
) -> None:
    window = 0.3
    settings = {"key_prefix": key_prefix, "cache_dir": cache_dir, "coherence_window": window}
    writer = await _peer_holding_v1(peer, writer_for, settings)
    assert await peer.mode() == "window"
    change, expected = FILE_OPERATIONS[operation]
    await change(writer)
    changed_at = asyncio.get_running_loop().time()
    await _peer_answers(peer, expected, within=window + 2.0, what=f"peer sees {operation}")
    # the peer's answer may lag by the window and a read, never by more than that (+ slack for
    # a loaded machine)
    assert asyncio.get_running_loop().time() - changed_at < window + 1.0
