"""A cache in a process of its own, driven over stdin/stdout, one JSON object per line.

    python -m tests._coherence_peer

Requests: ``{"op": "open", "config": {...CacheConfig fields...}}`` (closes any previous cache),
then ``get``, ``set``, ``set_many``, ``delete``, ``invalidate``, ``clear``, ``health``, ``close``.
Every answer carries the cache's hits per store and coherence counters, so a test can tell a
memory hit from a read through. The event loop keeps running between requests (stdin is read in
a thread), so the invalidation channel works as it would in a real service.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from toolweaver_async import AsyncToolCache, CacheConfig


async def _answer(cache: AsyncToolCache, request: dict[str, Any]) -> dict[str, Any]:
    op = request["op"]
    namespace = request.get("namespace", "default")
    value: Any = None
    if op == "get":
        value = await cache.get(request["key"], namespace=namespace)
    elif op == "set":
        await cache.set(request["key"], request["value"], namespace=namespace)
    elif op == "set_many":
        await cache.set_many(request["values"], namespace=namespace)
    elif op == "delete":
        value = await cache.delete(request["key"], namespace=namespace)
    elif op == "invalidate":
        await cache.invalidate(namespace)
    elif op == "clear":
        await cache.clear()
    elif op == "health":
        value = (await cache.health_check())["coherence"]
    else:
        raise ValueError(f"unknown op {op!r}")
    stats = cache.stats()
    return {
        "value": value,
        "hits": dict(stats.overall.hits),
        "coherence": dict(stats.coherence),
    }


async def main() -> None:
    cache: AsyncToolCache | None = None
    try:
        while True:
            line = await asyncio.to_thread(sys.stdin.readline)
            if not line:
                return
            request = json.loads(line)
            try:
                if request["op"] == "open":
                    if cache is not None:
                        await cache.aclose()
                    settings = dict(request["config"])
                    settings["cache_dir"] = Path(settings["cache_dir"])
                    cache = AsyncToolCache(CacheConfig(**settings))
                    await cache.connect()
                    answer: dict[str, Any] = {"value": None}
                elif request["op"] == "close":
                    return
                else:
                    assert cache is not None, "open a cache first"
                    answer = await _answer(cache, request)
            except Exception as exc:
                answer = {"error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
    finally:
        if cache is not None:
            await cache.aclose()


if __name__ == "__main__":
    asyncio.run(main())
