"""Failure without stalls: Redis killed, paused, slowed, reset or refusing writes, under load.

Every test runs against a real redis-server (the shared one, a private one it may kill or pause,
or the shared one behind a loopback TCP proxy that injects latency, resets and a black hole) and
real files. Nothing sleeps to hide a race: waits poll against deadlines.
"""

from __future__ import annotations

import asyncio
import functools
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, BreakerSettings, BreakerState, CacheConfig
from toolweaver_async.resilience.guard import GuardedStore
from toolweaver_async.testing import FakeClock, RedisServer

from .polling import eventually
from .tcp_proxy import TcpProxy

MakeCache = Callable[..., Awaitable[AsyncToolCache]]

# Small timeouts so outages are detected and recovered from in well under a second.
FAST: dict[str, Any] = {
    "redis_command_timeout": 0.1,
    "redis_connect_timeout": 0.1,
    "breaker": BreakerSettings(
        failure_threshold=3, recovery_timeout=0.05, max_recovery_timeout=0.2
    ),
}


@pytest.fixture
async def make_cache(cache_dir: Path, key_prefix: str, redis_url: str) -> AsyncIterator[MakeCache]:
    """Builds connected caches on the shared cache_dir, prefix and Redis; closes them after."""
    made: list[AsyncToolCache] = []

    async def make(**changes: Any) -> AsyncToolCache:
        settings: dict[str, Any] = {
            "use_redis": True,
            "cache_dir": cache_dir,
            "key_prefix": key_prefix,
            "redis_url": redis_url,
            **FAST,
        }
        settings.update(changes)
        clock = settings.pop("clock", None)
        cache = AsyncToolCache(CacheConfig(**settings), clock=clock)
        made.append(cache)
        await cache.connect()
        return cache

    yield make
    for cache in made:
        await cache.aclose()


@pytest.fixture
async def proxy(redis_server: RedisServer) -> AsyncIterator[TcpProxy]:
    async with TcpProxy(redis_server.port) as started:
        yield started


def redis_layer(cache: AsyncToolCache) -> GuardedStore:
    [layer] = [g for g in cache._layers if g.name == "redis"]
    return layer


def recovered(cache: AsyncToolCache) -> Callable[[], bool]:
    """Breaker closed and journal replayed."""
    layer = redis_layer(cache)
    return lambda: layer.breaker.state is BreakerState.CLOSED and not layer.journal


# -- the breaker in the chain ---------------------------------------------------------------


async def test_open_breaker_skips_redis_with_no_io_at_all(
    make_cache: MakeCache, proxy: TcpProxy
) -> None:
    cache = await make_cache(
        redis_url=proxy.url,
        breaker=BreakerSettings(
            recovery_timeout=60,
            max_recovery_timeout=60,
            health_check_interval=None,  # no background ping either: this test counts bytes
        ),
        coherence_window=None,  # nor the invalidation channel's heartbeat
    )
    await cache.set("warm", 1)
    redis_layer(cache).breaker.trip()
    sent, connections = proxy.client_bytes, proxy.connections
    for n in range(20):
        await cache.set(f"k{n}", n)
        assert await cache.get(f"k{n}") == n
        assert await cache.get(f"missing{n}") is None
    await cache.get_many(["k1", "missing", "k2"])
    await cache.set_many({"a": 1, "b": 2})
    await cache.delete("k1")
    await cache.invalidate("search")
    await cache.clear()
    assert (proxy.client_bytes, proxy.connections) == (sent, connections)
    assert len(redis_layer(cache).journal or ()) > 0  # everything Redis missed is kept


