"""Batching of concurrent Redis calls, against a real redis-server: every caller gets its own
answer or its own error, in fewer round trips than callers, and a lone call still goes alone."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from redis.asyncio import Redis
from redis.asyncio.connection import Connection as RedisConnection
from redis.exceptions import ResponseError

from toolweaver_async import AsyncToolCache, BreakerState, CacheConfig, CircuitBreaker
from toolweaver_async.errors import StoreError
from toolweaver_async.resilience.guard import FAILED, GuardedStore
from toolweaver_async.stores.redis import RedisStore
from toolweaver_async.stores.redis.batching import RoundTripBatcher
from toolweaver_async.stores.redis.replies import reads_directly
from toolweaver_async.stores.redis.resp import RoundTripError, shared_failure
from toolweaver_async.testing import RedisServer

from .polling import eventually
from .tcp_proxy import TcpProxy

NS = "default"


@pytest.fixture
def store(redis_store: RedisStore) -> RedisStore:
    return redis_store


async def mget_calls(raw_redis: Redis) -> int:
    stats = await raw_redis.info("commandstats")
    return int(stats.get("cmdstat_mget", {}).get("calls", 0))


async def test_concurrent_gets_each_get_their_own_value_in_fewer_round_trips(
    store: RedisStore, raw_redis: Redis
) -> None:
    keys = [f"k{i}" for i in range(300)]
    await store.set_many(NS, [(key, f"value of {key}".encode(), 60) for key in keys])
    batcher = store._batcher
    trips_before, mgets_before = batcher.round_trips, await mget_calls(raw_redis)

    got = await asyncio.gather(*(store.get(NS, key) for key in [*keys, "missing"]))

    assert got == [f"value of {key}".encode() for key in keys] + [None]
    trips = batcher.round_trips - trips_before
    assert trips <= 10  # 301 callers: one went alone, the rest shared MGETs
    # the server saw exactly the MGETs the batcher sent (the raw client sent none)
    assert await mget_calls(raw_redis) - mgets_before == trips


async def test_concurrent_gets_of_one_key_send_it_once(store: RedisStore, raw_redis: Redis) -> None:
    await store.set(NS, "hot", b"v", 60)
    got = await asyncio.gather(*(store.get(NS, "hot") for _ in range(200)))
    assert got == [b"v"] * 200
    assert store._batcher.round_trips <= 1 + 3  # the set, then a lone get and shared MGETs


async def test_a_lone_get_goes_out_at_once_without_waiting_for_a_batch(store: RedisStore) -> None:
    await store.set(NS, "k", b"v", 60)
    batcher = store._batcher
    for _ in range(5):
        before = batcher.round_trips
        assert await store.get(NS, "k") == b"v"
        assert batcher.round_trips == before + 1
        assert batcher.queued == 0


async def test_concurrent_sets_share_pipelines_and_all_land(
    store: RedisStore, raw_redis: Redis, key_prefix: str
) -> None:
    batcher = store._batcher
    before = batcher.round_trips
    await asyncio.gather(*(store.set(NS, f"k{i}", str(i).encode(), 60) for i in range(200)))
    assert batcher.round_trips - before <= 10
    values = await raw_redis.mget([f"{key_prefix}:{NS}:0:k{i}" for i in range(200)])
    assert values == [str(i).encode() for i in range(200)]


async def test_a_get_joining_a_round_trip_in_flight_is_queued_as_it_is_made(
    store: RedisStore,
) -> None:
    """While a round trip is out, ``mget`` queues the call at once and hands back the future
    its value will settle: no coroutine between the caller and its reply (each costs every
    batched get a frame when the reply wakes it)."""
    batcher = store._batcher
    first = asyncio.ensure_future(batcher.mget([b"k"]))
    await asyncio.sleep(0)  # the lone call is on the wire now
    assert batcher.in_flight == 1
    second = batcher.mget([b"k"])
    assert isinstance(second, asyncio.Future)
    assert batcher.queued == 1
    assert await asyncio.gather(first, second) == [[None], [None]]  # a raw key nobody wrote


async def test_reads_and_writes_of_one_turn_share_a_round_trip_and_each_gets_its_answer(
    store: RedisStore,
) -> None:
    await store.set_many(NS, [("a", b"1", 60), ("b", b"2", 60)])
    results = await asyncio.gather(
        store.get(NS, "a"),
        store.set(NS, "c", b"3", 60),
        store.get(NS, "b"),
        store.delete(NS, "a"),
        store.get_many(NS, ["b", "missing"]),
        store.add(NS, "b", b"not stored", 60),
    )
    assert results == [b"1", None, b"2", True, [b"2", None], False]
    assert await store.get_many(NS, ["a", "b", "c"]) == [None, b"2", b"3"]


async def test_cancelling_one_caller_of_a_shared_round_trip_leaves_the_others_their_values(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix, command_timeout=5)
    keys = [f"k{i}" for i in range(20)]
    try:
        await store.set_many(NS, [(key, key.encode(), 60) for key in keys])
        await asyncio.to_thread(own_redis_server.pause)
        try:
            tasks = [asyncio.create_task(store.get(NS, key)) for key in keys]
            await eventually(lambda: store._batcher.queued == 0 and store._batcher.in_flight == 2)
            doomed = tasks[5::3]
            for task in doomed:
                task.cancel()
            await asyncio.sleep(0.01)
        finally:
            await asyncio.to_thread(own_redis_server.resume)
        results = await asyncio.gather(*tasks, return_exceptions=True)
        for key, task, result in zip(keys, tasks, results, strict=True):
            if task in doomed:
                assert isinstance(result, asyncio.CancelledError)
            elif task is tasks[0]:  # the lone first get was cancelled by nobody
                assert result == key.encode()
            else:
                assert result == key.encode()
        assert await store.get(NS, "k1") == b"k1"
    finally:
        await store.aclose()


async def test_every_caller_of_a_batch_gets_its_own_error_when_the_server_dies_mid_batch(
    redis_url: str, redis_server: RedisServer, key_prefix: str
) -> None:
    async with TcpProxy(redis_server.port) as proxy:
        store = RedisStore(url=proxy.url, key_prefix=key_prefix, command_timeout=5)
        try:
            await store.set_many(NS, [(f"k{i}", b"v", 60) for i in range(30)])
            proxy.black_hole = True  # requests reach nobody: every get stays in flight
            tasks = [asyncio.create_task(store.get(NS, f"k{i}")) for i in range(30)]
            await eventually(lambda: store._batcher.queued == 0 and store._batcher.in_flight == 2)
            proxy.refuse = True
            proxy.reset_all()  # the server "dies": connections reset, new ones refused
            results = await asyncio.gather(*tasks, return_exceptions=True)
            assert all(isinstance(r, StoreError) for r in results), results
            assert len({id(r) for r in results}) == len(results)  # never one shared instance
            proxy.black_hole = proxy.refuse = False
            assert await store.get(NS, "k0") == b"v"  # a lone get works again
        finally:
            await store.aclose()


async def test_queued_and_shared_calls_time_out_on_a_paused_server(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix, command_timeout=0.2)
    try:
        await store.set(NS, "k", b"v", 60)
        await asyncio.to_thread(own_redis_server.pause)
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                *(store.get(NS, "k") for _ in range(50)),
                store.set(NS, "w", b"v", 60),
                return_exceptions=True,
            )
            elapsed = time.monotonic() - started
        finally:
            await asyncio.to_thread(own_redis_server.resume)
        assert all(isinstance(r, StoreError) and "within 0.2 s" in str(r) for r in results)
        assert not any(r.stalled for r in results)  # a silent server: counted against it
        assert elapsed < 0.2 * 2 + 0.3
        assert await store.get(NS, "k") == b"v"  # the timed-out connections were replaced
    finally:
        await store.aclose()


async def test_callers_of_one_round_trip_expiring_at_different_times_share_one_failure(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    """Two calls queued 50 ms apart leave in one round trip that never answers: each fails at
    its own deadline, in two watchdog passes, yet both with that round trip's one failure (a
    breaker counts it once, however the callers' deadlines fall)."""
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix)
    batcher = RoundTripBatcher(store._new_connection, connections=2, timeout=0.3, eager_trips=1)
    try:
        await batcher.pipeline([("SET", "k", "v")])
        await asyncio.to_thread(own_redis_server.pause)
        try:
            alone = asyncio.ensure_future(batcher.mget([b"k"]))
            await asyncio.sleep(0.1)
            first = asyncio.ensure_future(batcher.mget([b"k"]))
            await asyncio.sleep(0.05)
            second = asyncio.ensure_future(batcher.mget([b"k"]))
            await asyncio.sleep(0)
            assert (batcher.in_flight, batcher.queued) == (1, 2)  # both wait for the lone one
            results = await asyncio.gather(alone, first, second, return_exceptions=True)
        finally:
            await asyncio.to_thread(own_redis_server.resume)
        assert all(isinstance(r, TimeoutError | RoundTripError) for r in results), results
        shared = [shared_failure(r) for r in results[1:]]
        assert isinstance(shared[0], TimeoutError)
        assert shared[0] is shared[1]
    finally:
        await batcher.aclose()
        await store.aclose()


