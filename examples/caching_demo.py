"""The basics of AsyncToolCache, after ToolWeaver's samples/07-caching-optimization/caching_demo.py.

set/get with a TTL, misses and defaults, namespaces and their TTLs, typed values, the tool-shaped
helpers (catalog, search results, embeddings, tool metadata, tool results), batches, delete and
the statistics the cache keeps. Each run uses its own key prefix and removes its entries at the end.

    USE_REDIS=false python examples/caching_demo.py      # memory + file (the default)
    USE_REDIS=true  python examples/caching_demo.py      # memory + Redis + file, Redis at REDIS_URL
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from typing import Any

import msgspec

from toolweaver_async import AsyncToolCache

NAMESPACES = ("default", "catalog", "search", "embeddings", "tools", "results")


class Receipt(msgspec.Struct, frozen=True):
    """A typed value: cached as msgpack, decoded back into a Receipt with ``type=Receipt``."""

    merchant: str
    total: float
    items: list[str]


def section(title: str) -> None:
    print(f"\n{title}\n{'-' * 72}")


def human(seconds: float | None) -> str:
    """3600 -> '1 h', 604800 -> '7 d'; a day stays '24 h', as ToolWeaver printed it."""
    if seconds is None:
        return "never expires"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:g} d"
    if seconds >= 3600:
        return f"{seconds / 3600:g} h"
    if seconds >= 60:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


async def basics(cache: AsyncToolCache) -> None:
    section("1. set / get with a TTL")
    await cache.set("user:123", {"name": "Alice", "role": "admin"}, ttl=60)
    await cache.set("config:app", {"version": "1.0", "debug": False})  # namespace policy: 1 h
    print(f"  GET user:123   -> {await cache.get('user:123')}")
    print(f"  GET config:app -> {await cache.get('config:app')}")

    section("2. A miss")
    print(f"  GET nonexistent              -> {await cache.get('nonexistent')}")
    fallback = await cache.get("nonexistent", default={"name": "guest"})
    print(f"  GET nonexistent, default=... -> {fallback}")


async def namespaces(cache: AsyncToolCache) -> None:
    section("3. Namespaces and their default TTLs")
    for name in NAMESPACES:
        print(f"  {name:<11} {human(cache.config.policy(name).ttl)}")
    await cache.set("q:receipts", ["process_receipt"], namespace="search")
    print(f"  'q:receipts' in search  -> {await cache.get('q:receipts', namespace='search')}")
    print(f"  'q:receipts' in default -> {await cache.get('q:receipts')}  (namespaces are apart)")


async def typed_values(cache: AsyncToolCache) -> None:
    section("4. Typed values")
    receipt = Receipt(merchant="Corner Cafe", total=12.49, items=["Coffee", "Sandwich"])
    await cache.set("receipt:42", receipt)
    typed = await cache.get("receipt:42", type=Receipt)
    plain = await cache.get("receipt:42")
    print(f"  type=Receipt  -> {typed!r}")
    print(f"  no type       -> {plain!r}")
    wrong = await cache.get("receipt:42", type=list[float])
    print(f"  type=list[float] -> {wrong}  (does not fit: a miss, the entry stays)")


async def tool_helpers(cache: AsyncToolCache) -> None:
    section("5. Tool-shaped helpers (ToolWeaver's ToolCache, awaited)")
    catalog: dict[str, Any] = {
        "version": "2.0",
        "tools": {
            "process_receipt": {"description": "Extract text from a receipt image"},
            "categorize_expense": {"description": "Categorize an expense"},
        },
    }
    search_results = [{"tool": "process_receipt", "score": 0.95}]
    embedding = [0.1, 0.2, 0.3] * 128

    await cache.set_catalog("abc123def456", catalog)
    await cache.set_search_results("search_receipts_123", "v2", 10, search_results)
    await cache.set_embedding("text_abc123", "ada-002", embedding)
    await cache.set_tool("process_receipt", "1.0", {"name": "process_receipt", "version": "1.0"})
    await cache.set_result("process_receipt", {"image_uri": "receipt_1.jpg"}, {"total": 45.67})

    cat = await cache.get_catalog("abc123def456")
    hits = await cache.get_search_results("search_receipts_123", "v2", 10)
    emb = await cache.get_embedding("text_abc123", "ada-002")
    tool = await cache.get_tool("process_receipt", "1.0")
    result = await cache.get_result("process_receipt", {"image_uri": "receipt_1.jpg"})
    print(f"  catalog    -> {len(cat['tools'])} tools, version {cat['version']}")
    print(f"  search     -> {hits}")
    print(f"  embedding  -> {len(emb or [])}-dim vector, starts {(emb or [])[:3]}")
    print(f"  tool       -> {tool}")
    print(f"  result     -> {result}")


async def batches_and_delete(cache: AsyncToolCache) -> None:
    section("6. set_many / get_many / delete")
    await cache.set_many({"user:1": {"name": "Bob"}, "user:2": {"name": "Carol"}}, ttl=60)
    found = await cache.get_many(["user:1", "user:2", "user:404"])
    print(f"  get_many user:1, user:2, user:404 -> {found}  (hits only)")
    print(f"  delete user:1 -> {await cache.delete('user:1')}")
    print(f"  delete user:1 -> {await cache.delete('user:1')}  (already gone)")
    print(f"  GET user:1    -> {await cache.get('user:1')}")


def print_stats(cache: AsyncToolCache) -> None:
    section("7. Statistics")
    overall = cache.stats().overall
    print(f"  hits per store:  {dict(overall.hits)}")
    print(f"  misses:          {overall.misses}")
    print(f"  sets:            {overall.sets}")
    print(f"  type mismatches: {overall.type_mismatches}")
    print(f"  hit rate:        {overall.hit_rate:.0%}")


async def main() -> None:
    print("=" * 72)
    print("toolweaver-async: caching basics")
    print("=" * 72)
    with tempfile.TemporaryDirectory() as scratch:
        overrides: dict[str, Any] = {"key_prefix": f"demo-{uuid.uuid4().hex[:8]}"}
        if not os.environ.get("TOOLWEAVER_CACHE_DIR"):
            overrides["cache_dir"] = scratch
        async with AsyncToolCache.from_env(**overrides) as cache:
            print(f"stores in the chain: {' -> '.join(cache.config.enabled_stores)}")
            await basics(cache)
            await namespaces(cache)
            await typed_values(cache)
            await tool_helpers(cache)
            await batches_and_delete(cache)
            print_stats(cache)
            await cache.clear()
    print("\nDone: every entry of this run was removed with cache.clear().")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
