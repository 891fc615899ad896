"""The chains every framework adapter is tested on, and caches built on them for a test."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from toolweaver_async import AsyncToolCache, CacheConfig

# memory+file (the embedded default), memory+Redis+file, and Redis alone
CHAINS: dict[str, dict[str, Any]] = {
    "memory+file": {"use_redis": False},
    "memory+redis+file": {"use_redis": True},
    "redis": {"use_redis": True, "stores": ("redis",)},
}


def make_chain_cache(
    chain: str, redis_url: str, folder: Path, *, clock: Any = None, **changes: Any
) -> AsyncToolCache:
    """A new cache on ``chain`` with a key prefix and folder of its own (so it starts empty)."""
    settings: dict[str, Any] = {
        "cache_dir": folder / "cache",
        "key_prefix": "a" + uuid.uuid4().hex[:12],
        "redis_url": redis_url,
        **CHAINS[chain],
        **changes,
    }
    return AsyncToolCache(CacheConfig(**settings), clock=clock)
