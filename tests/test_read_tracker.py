"""A read that overlaps a write never copies the value it found into memory.

A write puts its value in memory at once and then waits for the slower stores (a full
write-behind queue, a Redis call in flight). If memory loses the new value meanwhile (LRU
eviction, the coherence window, a flush) a read started during the write finds the older
value in the file store; copied into memory, it would be served after the write returned.
Each test holds the slower store's step at a gate (events, no sleeps) and reads in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache
from toolweaver_async._read_tracker import ReadTracker
from toolweaver_async.testing import FakeClock

from ._gates import gate
from .polling import eventually

MakeCache = Callable[..., AsyncToolCache]


def _file_store(cache: AsyncToolCache) -> Any:
    return next(g.store for g in cache._chain.layers if g.name == "file")


async def _read(cache: AsyncToolCache, how: str) -> Any:
    if how == "get":
        return await cache.get("k")
    return (await cache.get_many(["k"])).get("k")


@pytest.mark.parametrize("how", ["get", "get_many"])
@pytest.mark.parametrize("write", ["set", "set_many"])
async def test_a_read_during_a_write_whose_memory_copy_expired_never_outlives_the_write(
    make_cache: MakeCache, clock: FakeClock, how: str, write: str
) -> None:
    cache = make_cache()  # memory + file: memory entries live at most the coherence window
    await cache.set("k", "v1")
    reached, go = gate(_file_store(cache), write)
    if write == "set":
        writing = asyncio.create_task(cache.set("k", "v2"))
    else:
        writing = asyncio.create_task(cache.set_many({"k": "v2"}))
    await reached.wait()  # memory holds v2; the file store still v1
    clock.advance(cache.config.coherence_window or 0)  # memory's copy of v2 expires
    assert await _read(cache, how) in ("v1", "v2")  # overlaps the write: either may be seen
    go.set()
    await writing
    assert await _read(cache, how) == "v2"


async def test_a_read_while_the_writer_waits_for_room_in_the_write_behind_queue(
    make_cache: MakeCache, clock: FakeClock
) -> None:
    """The interleaving traced in bench_failover: the write-behind queue is full, so the file
    store has not taken the write yet and still serves the older entry from disk."""
    cache = make_cache(file_write_behind=True, file_queue_max_entries=1)
    store = _file_store(cache)
    between_batches, go = gate(store, "_keep_bounded_quietly")  # holds the drain after a batch
    await cache.set("k", "v1")
    await between_batches.wait()  # v1 is on disk; the drain takes no new batch
    await cache.set("filler", 0)  # the queue is full
    writing = asyncio.create_task(cache.set("k", "v2"))
    await eventually(lambda: bool(store._room), what="the writer waiting for room")
    clock.advance(cache.config.coherence_window or 0)  # memory's copy of v2 expires
    assert await cache.get("k") in ("v1", "v2")
    go.set()
    await writing
    assert await cache.get("k") == "v2"


@pytest.mark.parametrize("removal", ["delete", "invalidate", "clear"])
async def test_a_read_during_a_removal_never_brings_the_removed_value_back(
    make_cache: MakeCache, removal: str
) -> None:
    cache = make_cache()
    await cache.set("k", "v1")
    reached, go = gate(_file_store(cache), removal)
    if removal == "delete":
        removing = asyncio.create_task(cache.delete("k"))
    elif removal == "invalidate":
        removing = asyncio.create_task(cache.invalidate("default"))
    else:
        removing = asyncio.create_task(cache.clear())
    await reached.wait()  # memory is empty; the file store still holds v1
    assert await cache.get("k") in ("v1", None)
    go.set()
    await removing
    assert await cache.get("k") is None


async def test_a_cancelled_write_still_landing_keeps_reads_from_promoting(
    make_cache: MakeCache,
) -> None:
    """Cancelled mid-write, the write goes on reaching the slower stores in the background;
    until it has, a read of the key finds what it replaces and must not copy that up."""
    # No coherence window (entries trusted until their TTL) and room for one entry in memory.
    cache = make_cache(use_redis=True, coherence_window=None, memory_max_entries=1)
    await cache.set("k", "v1")
    redis = next(g.store for g in cache._chain.layers if g.name == "redis")
    reached, go = asyncio.Event(), asyncio.Event()
    real_set = redis.set

    async def held_set(namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        if key == "k":
            reached.set()
            await go.wait()
        await real_set(namespace, key, data, ttl)

    redis.set = held_set
    writing = asyncio.create_task(cache.set("k", "v2"))
    await reached.wait()  # the file store has v2, Redis still v1
    writing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await writing  # its Redis write goes on in the background
    await cache.set("other", 1)  # evicts k's memory copy
    assert await cache.get("k") in ("v1", "v2")
    go.set()
    while pending := [task for task in cache._background if not task.done()]:
        await asyncio.gather(*pending, return_exceptions=True)
    assert await cache.get("k") == "v2"


def test_the_tracker_forgets_a_key_once_its_reads_and_writes_are_done() -> None:
    tracker = ReadTracker()
    writing = tracker.writing("ns", ("k",))
    token = tracker.begin("ns", "k")
    assert not tracker.still_current(token)  # began while the write was out
    tracker.written(writing)
    tracker.written(writing)  # twice (a cancelled write's callbacks) counts once
    assert not tracker.still_current(token)
    tracker.end("ns", "k", token)
    after = tracker.begin("ns", "k")
    assert tracker.still_current(after)
    tracker.end("ns", "k", after)
    everything = tracker.writing_everything()
    during = tracker.begin("ns", "k")
    tracker.written(everything)
    assert not tracker.still_current(during)
    tracker.end("ns", "k", during)
    assert not tracker._inflight
    assert not tracker._wide
