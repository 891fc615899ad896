"""Entry points of the processes that multi-process tests start (spawned: importable, small)."""

from __future__ import annotations

import asyncio
import os
from multiprocessing.synchronize import Barrier
from pathlib import Path
from queue import Queue
from typing import Any

from redis.asyncio import Redis

from toolweaver_async import AsyncToolCache, CacheConfig


def _config(redis_url: str, key_prefix: str, cache_dir: Path) -> CacheConfig:
    return CacheConfig(
        use_redis=True, redis_url=redis_url, key_prefix=key_prefix, cache_dir=cache_dir
    )


def stampede(
    redis_url: str,
    key_prefix: str,
    cache_dir: Path,
    barrier: Barrier,
    results: Queue[Any],
    callers: int,
) -> None:
    """``callers`` concurrent get_or_set of one missing key, once every process is ready; the
    loader counts its calls in Redis (``<prefix>-loads``)."""
    asyncio.run(_stampede(redis_url, key_prefix, cache_dir, barrier, results, callers))


async def _stampede(
    redis_url: str,
    key_prefix: str,
    cache_dir: Path,
    barrier: Barrier,
    results: Queue[Any],
    callers: int,
) -> None:
    client = Redis.from_url(redis_url)

    async def load() -> dict[str, int]:
        await client.incr(f"{key_prefix}-loads")
        await asyncio.sleep(0.2)
        return {"loaded_by": os.getpid()}

    async with AsyncToolCache(_config(redis_url, key_prefix, cache_dir)) as cache:
        await asyncio.to_thread(barrier.wait, 30)
        values = await asyncio.gather(*(cache.get_or_set("shared", load) for _ in range(callers)))
    await client.aclose()
    results.put(values)


def hold_the_lock_forever(
    redis_url: str, key_prefix: str, cache_dir: Path, lock_ttl: float
) -> None:
    """Start loading ``shared`` under the lock, say so in Redis (``<prefix>-started``), and
    never finish: the test kills this process."""
    asyncio.run(_hold(redis_url, key_prefix, cache_dir, lock_ttl))


async def _hold(redis_url: str, key_prefix: str, cache_dir: Path, lock_ttl: float) -> None:
    client = Redis.from_url(redis_url)

    async def load() -> str:
        await client.set(f"{key_prefix}-started", os.getpid())
        await asyncio.Event().wait()
        return "never"

    async with AsyncToolCache(_config(redis_url, key_prefix, cache_dir)) as cache:
        await cache.get_or_set("shared", load, lock_ttl=lock_ttl)


def miss_a_delete_then_hang(cache_dir: Path, key_prefix: str, results: Queue[Any]) -> None:
    """Write ``k``, delete it while the file breaker is open (the file store misses the
    delete), say so, and hang until killed."""
    asyncio.run(_miss_a_delete(cache_dir, key_prefix, results))


async def _miss_a_delete(cache_dir: Path, key_prefix: str, results: Queue[Any]) -> None:
    config = CacheConfig(
        cache_dir=cache_dir,
        key_prefix=key_prefix,
        stores=("memory", "file"),
        file_write_behind=False,
    )
    async with AsyncToolCache(config) as cache:
        await cache.set("k", "v1")
        cache.breakers()["file"].trip()
        assert await cache.delete("k") is True
        results.put("deleted")
        await asyncio.Event().wait()
