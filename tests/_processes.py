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


def refused_background_write(cache_dir: Path, key_prefix: str, results: Queue[Any]) -> None:
    """Write-behind under a file-size limit (``RLIMIT_FSIZE``: the kernel refuses a write past
    it with ``EFBIG``, as a full disk or a quota would): an entry larger than the limit is
    refused after its ``set`` returned. Reports what this process then reads and counts."""
    import signal

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG for the write, not death
    results.put(asyncio.run(_refused_background_write(cache_dir, key_prefix)))


async def _refused_background_write(cache_dir: Path, key_prefix: str) -> dict[str, Any]:
    import resource
    import threading

    from .polling import eventually

    config = CacheConfig(
        stores=("file",), cache_dir=cache_dir, key_prefix=key_prefix, file_write_behind=True
    )
    async with AsyncToolCache(config) as cache:

        def landed(count: int) -> bool:
            queue = cache.stats().write_queue
            return queue["entries"] == 0 and queue["flushed"] + queue["failed"] >= count

        await cache.set("k", "old")
        await cache.set("other", "kept")
        await eventually(lambda: landed(2), what="the first writes on disk")
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        resource.setrlimit(resource.RLIMIT_FSIZE, (16 * 1024, hard))
        try:
            await cache.set("k", "new" * 20_000)  # ~60 KB: returns at once, refused behind
            await eventually(lambda: landed(3), what="the refused write reported")
            # A refused write of a key written again meanwhile: the newer write decides.
            store = next(s for s in cache._chain.stores if s.name == "file")
            release = threading.Event()
            store._lane_here().run(release.wait, 10)  # type: ignore[attr-defined]
            await cache.set("k2", "big" * 20_000)
            await eventually(lambda: cache.stats().write_queue["entries"] == 0, what="taken")
            await cache.set("k2", "small")  # queued while the refused one is on its way
            release.set()
            await eventually(lambda: landed(5), what="both writes of k2 done")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        health = await cache.health_check()
        return {
            "k": await cache.get("k"),
            "k2": await cache.get("k2"),
            "other": await cache.get("other"),
            "errors": cache.stats().overall.errors["file"],
            "namespace_errors": cache.stats().namespaces["default"].errors["file"],
            "failed": cache.stats().write_queue["failed"],
            "health_errors": health["stores"]["file"]["errors"],
            "health_failed": health["stores"]["file"]["write_queue"]["failed"],
        }


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