async def test_replies_are_taken_straight_from_the_hiredis_reader_each_in_its_place(
    store: RedisStore,
) -> None:
    """The batcher's connections skip redis-py's per-reply layers (see replies.py) with the
    redis-py installed here; an error reply is still its own command's answer, in step."""
    batcher = store._batcher
    replies = await batcher.pipeline(
        [("SET", "r:n", "x"), ("INCR", "r:n"), ("GET", "r:n"), ("MGET", "r:n", "r:none")]
    )
    assert replies[0] == b"OK"
    assert isinstance(replies[1], ResponseError)
    assert replies[2:] == [b"x", [b"x", None]]
    assert batcher._connections
    assert all(reads_directly(c) for c in batcher._connections)
    await batcher.pipeline([("DEL", "r:n")])


def hog_the_loop(seconds: float) -> None:
    """Keep this thread busy (CPU, no I/O): the loop cannot poll sockets meanwhile."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def warm_up(store: RedisStore, callers: int) -> None:
    """Store ``k`` and open the connections ``callers`` concurrent gets use; retried, since a
    short command timeout can expire on a loaded machine."""

    async def answered() -> bool:
        try:
            await store.set(NS, "k", b"v", 60)
            got = await asyncio.gather(*(store.get(NS, "k") for _ in range(callers)))
        except StoreError:
            return False
        return got == [b"v"] * callers

    await eventually(answered, within=10, what="the store answers within its timeout")


@pytest.mark.parametrize("callers", [1, 50], ids=["alone", "shared"])
async def test_a_reply_that_arrived_while_the_loop_was_busy_is_not_a_timeout(
    own_redis_server: RedisServer, key_prefix: str, callers: int
) -> None:
    """The process, not Redis, was late: the replies sat in the socket past the deadline. They
    are read before anything is declared timed out (a busy host must not trip the breaker)."""
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix, command_timeout=0.05)
    try:
        await warm_up(store, callers)
        gets = [asyncio.ensure_future(store.get(NS, "k")) for _ in range(callers)]
        await asyncio.sleep(0)  # the callers run: one round trip is sent, a flush scheduled
        await asyncio.sleep(0)  # the flush sends the others' MGET
        hog_the_loop(0.2)  # four timeouts long: the replies arrive meanwhile
        assert await asyncio.gather(*gets) == [b"v"] * callers
    finally:
        await store.aclose()


async def test_a_paused_server_still_times_out_after_the_loop_stalls(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    """The grace given to replies after a stall is a few loop turns, not a new deadline: a
    server that really is silent still fails the call as soon as the loop is back."""
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix, command_timeout=0.05)
    try:
        await warm_up(store, 1)
        await asyncio.to_thread(own_redis_server.pause)
        try:
            get = asyncio.ensure_future(store.get(NS, "k"))
            await asyncio.sleep(0)
            hog_the_loop(0.2)
            back = time.monotonic()
            with pytest.raises(StoreError, match=r"within 0\.05 s") as failed:
                await get
            assert time.monotonic() - back < 0.05
            assert failed.value.stalled  # its breaker will not count it against the server
        finally:
            await asyncio.to_thread(own_redis_server.resume)
    finally:
        await store.aclose()


async def test_the_callers_of_one_timed_out_round_trip_count_once_against_the_breaker(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    """Thirty concurrent gets to a paused server share a couple of round trips, which time
    out: the breaker counts those round trips, not thirty callers, so one slow round trip
    cannot open it alone. Gets that keep timing out one after another still open it."""
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix, command_timeout=0.1)
    guard = GuardedStore(store, CircuitBreaker(name="redis", failure_threshold=5))
    try:
        await warm_up(store, 1)
        await asyncio.to_thread(own_redis_server.pause)
        try:
            trips_before = store._batcher.round_trips
            answers = await asyncio.gather(*(guard.get(NS, f"k{i}") for i in range(30)))
            assert answers == [FAILED] * 30  # every caller fell back
            assert store._batcher.round_trips - trips_before <= 3
            # one failure per silent round trip (the lone first get's, the shared one's),
            # not one per caller
            assert guard.breaker.consecutive_failures <= 2
            assert guard.breaker.state is BreakerState.CLOSED
            for _ in range(10):
                if guard.breaker.state is BreakerState.OPEN:
                    break
                assert await guard.get(NS, "k") is FAILED
            assert guard.breaker.state is BreakerState.OPEN
        finally:
            await asyncio.to_thread(own_redis_server.resume)
    finally:
        await store.aclose()


async def test_a_key_that_cannot_be_encoded_is_a_miss_of_its_own_caller_only(
    store: RedisStore,
) -> None:
    await store.set(NS, "good", b"v", 60)
    results = await asyncio.gather(
        store.get(NS, "good"),
        store.get(NS, "bad\udc80"),
        store.get(NS, "good"),
        return_exceptions=True,
    )
    assert results == [b"v", None, b"v"]


async def test_cache_set_many_and_get_many_take_one_redis_round_trip_each(
    redis_url: str, key_prefix: str, cache_dir: Path
) -> None:
    config = CacheConfig(
        use_redis=True, redis_url=redis_url, key_prefix=key_prefix, cache_dir=cache_dir,
        stores=("memory", "redis"),
        coherence_window=None,  # no channel: the sets share the batcher (no write lane)
    )  # fmt: skip
    async with AsyncToolCache(config) as writer:
        writer_store = writer._layers[0].store
        assert isinstance(writer_store, RedisStore)
        before = writer_store._batcher.round_trips
        await writer.set_many({f"k{i}": i for i in range(100)})
        assert writer_store._batcher.round_trips - before == 1
    async with AsyncToolCache(config) as reader:
        redis_store = reader._layers[0].store
        assert isinstance(redis_store, RedisStore)
        before = redis_store._batcher.round_trips
        got = await reader.get_many([f"k{i}" for i in range(100)] + ["missing"])
        assert got == {f"k{i}": i for i in range(100)}
        assert redis_store._batcher.round_trips - before == 1


async def test_a_hundred_concurrent_cache_gets_with_memory_off_each_see_their_value(
    redis_url: str, key_prefix: str, cache_dir: Path
) -> None:
    config = CacheConfig(
        use_redis=True, redis_url=redis_url, key_prefix=key_prefix, cache_dir=cache_dir,
        stores=("redis",),
    )  # fmt: skip
    async with AsyncToolCache(config) as cache:
        await cache.set_many({f"k{i}": {"i": i} for i in range(100)})
        got = await asyncio.gather(*(cache.get(f"k{i}") for i in range(100)))
        assert got == [{"i": i} for i in range(100)]
        assert cache.stats().overall.hits["redis"] == 100


async def test_batching_connections_use_the_urls_database(
    redis_server: RedisServer, key_prefix: str
) -> None:
    url = f"redis://{redis_server.host}:{redis_server.port}/3"
    store = RedisStore(url=url, key_prefix=key_prefix)
    db3 = Redis.from_url(url, driver_info=None)  # no SETINFO: no metadata stat
    try:
        await asyncio.gather(store.set(NS, "k", b"v", 60), store.set(NS, "j", b"w", 60))
        assert await asyncio.gather(store.get(NS, "k"), store.get(NS, "j")) == [b"v", b"w"]
        assert await db3.get(f"{key_prefix}:{NS}:0:k") == b"v"
    finally:
        await db3.delete(f"{key_prefix}:{NS}:0:k", f"{key_prefix}:{NS}:0:j")
        await db3.aclose()
        await store.aclose()


async def test_with_one_eager_trip_calls_of_later_turns_wait_and_leave_as_one_batch(
    own_redis_server: RedisServer, key_prefix: str
) -> None:
    """Calls that arrive over several turns while a round trip is in flight start no round
    trip of their own: they leave together when it ends (fewer, bigger batches)."""
    store = RedisStore(url=own_redis_server.url, key_prefix=key_prefix)
    batcher = RoundTripBatcher(store._new_connection, connections=4, timeout=5, eager_trips=1)
    try:
        await batcher.pipeline([("SET", "k", "v")])
        await asyncio.to_thread(own_redis_server.pause)
        try:
            gets = [asyncio.ensure_future(batcher.mget([b"k"]))]
            for _ in range(3):  # three more turns, each adding callers
                await asyncio.sleep(0)
                gets += [asyncio.ensure_future(batcher.mget([b"k"])) for _ in range(5)]
            await asyncio.sleep(0)
            assert (batcher.in_flight, batcher.queued) == (1, 15)
            before = batcher.round_trips
        finally:
            await asyncio.to_thread(own_redis_server.resume)
        assert await asyncio.gather(*gets) == [[b"v"]] * 16
        assert batcher.round_trips - before == 1  # the 15 waiting calls: one shared MGET
    finally:
        await batcher.aclose()
        await store.aclose()


async def keyspace_lookups(raw_redis: Redis) -> tuple[int, int, int]:
    """(MGET calls, keys found, keys missed) the server has counted so far."""
    stats = await raw_redis.info("stats")
    return await mget_calls(raw_redis), int(stats["keyspace_hits"]), int(stats["keyspace_misses"])


async def test_pairs_with_one_lead_share_one_mget_that_asks_each_key_once(
    store: RedisStore, raw_redis: Redis, key_prefix: str
) -> None:
    lead, other_lead = f"{key_prefix}:gen".encode(), f"{key_prefix}:other-gen".encode()
    a, b, c = (f"{key_prefix}:{name}".encode() for name in "abc")
    await raw_redis.mset({lead: b"7", a: b"1", b: b"2", c: b"3"})
    batcher = store._batcher
    before = await keyspace_lookups(raw_redis)
    first = asyncio.ensure_future(batcher.mget_pair(lead, b"never-written"))
    await asyncio.sleep(0)  # the lone call is on the wire: the pairs below share the next trip
    assert batcher.in_flight == 1

    got = await asyncio.gather(
        batcher.mget_pair(lead, a),
        batcher.mget_pair(lead, b),
        batcher.mget_pair(other_lead, c),
        batcher.mget_pair(lead, a),  # asked twice in one batch: sent once
    )

    assert await first == [b"7", None]
    assert got == [[b"7", b"1"], [b"7", b"2"], [None, b"3"], [b"7", b"1"]]
    after = await keyspace_lookups(raw_redis)
    # MGETs: the lone one, then one per lead: `lead a b` and `other-gen c`.
    calls, hits, misses = (n - m for n, m in zip(after, before, strict=True))
    assert calls == 3
    assert hits == 1 + 3 + 1  # lead; lead a b; c
    assert misses == 1 + 1  # never-written; other-gen
    await raw_redis.delete(lead, a, b, c)


async def test_an_error_reply_to_one_leads_mget_fails_only_the_pairs_of_that_lead(
    own_redis_server: RedisServer,
) -> None:
    """The server refuses one lead's MGET (an ACL denies its keys); the pairs of the other
    lead in the same round trip get their values, and each refused caller its own error."""
    admin = Redis.from_url(own_redis_server.url, driver_info=None)
    await admin.execute_command("ACL", "SETUSER", "agent", "on", ">pw", "~ok:*", "+@all")
    await admin.mset({"ok:gen": b"1", "ok:a": b"A", "ok:b": b"B"})

    def connect() -> RedisConnection:
        return RedisConnection(
            host="127.0.0.1",
            port=own_redis_server.port,
            username="agent",
            password="pw",
            driver_info=None,
        )

    batcher = RoundTripBatcher(connect, connections=1, timeout=5)
    try:
        first = asyncio.ensure_future(batcher.mget_pair(b"ok:gen", b"ok:a"))
        await asyncio.sleep(0)
        assert batcher.in_flight == 1
        results = await asyncio.gather(
            batcher.mget_pair(b"denied:gen", b"denied:x"),
            batcher.mget_pair(b"ok:gen", b"ok:b"),
            batcher.mget_pair(b"denied:gen", b"denied:y"),
            return_exceptions=True,
        )
        assert await first == [b"1", b"A"]
        refused_x, allowed, refused_y = results
        assert allowed == [b"1", b"B"]
        for refused in (refused_x, refused_y):
            assert isinstance(refused, RoundTripError)
            assert isinstance(refused.__cause__, ResponseError)
            assert "no permissions" in str(refused)
        assert refused_x is not refused_y
        assert shared_failure(refused_x) is shared_failure(refused_y)  # one refusal, counted once
    finally:
        await batcher.aclose()
        await admin.aclose()
