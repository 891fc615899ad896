"""A value promoted from the file store into Redis never outlives a delete or invalidate made
meanwhile by another process (here another cache instance on the same Redis and folder).

Each test holds one step of the race at a gate (events, no sleeps): the promoting reader's
``SET NX``, and in the second test the deleter's file step as well."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache

from ._gates import gate

MakeCache = Callable[..., AsyncToolCache]


def _store(cache: AsyncToolCache, name: str) -> Any:
    return next(g.store for g in cache._chain.layers if g.name == name)


async def _settled(cache: AsyncToolCache) -> None:
    """Every background task of ``cache`` (promotions and their checks) has finished."""
    while pending := [task for task in cache._background if not task.done()]:
        await asyncio.gather(*pending, return_exceptions=True)


@pytest.fixture
def pair(make_cache: MakeCache) -> tuple[AsyncToolCache, AsyncToolCache, AsyncToolCache]:
    """Reader and deleter ("two processes") on one Redis and folder, and a Redis-only view."""
    both = {"use_redis": True, "stores": ("redis", "file")}
    return make_cache(**both), make_cache(**both), make_cache(use_redis=True, stores=("redis",))


@pytest.mark.parametrize("removal", ["delete", "invalidate"])
async def test_a_promotion_landing_after_another_process_removed_the_key_is_taken_back(
    pair: tuple[AsyncToolCache, AsyncToolCache, AsyncToolCache], removal: str
) -> None:
    reader, deleter, redis_only = pair
    await reader.set("k", "v1")
    await _store(reader, "redis").delete("default", "k")  # Redis lost it: the file has it
    promoting, go = gate(_store(reader, "redis"), "add")
    assert await reader.get("k") == "v1"  # found in the file store; its copy-up waits
    await promoting.wait()
    if removal == "delete":
        assert await deleter.delete("k") is True
    else:
        await deleter.invalidate("default")
    go.set()  # the copy lands after the whole removal
    await _settled(reader)
    assert await redis_only.get("k") is None
    assert await deleter.get("k") is None


async def test_a_promotion_landing_between_the_deleters_redis_and_file_steps_is_removed(
    pair: tuple[AsyncToolCache, AsyncToolCache, AsyncToolCache],
) -> None:
    reader, deleter, redis_only = pair
    await reader.set("k", "v1")
    await _store(reader, "redis").delete("default", "k")
    promoting, go = gate(_store(reader, "redis"), "add")
    file_step, file_go = gate(_store(deleter, "file"), "delete")
    redis_step_done = asyncio.Event()
    deleter_redis = _store(deleter, "redis")
    real_delete = deleter_redis.delete

    async def delete_and_say(*args: Any) -> Any:
        try:
            return await real_delete(*args)
        finally:
            redis_step_done.set()

    deleter_redis.delete = delete_and_say
    assert await reader.get("k") == "v1"
    await promoting.wait()
    removal = asyncio.ensure_future(deleter.delete("k"))
    await file_step.wait()
    await redis_step_done.wait()  # Redis had nothing to delete; the file still holds v1
    go.set()
    await _settled(reader)  # the copy landed, and its check still found v1 in the file
    assert await redis_only.get("k") == "v1"
    file_go.set()
    assert await removal is True
    assert await redis_only.get("k") is None  # the deleter's second pass removed the copy
    assert await deleter.get("k") is None
