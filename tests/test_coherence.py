"""Memory coherence in one process: the window cap, mode changes, the Redis channel's messages
and heartbeat. Separate processes are in test_coherence_processes.py."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async._reads import ReadTracker
from toolweaver_async.coherence import ChangeSink, MemoryCoherence
from toolweaver_async.errors import ConfigError
from toolweaver_async.stores.memory import MemoryStore
from toolweaver_async.stores.redis.tracking import RedisInvalidationChannel, heartbeat_for
from toolweaver_async.testing import FakeClock, RedisServer

from .polling import eventually


class StubChannel:
    """An invalidation channel a test drives by hand (it only needs a name and a lifetime)."""

    name = "stub"

    def __init__(self) -> None:
        self.sink: ChangeSink | None = None

    def start(self, sink: ChangeSink) -> None:
        self.sink = sink

    async def aclose(self) -> None:
        self.sink = None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}


class RecordingSink:
    """Collects what a channel reports."""

    def __init__(self) -> None:
        self.keys: list[tuple[str, str]] = []
        self.namespaces: list[str] = []
        self.flushes = 0

    def keys_changed(self, changes: Iterable[tuple[str, str]]) -> None:
        self.keys.extend(changes)

    def namespace_changed(self, namespace: str) -> None:
        self.namespaces.append(namespace)

    def everything_changed(self) -> None:
        self.flushes += 1

    def channel_live(self, channel: Any) -> None:
        pass

    def channel_lost(self, channel: Any, reason: str, proof_age: float | None) -> None:
        pass

    def channel_unsupported(self, channel: Any, reason: str) -> None:
        pass


def _memory(clock: FakeClock) -> MemoryStore:
    return MemoryStore(clock=clock)


# -- the memory store's cap -----------------------------------------------------------------------


def test_trust_for_caps_how_long_an_entry_is_served_whatever_its_ttl(clock: FakeClock) -> None:
    memory = _memory(clock)
    memory.trust_for = 1.0
    memory.put("ns", "k", b"v", 3600)
    memory.put("ns", "forever", b"v", None)
    clock.advance(0.9)
    assert memory.lookup("ns", "k") == b"v"
    clock.advance(0.2)
    assert memory.lookup("ns", "k") is None
    assert memory.lookup("ns", "forever") is None


def test_a_zero_window_keeps_nothing_in_memory(clock: FakeClock) -> None:
    memory = _memory(clock)
    memory.trust_for = 0.0
    assert memory.put("ns", "k", b"v", 60) is False
    assert memory.lookup("ns", "k") is None


def test_expire_all_within_shortens_long_lives_only(clock: FakeClock) -> None:
    memory = _memory(clock)
    memory.put("ns", "long", b"v", 3600)
    memory.put("ns", "short", b"v", 0.5)
    memory.expire_all_within(2.0)
    clock.advance(1.0)
    assert memory.lookup("ns", "short") is None
    assert memory.lookup("ns", "long") == b"v"
    clock.advance(1.1)
    assert memory.lookup("ns", "long") is None


# -- mode changes -----------------------------------------------------------------------------


def test_memory_is_capped_until_the_channel_is_live_then_flushed_and_uncapped(
    clock: FakeClock,
) -> None:
    memory = _memory(clock)
    channel = StubChannel()
    coherence = MemoryCoherence(memory, ReadTracker(), window=1.0, channels=[channel])
    coherence.start()
    assert coherence.mode == "connecting"
    memory.put("ns", "unvouched", b"v", 3600)
    clock.advance(1.1)
    assert memory.lookup("ns", "unvouched") is None  # the window, not the TTL
    memory.put("ns", "unvouched", b"v", 3600)
    coherence.channel_live(channel)
    assert coherence.mode == "live"
    assert memory.lookup("ns", "unvouched") is None  # stored before the channel vouched
    memory.put("ns", "vouched", b"v", 3600)
    clock.advance(60)
    assert memory.lookup("ns", "vouched") == b"v"
    assert coherence.flushes == 1


def test_losing_the_channel_caps_every_entry_from_the_last_proof_of_delivery(
    clock: FakeClock,
) -> None:
    memory = _memory(clock)
    channel = StubChannel()
    coherence = MemoryCoherence(memory, ReadTracker(), window=1.0, channels=[channel])
    coherence.channel_live(channel)
    memory.put("ns", "k", b"v", 3600)
    coherence.channel_lost(channel, "reset", 0.4)  # last PONG was for a PING 0.4 s ago
    assert coherence.mode == "reconnecting"
    clock.advance(0.5)
    assert memory.lookup("ns", "k") == b"v"
    clock.advance(0.2)
    assert memory.lookup("ns", "k") is None
    memory.put("ns", "during", b"v", 3600)  # written while down: the window applies
    clock.advance(1.1)
    assert memory.lookup("ns", "during") is None
    assert coherence.channel_losses == 1


def test_reported_changes_drop_entries_and_stop_reads_in_flight_from_promoting() -> None:
    memory = MemoryStore()
    tracker = ReadTracker()
    channel = StubChannel()
    coherence = MemoryCoherence(memory, tracker, window=1.0, channels=[channel])
    coherence.channel_live(channel)
    for key in ("a", "b"):
        memory.put("ns", key, b"v", None)
    memory.put("other", "a", b"v", None)
    reading = tracker.begin("ns", "a")
    coherence.keys_changed([("ns", "a")])
    assert memory.lookup("ns", "a") is None
    assert memory.lookup("ns", "b") == b"v"
    assert not tracker.still_current(reading)
    coherence.namespace_changed("ns")
    assert memory.lookup("ns", "b") is None
    assert memory.lookup("other", "a") == b"v"
    coherence.everything_changed()
    assert len(memory) == 0
    assert coherence.counters() == {
        "invalidations": 3,
        "entries_dropped": 2,
        "flushes": 2,
        "channel_losses": 0,
    }


@pytest.mark.parametrize(
    ("stores", "use_redis", "window", "mode"),
    [
        (("memory", "file"), False, 1.0, "window"),
        (("memory",), False, 1.0, "local"),
        (("memory", "file"), False, None, "off"),
        (("memory", "redis", "file"), True, 1.0, "connecting"),
    ],
)
async def test_the_chain_decides_the_mode(
    stores: tuple[str, ...], use_redis: bool, window: float | None, mode: str, cache_dir: Path
) -> None:
    config = CacheConfig(
        stores=stores,
        use_redis=use_redis,
        redis_url="redis://127.0.0.1:1/0",
        cache_dir=cache_dir,
        coherence_window=window,
    )
    cache = AsyncToolCache(config)
    try:
        assert (await cache.health_check())["coherence"]["mode"] == mode
    finally:
        await cache.aclose()


def test_coherence_window_must_be_none_or_not_negative() -> None:
    with pytest.raises(ConfigError, match="coherence_window"):
        CacheConfig(coherence_window=-1)
    assert CacheConfig(coherence_window=0).coherence_window == 0


# -- the Redis channel ------------------------------------------------------------------------


def test_channel_messages_name_entries_generations_and_flushes() -> None:
    channel = RedisInvalidationChannel(
        lambda: None,  # type: ignore[arg-type,return-value]
        key_prefix="tw",
        address="redis://127.0.0.1:1/0",
        window=1.0,
    )
    sink = RecordingSink()
    channel._deliver(
        [
            b"tw:default:0:user:1",  # keys may contain ':'
            b"tw:search:12:q",
            b"tw:search:gen",
            b"tw:results:{7.12}:3:r1",  # a cluster stripe
            b"tw:results:{7.12}:gen",
            b"tw:!lock:default:user:1",
            b"tw:odd",
        ],
        sink,
    )
    channel._deliver(None, sink)
    assert sink.keys == [("default", "user:1"), ("search", "q"), ("results", "r1")]
    assert sink.namespaces == ["search", "results"]
    assert sink.flushes == 1


def test_heartbeat_notices_a_silent_loss_within_the_window() -> None:
    for window in (0.3, 1.0, 5.0):
        interval, deadline = heartbeat_for(window)
        assert 2 * interval + deadline <= window + 1e-9
    assert heartbeat_for(0.0) == (0.05, 0.15)


async def test_a_peer_cache_hears_of_a_write_and_its_writer_of_its_own(
    redis_url: str, key_prefix: str, cache_dir: Path
) -> None:
    config = CacheConfig(
        use_redis=True,
        redis_url=redis_url,
        key_prefix=key_prefix,
        cache_dir=cache_dir,
        stores=("memory", "redis"),
        coherence_window=30.0,
    )
    async with AsyncToolCache(config) as writer, AsyncToolCache(config) as reader:
        assert (await reader.health_check())["coherence"]["mode"] == "live"
        await writer.set("k", "v1")
        assert await reader.get("k") == "v1"
        assert await reader.get("k") == "v1"
        assert reader.stats().overall.hits["memory"] == 1
        await writer.set("k", "v2")

        async def sees_v2() -> bool:
            return bool(await reader.get("k") == "v2")

        await eventually(sees_v2, within=3, what="reader hears of the write")
        assert reader.stats().coherence["invalidations"] >= 1
        # The writer's own write does not come back (its write lane is tracked with NOLOOP):
        # it keeps serving its memory copy. test_write_lane.py has the details.
        assert await writer.get("k") == "v2"
        assert writer.stats().overall.hits == {"memory": 1, "redis": 0}


async def test_a_paused_redis_ends_the_channel_by_heartbeat(
    own_redis_server: RedisServer, key_prefix: str, cache_dir: Path
) -> None:
    config = CacheConfig(
        use_redis=True,
        redis_url=own_redis_server.url,
        key_prefix=key_prefix,
        cache_dir=cache_dir,
        stores=("memory", "redis"),
        coherence_window=0.5,
    )
    async with AsyncToolCache(config) as cache:
        await cache.set("k", "v1")
        assert (await cache.health_check())["coherence"]["mode"] == "live"
        await asyncio.to_thread(own_redis_server.pause)  # the socket stays open; nothing answers
        coherence = cache._coherence

        await eventually(lambda: coherence.mode != "live", within=2, what="heartbeat gave up")
        assert coherence.channel_losses == 1
        await asyncio.to_thread(own_redis_server.resume)
        await eventually(lambda: coherence.mode == "live", within=5, what="channel back")


async def test_flushdb_by_another_client_empties_memory(
    own_redis_server: RedisServer, key_prefix: str, cache_dir: Path
) -> None:
    config = CacheConfig(
        use_redis=True,
        redis_url=own_redis_server.url,
        key_prefix=key_prefix,
        cache_dir=cache_dir,
        stores=("memory", "redis"),
        coherence_window=30.0,
    )
    client = aioredis.Redis.from_url(own_redis_server.url, driver_info=None)  # no metadata stat
    try:
        async with AsyncToolCache(config) as cache:
            await cache.set("k", "v1")
            await client.flushdb()

            async def gone() -> bool:
                return await cache.get("k") is None

            await eventually(gone, within=3, what="FLUSHDB heard")
            assert cache.stats().coherence["flushes"] >= 2  # going live, then FLUSHDB
    finally:
        await client.aclose()


async def test_a_value_read_past_an_open_redis_breaker_lives_only_the_window_in_memory(
    redis_url: str, key_prefix: str, cache_dir: Path, clock: FakeClock
) -> None:
    """The channel may be live while Redis is skipped: what the file store answers then may be
    older than Redis's value, and no later message would correct it."""
    settings: dict[str, Any] = {"key_prefix": key_prefix, "cache_dir": cache_dir}
    redis = {"use_redis": True, "redis_url": redis_url}
    async with (
        AsyncToolCache(CacheConfig(**settings, **redis), clock=clock) as cache,
        # written through: the other cache reads the file at once
        AsyncToolCache(
            CacheConfig(**settings, stores=("file",), file_write_behind=False), clock=clock
        ) as files,
    ):
        assert (await cache.health_check())["coherence"]["mode"] == "live"
        await files.set("k", "from the file")
        cache.breakers()["redis"].trip()
        assert await cache.get("k") == "from the file"
        assert await cache.get("k") == "from the file"
        assert cache.stats().overall.hits["memory"] == 1  # kept, for the window
        clock.advance(1.1)
        assert await cache.get("k") == "from the file"
        assert cache.stats().overall.hits["file"] == 2  # not trusted past the window
