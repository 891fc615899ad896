"""File writes behind the caller: read-your-writes, ordering, backpressure, draining, crashes.

The file store's worker is held by a gate step (a blocking step in its lane that the test
releases), so "queued but not on disk yet" is a state the tests control, not a race.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import _processes
from tests.polling import eventually
from toolweaver_async import AsyncToolCache, BreakerState, CacheConfig
from toolweaver_async.stores import file_behind
from toolweaver_async.stores.file import FileStore
from toolweaver_async.stores.file_behind import WriteBehindFileStore
from toolweaver_async.testing import FakeClock, RedisServer


def file_store_of(cache: AsyncToolCache) -> FileStore:
    return next(s for s in cache._chain.stores if s.name == "file")  # type: ignore[return-value]


def hold_worker(store: FileStore) -> threading.Event:
    """Block the store's worker thread until the returned event is set."""
    release = threading.Event()
    store._lane_here().run(release.wait, 10)
    return release


async def read_disk(cache_dir: Path, key_prefix: str, namespace: str, key: str) -> bytes | None:
    # the entries expire by the tests' fake clock, which starts in 2023
    store = FileStore(root=cache_dir, key_prefix=key_prefix, clock=FakeClock())
    try:
        return await store.get(namespace, key)
    finally:
        await store.aclose()


@pytest.fixture
def file_only(make_cache: Callable[..., AsyncToolCache]) -> Callable[..., AsyncToolCache]:
    def make(**changes: Any) -> AsyncToolCache:
        # a held worker must not trip the lane's deadline while the test looks
        changes.setdefault("file_timeout", 30.0)
        changes.setdefault("file_write_behind", True)
        return make_cache(stores=("file",), **changes)

    return make


async def test_set_returns_before_disk_and_reads_see_the_queued_write(
    file_only: Callable[..., AsyncToolCache], cache_dir: Path, key_prefix: str
) -> None:
    cache = file_only()
    store = file_store_of(cache)
    assert isinstance(store, WriteBehindFileStore)
    release = hold_worker(store)
    try:
        # with write-through, this set would wait behind the held worker
        await asyncio.wait_for(cache.set("k", {"n": 1}), 2)
        await cache.set_many({"a": "A", "b": "B"})
        assert await cache.get("k") == {"n": 1}
        assert await cache.get_many(["k", "a", "b"]) == {"k": {"n": 1}, "a": "A", "b": "B"}
        listing = cache.keys().__aiter__()
        first = [await asyncio.wait_for(listing.__anext__(), 2) for _ in range(3)]
        assert sorted(first) == ["a", "b", "k"]
        assert await read_disk(cache_dir, key_prefix, "default", "k") is None
    finally:
        release.set()
    await cache.aclose()
    assert await read_disk(cache_dir, key_prefix, "default", "k") is not None
    assert await read_disk(cache_dir, key_prefix, "default", "b") is not None


