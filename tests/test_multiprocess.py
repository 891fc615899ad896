"""One loader per key across processes sharing one redis-server (spawned processes)."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis import Redis

from toolweaver_async import AsyncToolCache, CacheConfig

from . import _processes

pytestmark = pytest.mark.slow


def test_four_processes_sharing_one_redis_run_the_loader_once(
    redis_url: str, key_prefix: str, cache_dir: Path
) -> None:
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(4)
    results = spawn.Queue()
    workers = [
        spawn.Process(
            target=_processes.stampede,
            args=(redis_url, key_prefix, cache_dir, barrier, results, 50),
        )
        for _ in range(4)
    ]
    for worker in workers:
        worker.start()
    try:
        values = [value for _ in workers for value in results.get(timeout=20)]
    finally:
        for worker in workers:
            worker.join(timeout=10)
            if worker.is_alive():
                worker.kill()
    assert all(w.exitcode == 0 for w in workers)
    client = Redis.from_url(redis_url)
    try:
        assert client.get(f"{key_prefix}-loads") == b"1"
    finally:
        client.close()
    assert len(values) == 200
    assert len({v["loaded_by"] for v in values}) == 1  # everyone got the one load's value


async def test_another_process_loads_after_the_killed_holders_lock_expires(
    redis_url: str, key_prefix: str, cache_dir: Path
) -> None:
    lock_ttl = 0.5
    spawn = multiprocessing.get_context("spawn")
    holder = spawn.Process(
        target=_processes.hold_the_lock_forever,
        args=(redis_url, key_prefix, cache_dir, lock_ttl),
    )
    await asyncio.to_thread(holder.start)  # spawning a process blocks
    client = aioredis.Redis.from_url(redis_url, driver_info=None)  # no SETINFO: no metadata stat
    try:
        deadline = time.monotonic() + 20
        while not await client.exists(f"{key_prefix}-started"):
            assert time.monotonic() < deadline, "the holder never started loading"
            await asyncio.sleep(0.01)
        assert await client.exists(f"{key_prefix}:!lock:default:shared")
        await asyncio.sleep(lock_ttl)  # the live holder keeps extending its lock
        assert await client.exists(f"{key_prefix}:!lock:default:shared")
        os.kill(holder.pid or 0, signal.SIGKILL)
        killed_at = time.monotonic()
        loaded_at: list[float] = []

        async def load() -> str:
            loaded_at.append(time.monotonic())
            return "loaded by the survivor"

        config = CacheConfig(
            use_redis=True, redis_url=redis_url, key_prefix=key_prefix, cache_dir=cache_dir
        )
        async with AsyncToolCache(config) as cache:
            assert await cache.get_or_set("shared", load) == "loaded by the survivor"
        assert len(loaded_at) == 1
        # The lock was last extended at most a third of its ttl before the kill.
        assert lock_ttl * 2 / 3 - 0.05 <= loaded_at[0] - killed_at < lock_ttl + 1.0
    finally:
        await client.aclose()
        holder.kill()
        await asyncio.to_thread(holder.join, 10)