@pytest.mark.parametrize("probes", [1, 3])
async def test_half_open_redis_gets_probe_traffic_only(
    make_cache: MakeCache, proxy: TcpProxy, probes: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = await make_cache(
        redis_url=proxy.url,
        stores=("redis",),
        redis_command_timeout=2.0,
        breaker=BreakerSettings(
            recovery_timeout=0.05, max_recovery_timeout=0.05, half_open_max_calls=probes
        ),
    )
    layer = redis_layer(cache)
    reached: list[str] = []
    store_get = layer.store.get

    async def counted_get(namespace: str, key: str) -> bytes | None:
        reached.append(key)
        return await store_get(namespace, key)

    monkeypatch.setattr(layer.store, "get", counted_get)
    proxy.watch(b"MGET")
    proxy.latency = 0.05  # probes stay in flight while the other calls arrive
    layer.breaker.trip()
    await eventually(lambda: layer.breaker.state is BreakerState.HALF_OPEN)
    results = await asyncio.gather(*(cache.get(f"k{n}") for n in range(20)))
    assert results == [None] * 20
    assert len(reached) == probes
    assert 1 <= proxy.count(b"MGET") <= probes  # concurrent gets may share one MGET
    assert layer.breaker.state is BreakerState.CLOSED


async def test_redis_is_used_again_soon_after_it_returns_however_long_the_open_period(
    make_cache: MakeCache, own_redis_server: RedisServer
) -> None:
    """The breaker's open period has grown to a minute; the background health ping still
    brings Redis back (journal replayed) within a fraction of a second of its restart."""
    cache = await make_cache(
        redis_url=own_redis_server.url,
        stores=("redis", "file"),
        breaker=BreakerSettings(
            failure_threshold=1,
            recovery_timeout=60,
            max_recovery_timeout=60,
            health_check_interval=0.05,
        ),
    )
    reader = await make_cache(redis_url=own_redis_server.url, stores=("redis",))
    await asyncio.to_thread(own_redis_server.kill)
    await cache.set("k", "written while Redis was away")  # fails, opens the breaker, journaled
    breaker = redis_layer(cache).breaker
    assert breaker.state is BreakerState.OPEN
    assert breaker.snapshot()["seconds_until_probe"] > 50
    await asyncio.to_thread(own_redis_server.start)
    await eventually(recovered(cache), within=5, what="breaker closed and journal replayed")
    assert await reader.get("k") == "written while Redis was away"


async def test_a_cache_started_before_redis_uses_it_soon_after_it_starts(
    make_cache: MakeCache, own_redis_server: RedisServer
) -> None:
    await asyncio.to_thread(own_redis_server.kill)
    cache = await make_cache(
        redis_url=own_redis_server.url,
        stores=("redis",),
        breaker=BreakerSettings(
            recovery_timeout=60, max_recovery_timeout=60, health_check_interval=0.05
        ),
    )
    breaker = redis_layer(cache).breaker
    assert breaker.state is BreakerState.OPEN  # down at connect(): no agent waits on it
    await cache.set("k", "v")  # journaled
    await asyncio.to_thread(own_redis_server.start)

    async def serving() -> bool:
        return await cache.get("other") is None and breaker.state is BreakerState.CLOSED

    await eventually(serving, within=5, what="Redis in use long before the 60 s open period")
    await eventually(recovered(cache), within=5, what="journal replayed")


async def test_paused_redis_costs_at_most_the_command_timeout_per_call_then_nothing(
    make_cache: MakeCache, own_redis_server: RedisServer
) -> None:
    timeout = 0.1
    cache = await make_cache(
        redis_url=own_redis_server.url,
        stores=("redis",),
        redis_pool_size=2,  # fewer connections than callers: pool wait + command is bounded
        redis_command_timeout=timeout,
        breaker=BreakerSettings(failure_threshold=3, recovery_timeout=60, max_recovery_timeout=60),
    )
    await cache.set("k", "v")
    await asyncio.to_thread(own_redis_server.pause)

    async def timed(n: int) -> float:
        started = time.perf_counter()
        if n % 2:
            assert await cache.get(f"k{n}") is None
        else:
            await cache.set(f"k{n}", n)
        return time.perf_counter() - started

    first = await asyncio.gather(*(timed(n) for n in range(40)))
    assert max(first) < timeout + 0.05, max(first)
    # The 40 callers shared two connections: a few round trips failed, each counted once
    # (not 40 failures), so at most failure_threshold more calls pay a timeout each.
    breaker = redis_layer(cache).breaker
    for n in range(3):
        if breaker.state is BreakerState.OPEN:
            break
        assert await timed(n) < timeout + 0.05
    assert breaker.state is BreakerState.OPEN
    after = [await timed(n) for n in range(40)]
    assert max(after) < 0.005, max(after)


# -- the outage journal ---------------------------------------------------------------------


async def test_get_returns_value_written_during_outage_after_redis_recovers(
    make_cache: MakeCache, proxy: TcpProxy, redis_url: str
) -> None:
    cache = await make_cache(redis_url=proxy.url, stores=("memory", "redis"))
    reader = await make_cache(stores=("redis",))
    await cache.set("k", "before")
    proxy.refuse = True
    proxy.reset_all()
    await cache.set("k", "during")  # fails (counted against the breaker), journaled
    await cache.set("new", "during")
    await cache.delete("gone")
    assert await cache.get("k") == "during"
    assert await reader.get("k") == "before"  # Redis really missed it
    proxy.refuse = False
    await eventually(recovered(cache), what="breaker closed and journal replayed")
    assert await reader.get("k") == "during"
    assert await reader.get("new") == "during"


async def test_reads_of_journaled_keys_skip_redis_until_the_replay_lands(
    make_cache: MakeCache, raw_redis: aioredis.Redis, redis_server: RedisServer
) -> None:
    """Redis answers reads but refuses writes (an ACL): the replay keeps failing, the breaker
    stays closed, and Redis still holds the value from before -- it must not be served."""
    user, password = f"u{uuid.uuid4().hex[:8]}", "pw"
    acl: Callable[..., Awaitable[Any]] = raw_redis.execute_command
    await acl("ACL", "SETUSER", user, "on", f">{password}", "~*", "&*", "+@all", "-set", "-unlink")
    try:
        url = f"redis://{user}:{password}@127.0.0.1:{redis_server.port}/0"
        patient = BreakerSettings(
            failure_threshold=10_000, window_size=10_000, minimum_calls=10_000
        )
        cache = await make_cache(redis_url=url, stores=("redis", "file"), breaker=patient)
        writer = await make_cache(stores=("redis",))
        await writer.set("k", "old")
        await cache.set("k", "new")  # Redis refuses: journaled; the file store has it
        assert redis_layer(cache).breaker.state is BreakerState.CLOSED
        for _ in range(5):
            assert await cache.get("k") == "new"
            assert (await cache.get_many(["k"])) == {"k": "new"}
        await acl("ACL", "SETUSER", user, "+set", "+unlink")
        # Written while the replay of "new" is still due: it must not reach Redis first and
        # then be overwritten by that replay.
        await cache.set("k", "newest")
        await eventually(recovered(cache))
        assert await writer.get("k") == "newest"
    finally:
        await acl("ACL", "DELUSER", user)


async def test_write_during_replay_is_not_overtaken_by_the_replay(
    make_cache: MakeCache, proxy: TcpProxy
) -> None:
    cache = await make_cache(redis_url=proxy.url, stores=("redis",), redis_command_timeout=2.0)
    reader = await make_cache(stores=("redis",))
    proxy.watch(b"SET")
    redis_layer(cache).breaker.trip()
    await cache.set("k", "v1")  # journaled
    proxy.latency = 0.05
    redis_layer(cache).breaker.reset()
    await eventually(lambda: proxy.count(b"SET") >= 1, what="replay of v1 on the wire")
    await cache.set("k", "v2")  # while v1 is being replayed: must land after it
    await eventually(recovered(cache))
    assert await reader.get("k") == "v2"


async def test_journaled_set_that_expired_is_replayed_as_a_delete(make_cache: MakeCache) -> None:
    clock = FakeClock()
    cache = await make_cache(stores=("redis",), clock=clock)
    reader = await make_cache(stores=("redis",), clock=clock)
    await reader.set("k", "old", ttl=3600)
    redis_layer(cache).breaker.trip()
    await cache.set("k", "short-lived", ttl=5)
    clock.now += 10  # it expired while Redis was away; Redis still holds "old" for an hour
    redis_layer(cache).breaker.reset()
    await eventually(recovered(cache))
    assert await reader.get("k") is None


@pytest.mark.allow_blocking(reason="looks at journal and temp files behind the cache's back")
async def test_invalidate_and_clear_during_outage_are_replayed_in_order(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = await make_cache()
    reader = await make_cache(stores=("redis",))
    await reader.set("q", "old", namespace="search")
    await reader.set("x", "old")
    breaker = redis_layer(cache).breaker
    breaker.trip()
    await cache.invalidate("search")
    await cache.set("q2", "after", namespace="search")
    breaker.reset()
    await eventually(recovered(cache))
    assert await reader.get("q", namespace="search") is None
    assert await reader.get("q2", namespace="search") == "after"

    breaker.trip()
    await cache.clear()
    journal = redis_layer(cache).journal
    assert journal is not None
    assert journal.path is not None
    assert journal.path.is_relative_to(cache_dir)  # beside the file store ...
    await eventually(
        lambda: (
            journal.path is not None and journal.path.exists() and journal.path.stat().st_size > 0
        )
    )
    breaker.reset()  # ... and not removed by its clear()
    await eventually(recovered(cache))
    assert await reader.get("x") is None


async def test_full_journal_never_lets_redis_serve_an_older_value(make_cache: MakeCache) -> None:
    cache = await make_cache(stores=("memory", "redis"), journal_max_entries=5)
    reader = await make_cache(stores=("redis",))
    keys = [f"k{n}" for n in range(30)]
    await reader.set_many(dict.fromkeys(keys, "old"))
    await reader.set("untouched", "old", namespace="other")
    redis_layer(cache).breaker.trip()
    for key in keys:
        await cache.set(key, "new")
    health = await cache.health_check()
    journal = health["stores"]["redis"]["journal"]
    assert journal["entries"] <= 5
    assert journal["overflows"] >= 1
    redis_layer(cache).breaker.reset()
    await eventually(recovered(cache))
    for key in keys:
        assert await reader.get(key) in ("new", None)
        # The replay invalidated the namespace in Redis; every process's memory layer hears of
        # it, the writer's too, so no process keeps values the others can no longer see.
        assert await cache.get(key) in ("new", None)
    assert await reader.get("untouched", namespace="other") == "old"


async def test_journal_on_disk_survives_a_restart(
    make_cache: MakeCache, own_redis_server: RedisServer
) -> None:
    url = own_redis_server.url
    reader = await make_cache(stores=("redis",), redis_url=url)
    await reader.set("k", "old")
    await asyncio.to_thread(own_redis_server.pause)
    down = await make_cache(redis_url=url)
    await down.set("k", "new")
    await down.aclose()  # the process ends during the outage
    await asyncio.to_thread(own_redis_server.resume)

    restarted = await make_cache(redis_url=url)  # same folder, prefix and server, back again
    await eventually(recovered(restarted))
    assert await reader.get("k") is None  # the older value is gone from Redis ...
    assert await restarted.get("k") == "new"  # ... the newer one comes from the file store
    assert await _eventually_get(reader, "k") == "new"  # and is copied back into Redis


async def _eventually_get(cache: AsyncToolCache, key: str, within: float = 2.0) -> Any:
    deadline = time.monotonic() + within
    while (value := await cache.get(key)) is None and time.monotonic() < deadline:
        await asyncio.sleep(0.005)
    return value


async def test_health_check_shows_breaker_failures_and_journal(
    make_cache: MakeCache, free_port: Callable[[], int], cache_dir: Path
) -> None:
    cache = await make_cache(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    await cache.set("a", 1)
    await cache.delete("b")
    health = await cache.health_check()
    redis = health["stores"]["redis"]
    assert health["circuit_breaker_state"] == "open"
    assert redis["failures"] >= 1
    assert redis["last_error"]
    assert redis["journal"]["entries"] == 2
    assert redis["journal"]["path"].startswith(str(cache_dir))


# -- cancellation ---------------------------------------------------------------------------


def mgets_at_least(proxy: TcpProxy, count: int) -> bool:
    return proxy.count(b"MGET") >= count


async def test_cancelled_gets_leave_no_connection_in_a_bad_state(
    make_cache: MakeCache, proxy: TcpProxy
) -> None:
    cache = await make_cache(redis_url=proxy.url, stores=("redis",), redis_command_timeout=2.0)
    await cache.set_many({f"k{n}": n for n in range(40)})
    proxy.watch(b"MGET")
    proxy.latency = 0.02
    tasks: list[asyncio.Future[Any]] = []
    for wave in range(4):  # several round trips in flight on several connections
        tasks += [
            asyncio.ensure_future(cache.get(f"k{n}")) for n in range(wave * 10, wave * 10 + 10)
        ]
        await eventually(functools.partial(mgets_at_least, proxy, wave + 1), what="on the wire")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    proxy.latency = 0.0
    # a connection left with an unread reply would hand it to the next caller: wrong values
    assert await asyncio.gather(*(cache.get(f"k{n}") for n in range(40))) == list(range(40))
    assert redis_layer(cache).breaker.state is BreakerState.CLOSED  # cancelling is no failure


@pytest.mark.allow_blocking(reason="looks at journal and temp files behind the cache's back")
async def test_cancelled_sets_leave_whole_entries_in_every_store(
    make_cache: MakeCache, proxy: TcpProxy, cache_dir: Path
) -> None:
    cache = await make_cache(redis_url=proxy.url, redis_command_timeout=2.0)
    proxy.watch(b"SET")
    proxy.latency = 0.02
    value = {"blob": "x" * 20_000}
    tasks = [asyncio.ensure_future(cache.set(f"k{n}", value)) for n in range(30)]
    await eventually(lambda: proxy.count(b"SET") >= 1, what="sets on the wire")
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    proxy.latency = 0.0
    await eventually(lambda: not cache._background, what="cancelled writes finished")
    await eventually(recovered(cache))
    await cache.aclose()  # file writes land behind the caller: closing writes what is queued
    assert not [p for p in os.listdir(cache_dir) if p.endswith(".tmp")]
    assert not any(name.endswith(".tmp") for *_, names in os.walk(cache_dir) for name in names)
    from_redis = await make_cache(stores=("redis",))
    from_files = await make_cache(stores=("file",))
    for n in range(30):
        assert await from_redis.get(f"k{n}") == value
        assert await from_files.get(f"k{n}") == value


async def test_set_cancelled_before_its_writes_start_still_reaches_every_store(
    make_cache: MakeCache,
) -> None:
    cache = await make_cache()
    await cache.set("k", "old")
    write = asyncio.ensure_future(cache.set("k", "new"))
    await asyncio.sleep(0)  # the set has put "new" in memory and handed the rest to a task
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert await cache.get("k") == "new"
    await eventually(lambda: not cache._background, what="the write finished in the background")
    await cache.aclose()  # file writes land behind the caller: closing writes what is queued
    from_redis = await make_cache(stores=("redis",))
    from_files = await make_cache(stores=("file",))
    assert await from_redis.get("k") == "new"  # no store is left behind memory
    assert await from_files.get("k") == "new"


# -- 200 agents -----------------------------------------------------------------------------


@dataclass
class Agents:
    """Agent coroutines that read and write their own keys and check every answer."""

    cache: AsyncToolCache
    count: int = 200
    writing: bool = True
    errors: list[BaseException] = field(default_factory=list)
    stale: list[tuple[str, Any, Any]] = field(default_factory=list)
    latest: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    # set once the failure has happened: writes started from then on cannot have reached Redis
    failed: bool = False
    written_in_outage: set[str] = field(default_factory=set)  # keys whose latest write did so
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> None:
        self._tasks = [asyncio.ensure_future(self._agent(n)) for n in range(self.count)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    async def _agent(self, n: int) -> None:
        step = 0
        while not self._stop.is_set():
            key = f"agent{n}:{step % 3}"
            try:
                started = time.perf_counter()
                got = await self.cache.get(key)
                self.latencies.append(time.perf_counter() - started)
                if got != self.latest.get(key):
                    self.stale.append((key, got, self.latest.get(key)))
                if self.writing:
                    in_outage = self.failed
                    await self.cache.set(key, step)
                    self.latest[key] = step
                    if in_outage:
                        self.written_in_outage.add(key)
                    else:
                        self.written_in_outage.discard(key)
            except Exception as exc:  # the promise: this never happens
                self.errors.append(exc)
            step += 1
            await asyncio.sleep(0.002)

    async def run_for(self, seconds: float) -> None:
        await asyncio.sleep(seconds)  # agents work meanwhile; this is the length of a phase


async def check_outage(
    cache: AsyncToolCache,
    reader: AsyncToolCache,
    fail: Callable[[], object],
    heal: Callable[[], object],
    *,
    blocking: bool = False,
    server_keeps_data: bool = True,
) -> Agents:
    """Healthy, outage (agents write), recovery (agents only read and check), then every last
    write is read back. ``blocking`` steps run in a thread (they wait for the server process).

    Every write made during the outage must be in Redis itself (the journal replayed it). A
    server that keeps its data must also hold every earlier write; one that was killed (no
    persistence in tests) may have lost those, but must never hold an older value than the
    latest, and the agents' own chain must still answer the latest (the file store has it)."""

    async def step(action: Callable[[], object]) -> None:
        if blocking:
            await asyncio.get_running_loop().run_in_executor(None, action)
        else:
            action()

    layer = redis_layer(cache)
    moves: list[BreakerState] = []
    layer.breaker.add_listener(lambda _name, _old, new: moves.append(new))
    agents = Agents(cache)
    agents.start()
    await agents.run_for(0.3)
    await step(fail)
    agents.failed = True
    await agents.run_for(0.5)
    # The breaker counts round trips that time out, not stalls of this process: on a starved
    # machine opening it can take longer than half a second of outage.
    await eventually(lambda: BreakerState.OPEN in moves, within=5.0, what="the breaker opened")
    agents.writing = False
    await step(heal)
    healed_at = time.monotonic()
    await eventually(recovered(cache), within=5.0, what="breaker closed, journal replayed")
    recovery = time.monotonic() - healed_at
    await agents.run_for(0.2)
    await agents.stop()
    assert agents.errors == []
    assert agents.stale == []
    in_redis = {key: await reader.get(key) for key in agents.latest}
    assert agents.written_in_outage, "no agent wrote during the outage"
    lost_outage_writes = {
        key: (in_redis[key], agents.latest[key])
        for key in agents.written_in_outage
        if in_redis[key] != agents.latest[key]
    }
    assert lost_outage_writes == {}
    wrong = {  # an older value is never acceptable; a lost one only from a killed server
        key: (got, agents.latest[key])
        for key, got in in_redis.items()
        if got != agents.latest[key] and (server_keeps_data or got is not None)
    }
    assert wrong == {}
    answers = await asyncio.gather(*(cache.get(key) for key in agents.latest))
    assert dict(zip(agents.latest, answers, strict=True)) == agents.latest
    assert recovery < 1.0 + 0.2  # within one open period (at most max_recovery_timeout)
    assert BreakerState.OPEN in moves
    assert moves[-1] is BreakerState.CLOSED, (moves, layer.last_error)
    assert layer.journal is not None
    assert layer.journal.replayed > 0
    return agents


# No memory layer, so every get goes to Redis; the default command timeout (0.25 s), because
# 200 agents on a small CI machine make some healthy calls take longer than 0.1 s.
AGENT_CHAIN: dict[str, Any] = {"stores": ("redis", "file"), "redis_command_timeout": 0.25}


@pytest.mark.slow
async def test_200_agents_survive_redis_killed_and_restarted(
    make_cache: MakeCache, own_redis_server: RedisServer
) -> None:
    url = own_redis_server.url
    cache = await make_cache(redis_url=url, **AGENT_CHAIN)
    reader = await make_cache(redis_url=url, stores=("redis",))
    await check_outage(
        cache,
        reader,
        own_redis_server.kill,
        own_redis_server.start,
        blocking=True,
        server_keeps_data=False,  # started without persistence: SIGKILL loses what it held
    )


@pytest.mark.slow
async def test_200_agents_survive_redis_paused_and_resumed(
    make_cache: MakeCache, own_redis_server: RedisServer
) -> None:
    url = own_redis_server.url
    cache = await make_cache(redis_url=url, **AGENT_CHAIN)
    reader = await make_cache(redis_url=url, stores=("redis",))
    agents = await check_outage(
        cache, reader, own_redis_server.pause, own_redis_server.resume, blocking=True
    )
    # a black-holed server costs at most about a command timeout (0.25 s) per call, never the
    # length of the pause; the bound leaves room for 200 agents' scheduling on a 2-core CI box
    assert max(agents.latencies) < 1.0, max(agents.latencies)


@pytest.mark.slow
async def test_200_agents_survive_latency_spikes_and_connection_resets(
    make_cache: MakeCache, proxy: TcpProxy
) -> None:
    cache = await make_cache(redis_url=proxy.url, **AGENT_CHAIN)
    reader = await make_cache(stores=("redis",))

    def slow_down() -> None:
        proxy.latency = 1.5  # six times the command timeout: a call that waits for it shows

    def speed_up_with_resets() -> None:
        proxy.latency = 0.0
        proxy.reset_all()

    agents = await check_outage(cache, reader, slow_down, speed_up_with_resets)
    # bounded by the command timeout (0.25 s) plus scheduling, never by the 1.5 s server latency
    assert max(agents.latencies) < 1.0, max(agents.latencies)


@pytest.mark.slow
async def test_200_agents_survive_a_black_hole_between_them_and_redis(
    make_cache: MakeCache, proxy: TcpProxy
) -> None:
    cache = await make_cache(redis_url=proxy.url, **AGENT_CHAIN)
    reader = await make_cache(stores=("redis",))

    def black_hole() -> None:
        proxy.black_hole = True

    def heal() -> None:
        proxy.black_hole = False
        proxy.reset_all()  # the swallowed requests' connections are dead anyway

    await check_outage(cache, reader, black_hole, heal)


@pytest.fixture
async def raw_redis(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_url, driver_info=None)  # no SETINFO: no metadata stat
    yield client
    await client.aclose()
