"""Entry points of the processes that the replay tests start (spawned: importable, small)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from queue import Queue
from typing import Any

from toolweaver_async import AsyncToolCache, CacheConfig


def read_from_redis(
    redis_url: str, key_prefix: str, cache_dir: Path, keys: list[str], results: Queue[Any]
) -> None:
    """Put into ``results`` what another process reads from Redis alone for ``keys``."""
    results.put(asyncio.run(_read(redis_url, key_prefix, cache_dir, keys)))


async def _read(redis_url: str, key_prefix: str, cache_dir: Path, keys: list[str]) -> Any:
    config = CacheConfig(
        use_redis=True,
        redis_url=redis_url,
        key_prefix=key_prefix,
        cache_dir=cache_dir,
        stores=("redis",),
    )
    async with AsyncToolCache(config) as cache:
        return await cache.get_many(keys)