async def test_read_your_writes_with_redis_and_file_and_no_memory(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    cache = make_cache(
        stores=("redis", "file"), use_redis=True, file_timeout=30.0, file_write_behind=True
    )
    release = hold_worker(file_store_of(cache))
    try:
        for n in range(5):
            await asyncio.wait_for(cache.set("k", n), 2)
            assert await cache.get("k") == n
    finally:
        release.set()


async def test_read_your_writes_from_the_queue_with_redis_down_and_no_memory(
    make_cache: Callable[..., AsyncToolCache], free_port: Callable[[], int]
) -> None:
    """Redis unreachable (a closed local port): the file queue is the only copy a read can
    find, and it answers before the held worker has written anything."""
    cache = make_cache(
        stores=("redis", "file"),
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        use_redis=True,
        file_timeout=30.0,
        file_write_behind=True,
    )
    await cache.connect()  # the dead server is found: Redis's breaker starts open
    release = hold_worker(file_store_of(cache))
    try:
        for n in range(5):
            await asyncio.wait_for(cache.set("k", {"n": n}), 2)
            assert await cache.get("k") == {"n": n}
        assert await cache.get_many(["k"]) == {"k": {"n": 4}}
        assert cache.stats().overall.hits["file"] == 6
    finally:
        release.set()


async def test_a_queue_full_by_bytes_makes_writers_wait_and_drops_nothing(
    file_only: Callable[..., AsyncToolCache],
) -> None:
    """The byte bound holds on its own: two 40 KB entries fill a 100 KB queue that could
    take 2 000 entries, and the third writer waits until a batch takes them."""
    cache = file_only(file_queue_max_bytes=100_000)
    store = file_store_of(cache)
    assert isinstance(store, WriteBehindFileStore)
    release = hold_worker(store)
    await cache.set("first", "x")
    await eventually(lambda: store.queued_writes["entries"] == 0, what="first batch taken")
    big = "b" * 40_000
    await cache.set("a", big)
    await cache.set("b", big)
    blocked = asyncio.ensure_future(cache.set("c", big))
    await eventually(lambda: store.queued_writes["waits"] >= 1, what="writer held")
    assert not blocked.done()
    assert cache.stats().write_queue["entries"] == 2
    assert cache.stats().write_queue["bytes"] <= 100_000
    release.set()
    await asyncio.wait_for(blocked, 5)
    await cache.aclose()
    reopened = file_only()
    assert await reopened.get_many(["first", "a", "b", "c"]) == {
        "first": "x",
        "a": big,
        "b": big,
        "c": big,
    }


async def test_a_later_write_of_a_queued_key_replaces_it(
    file_only: Callable[..., AsyncToolCache],
) -> None:
    cache = file_only()
    store = file_store_of(cache)
    assert isinstance(store, WriteBehindFileStore)
    release = hold_worker(store)
    try:
        for n in range(100):
            await cache.set("hot", n)
        assert store.queued_writes["entries"] <= 1
        assert store.queued_writes["coalesced"] >= 98
        assert await cache.get("hot") == 99
    finally:
        release.set()
    await cache.aclose()
    reopened = file_only()
    assert await reopened.get("hot") == 99


@pytest.mark.parametrize("how", ["delete", "invalidate", "clear"])
@pytest.mark.parametrize("where", ["queued", "in_flight"])
async def test_delete_invalidate_clear_are_never_overtaken_by_a_queued_write(
    file_only: Callable[..., AsyncToolCache], how: str, where: str
) -> None:
    cache = file_only()
    store = file_store_of(cache)
    assert isinstance(store, WriteBehindFileStore)
    await cache.set("k", "old")
    await cache.aclose()
    cache = file_only()
    store = file_store_of(cache)
    assert isinstance(store, WriteBehindFileStore)
    release = hold_worker(store)
    await cache.set("k", "new")
    if where == "in_flight":  # the batch holding it waits behind the held worker
        await eventually(lambda: store.queued_writes["entries"] == 0, what="batch taken")
    else:
        await cache.set("other", 1)  # the first batch takes this one ...
        await eventually(lambda: store.queued_writes["entries"] == 0, what="batch taken")
        await cache.set("k", "newer")  # ... and this one stays queued
        assert store.queued_writes["entries"] == 1
    removal = asyncio.ensure_future(
        cache.delete("k")
        if how == "delete"
        else cache.invalidate("default")
        if how == "invalidate"
        else cache.clear()
    )
    # Give a removal that would not wait for the held batch time to finish first (and so be
    # overtaken by it); a correct one is still waiting when the worker is let go.
    await asyncio.wait([removal], timeout=0.1)
    release.set()
    await removal
    await cache.aclose()
    reopened = file_only()
    assert await reopened.get("k") is None


async def test_a_full_queue_makes_writers_wait_and_drops_nothing(
    file_only: Callable[..., AsyncToolCache],
) -> None:
    cache = file_only(file_queue_max_entries=2)
    store = file_store_of(cache)
    assert isinstance(store, WriteBehindFileStore)
    release = hold_worker(store)
    await cache.set("first", 0)
    await eventually(lambda: store.queued_writes["entries"] == 0, what="first batch taken")
    await cache.set("a", 1)
    await cache.set("b", 2)
    await cache.set("a", 11)  # a rewrite of a queued key takes no new room
    blocked = asyncio.ensure_future(cache.set("c", 3))
    await eventually(lambda: store.queued_writes["waits"] >= 1, what="writer held")
    assert not blocked.done()
    stats = cache.stats().write_queue
    assert stats["entries"] == 2
    assert stats["bytes"] > 0
    release.set()
    await asyncio.wait_for(blocked, 5)
    health = await cache.health_check()
    assert "entries" in health["stores"]["file"]["write_queue"]
    await cache.aclose()
    reopened = file_only()
    assert await reopened.get_many(["first", "a", "b", "c"]) == {
        "first": 0,
        "a": 11,
        "b": 2,
        "c": 3,
    }


async def test_aclose_writes_everything_queued(
    file_only: Callable[..., AsyncToolCache],
) -> None:
    cache = file_only()
    store = file_store_of(cache)
    release = hold_worker(store)
    await cache.set_many({f"k{i}": i for i in range(300)})
    closing = asyncio.ensure_future(cache.aclose())
    await asyncio.sleep(0)
    release.set()
    await closing
    reopened = file_only()
    found = await reopened.get_many([f"k{i}" for i in range(300)])
    assert found == {f"k{i}": i for i in range(300)}


async def test_a_batch_slower_than_the_file_deadline_but_progressing_loses_nothing(
    file_only: Callable[..., AsyncToolCache], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loaded machine: the worker waits for the GIL after every system call, so each write
    takes 30 ms and a batch of 12 takes longer than the 0.25 s deadline while progressing.
    Cut short as a whole, the batch was counted as refused and agents read misses for values
    they had just written."""
    write_entry = file_behind._write_entry

    def slow_write(*args: Any) -> int | None:
        time.sleep(0.03)
        return write_entry(*args)

    monkeypatch.setattr(file_behind, "_write_entry", slow_write)
    cache = file_only(file_timeout=0.25)
    store = file_store_of(cache)
    assert isinstance(store, WriteBehindFileStore)
    written = {f"k{i}": i for i in range(12)}
    await cache.set_many(written)
    await eventually(
        lambda: store.queued_writes["flushed"] + store.queued_writes["failed"] == 12,
        within=5,
        what="the batch written",
    )
    assert store.queued_writes["failed"] == 0
    assert cache.stats().overall.errors["file"] == 0
    assert await cache.get_many(list(written)) == written


async def read_disk_many(cache_dir: Path, key_prefix: str, keys: list[str]) -> dict[str, Any]:
    """What a fresh instance (another process, or this one restarted) reads from the files."""
    config = CacheConfig(
        stores=("file",), cache_dir=cache_dir, key_prefix=key_prefix, file_write_behind=False
    )
    async with AsyncToolCache(config, clock=FakeClock()) as reader:
        return await reader.get_many(keys)


async def test_a_step_stuck_past_the_deadline_loses_no_queued_write(
    file_only: Callable[..., AsyncToolCache], cache_dir: Path, key_prefix: str
) -> None:
    """A step stuck past ``file_timeout`` (a loaded machine, a slow disk for a moment) stalls
    the lane, which releases the batch queued behind it unwritten and fails every step asked
    while it is stuck. Those writes were reported refused, and every later batch was handed
    to the stalled lane and failed at once: the whole queue gone in milliseconds, each key a
    miss from then on although its caller had been told it succeeded (what agents read in
    the failover tests with write-behind on). They wait for the stuck step and are written;
    a key written again meanwhile keeps its newer value."""
    cache = file_only(file_timeout=0.2)
    store = file_store_of(cache)
    assert isinstance(store, WriteBehindFileStore)
    release = threading.Event()
    stuck = store._lane_here().run(release.wait, 10)
    stuck.add_done_callback(lambda _: release.set())  # the stall ends as soon as it begins
    stuck.add_done_callback(lambda done: done.exception())  # a TimeoutError, as expected
    written: dict[str, Any] = {f"k{i}": i for i in range(150)}  # three batches
    await cache.set_many(written)
    await eventually(
        lambda: store.queued_writes["entries"] == 150 - 64, what="the first batch taken"
    )
    await cache.set("k0", "again")  # while its older write waits behind the stuck step
    written["k0"] = "again"
    await eventually(
        lambda: store.queued_writes["entries"] == 0 and store._drain_task is None,
        what="the queue drained",
    )
    assert await cache.get_many(list(written)) == written
    assert await read_disk_many(cache_dir, key_prefix, list(written)) == written
    assert store.queued_writes["failed"] == 0
    assert cache.stats().overall.errors["file"] == 0
    assert store.queued_writes["retried"] == 63  # k0's older write is not written again


async def test_a_disk_hung_for_good_fails_queued_writes_after_one_more_deadline(
    file_only: Callable[..., AsyncToolCache],
) -> None:
    """The wait for a stuck step is bounded: on a hung disk, queued writes are reported
    refused (counted, never an older value served) about one deadline after the stall, as
    before, so neither writers waiting for room nor aclose hang on it."""
    cache = file_only(file_timeout=0.1)
    store = file_store_of(cache)
    assert isinstance(store, WriteBehindFileStore)
    await cache.set("k", "old")
    await eventually(lambda: store.queued_writes["flushed"] == 1, what="the first write")
    release = threading.Event()
    stuck = store._lane_here().run(release.wait, 10)
    try:
        await asyncio.wait_for(cache.set("k", "new"), 1)
        await eventually(lambda: store.queued_writes["failed"] == 1, within=2, what="refused")
        assert cache.stats().overall.errors["file"] == 1
        assert await cache.get("k") is None  # never "old"
    finally:
        release.set()
    with pytest.raises(TimeoutError):
        await stuck


@pytest.mark.slow
def test_a_write_the_disk_refuses_behind_the_caller_is_counted_and_never_serves_older(
    cache_dir: Path, key_prefix: str
) -> None:
    """A real refusal in a real process (a file-size limit: the kernel answers EFBIG, as for a
    full disk). The set returned before the disk refused it: the refusal is counted in
    stats() and health_check(), the older entry is never served again (not here, not by
    another process), and a refused write of a key written again meanwhile does not hide
    the newer write."""
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    writer = spawn.Process(
        target=_processes.refused_background_write, args=(cache_dir, key_prefix, results)
    )
    writer.start()
    try:
        seen = results.get(timeout=60)
    finally:
        writer.join(30)
    assert writer.exitcode == 0
    assert seen["k"] is None  # never "old"
    assert seen["k2"] == "small"
    assert seen["other"] == "kept"
    assert seen["failed"] == 2
    assert seen["errors"] == seen["namespace_errors"] == 2
    assert seen["health_errors"] == 2
    assert seen["health_failed"] == 2

    async def read_again() -> dict[str, Any]:
        config = CacheConfig(stores=("file",), cache_dir=cache_dir, key_prefix=key_prefix)
        async with AsyncToolCache(config) as reader:
            return await reader.get_many(["k", "k2", "other"])

    # another process (or this one restarted) has no mark: the older entry itself is gone
    assert asyncio.run(read_again()) == {"k2": "small", "other": "kept"}


async def test_write_through_when_write_behind_is_off(
    file_only: Callable[..., AsyncToolCache], cache_dir: Path, key_prefix: str
) -> None:
    cache = file_only(file_write_behind=False)  # as CacheConfig(file_write_behind=False)
    store = file_store_of(cache)
    assert not isinstance(store, WriteBehindFileStore)
    await cache.set("k", 1)
    assert await read_disk(cache_dir, key_prefix, "default", "k") is not None


_WRITER = """
import asyncio, sys
from pathlib import Path
from toolweaver_async import AsyncToolCache, CacheConfig

async def main():
    config = CacheConfig(
        stores=("file",), cache_dir=Path(sys.argv[1]), key_prefix=sys.argv[2],
        file_write_behind=True,
    )
    async with AsyncToolCache(config) as cache:
        n = 0
        while True:
            await cache.set(f"k{n}", {"n": n, "pad": "x" * 2000})
            sys.stdout.write(f"{n}\\n")
            sys.stdout.flush()
            n += 1

asyncio.run(main())
"""


@pytest.mark.slow
def test_sigkill_of_a_writer_loses_only_the_last_queued_writes_and_tears_nothing(
    cache_dir: Path, key_prefix: str
) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(cache_dir), key_prefix],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    acked = -1
    try:
        for line in proc.stdout:
            acked = int(line)
            if acked >= 3000:
                break
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert acked >= 3000

    async def read_all() -> tuple[list[bytes | None], int]:
        store = FileStore(root=cache_dir, key_prefix=key_prefix)
        try:
            found = await store.get_many("default", [f"k{n}" for n in range(acked + 1)])
        finally:
            await store.aclose()
        return found, store.corrupt_removed

    found, corrupt = asyncio.run(read_all())
    assert corrupt == 0  # no torn or half-written entry anywhere
    missing = [n for n, data in enumerate(found) if data is None]
    # Only the newest writes may be missing: those still queued, or in the batch being written,
    # when the process died.
    bound = CacheConfig().file_queue_max_entries + 64
    assert all(n > acked - bound for n in missing)
    assert len(missing) <= bound


def test_config_rejects_a_queue_bound_below_one() -> None:
    from toolweaver_async.errors import ConfigError

    with pytest.raises(ConfigError):
        CacheConfig(file_queue_max_entries=0)


@pytest.mark.slow
@pytest.mark.allow_blocking(reason="kills and restarts redis-server, a subprocess")
async def test_redis_killed_under_50_agents_then_restarted_loses_nothing_and_serves_nothing_stale(
    own_redis_server: RedisServer, tmp_path: Path, key_prefix: str
) -> None:
    config = CacheConfig(
        use_redis=True,
        redis_url=own_redis_server.url,
        cache_dir=tmp_path,
        key_prefix=key_prefix,
        file_write_behind=True,
    )
    latest: dict[str, int] = {}

    async def agents(cache: AsyncToolCache, rounds: int, base: int) -> None:
        async def agent(a: int) -> None:
            for n in range(rounds):
                key = f"agent{a}:k{n % 20}"
                await cache.set(key, base + n, namespace="results")
                latest[key] = base + n
                assert await cache.get(key, namespace="results") == base + n

        await asyncio.gather(*(agent(a) for a in range(50)))

    async with AsyncToolCache(config) as cache:
        await agents(cache, 20, 0)
        own_redis_server.kill()
        await agents(cache, 20, 1000)  # every key rewritten while Redis is down
        own_redis_server.restart()  # empty: --save ''
        await agents(cache, 10, 2000)  # half of them again
        redis = next(layer for layer in cache._chain.layers if layer.name == "redis")
        assert redis.journal is not None

        def recovered() -> bool:
            return (
                redis.breaker.state is BreakerState.CLOSED
                and redis.journal is not None
                and redis.journal.describe()["entries"] == 0
            )

        await eventually(recovered, within=30, what="journal replayed onto the restarted Redis")
    for stores in (("redis",), ("file",)):
        async with AsyncToolCache(dataclasses.replace(config, stores=stores)) as reader:
            found = await reader.get_many(list(latest), namespace="results")
        assert found == latest, stores


async def test_the_file_queue_keeps_callers_order_when_redis_answers_out_of_order(
    make_cache: Callable[..., AsyncToolCache], own_redis_server: RedisServer
) -> None:
    """At an outage, a first set's Redis call waits out its timeout while a later set of the
    same key is answered at once by the open breaker (journaled). The file store's queue must
    keep the callers' order: the later value, never the one whose Redis call ended last."""
    cache = make_cache(
        stores=("redis", "file"),
        use_redis=True,
        redis_url=own_redis_server.url,
        redis_command_timeout=0.2,
        file_write_behind=True,
    )
    await cache.set("k", "before")
    await asyncio.to_thread(own_redis_server.pause)
    try:
        first = asyncio.ensure_future(cache.set("k", "first"))
        await asyncio.sleep(0)  # its Redis write is on the wire, waiting for the paused server
        redis = next(layer for layer in cache._layers if layer.name == "redis")
        redis.breaker.trip()  # the outage is known: the next write is journaled at once
        await cache.set("k", "second")
        await first
    finally:
        await asyncio.to_thread(own_redis_server.resume)
    await cache.aclose()  # drains the file queue
    file_only = make_cache(stores=("file",))
    assert await file_only.get("k") == "second"
