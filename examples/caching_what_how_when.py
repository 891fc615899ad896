"""WHAT is cached, HOW, and WHEN, after ToolWeaver's samples/07-caching-optimization/caching_what_how_when.py.

WHAT: the five kinds of agent work and the key each tool-shaped helper builds. HOW: the msgspec
envelope (no pickle), the chain of stores and the files written under the cache folder, and what
bad input does. WHEN: the TTL of each namespace, invalidation after a catalog change, and a miss.

    USE_REDIS=false python examples/caching_what_how_when.py      # memory + file (the default)
    USE_REDIS=true  python examples/caching_what_how_when.py      # memory + Redis + file
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from toolweaver_async import (
    AsyncToolCache,
    CacheConfig,
    InvalidTTLError,
    SerializationError,
    stable_hash,
)
from toolweaver_async.keys import catalog_key, embedding_key, result_key, search_key, tool_key
from toolweaver_async.serialization import EntryCodec, Envelope

MODEL = "text-embedding-ada-002"
CATALOG: dict[str, Any] = {
    "version": "2.0",
    "tools": {
        "process_receipt": {"description": "Read a receipt image", "domain": "receipts"},
        "categorize_expense": {"description": "Categorize an expense", "domain": "finance"},
    },
}
SEARCH_RESULTS = [{"tool": "process_receipt", "score": 0.95}, {"tool": "categorize_expense"}]
EMBEDDING = [0.123, 0.456, 0.789] * 128
ARGS = {"image_uri": "receipt_123.jpg", "dpi": 300}
RESULT = {"output": "Receipt processed: Total $45.67", "confidence": 0.98}
WHEN_AND_WHY = {
    "catalog": "after tool discovery; the catalog changes rarely",
    "search": "after a semantic search; stable within one catalog version",
    "embeddings": "after an embedding call; deterministic and paid per call",
    "tools": "after registering or updating a tool",
    "results": "after a tool call; short, outside data moves on",
    "default": "get/set without a namespace",
}


def section(title: str) -> None:
    print(f"\n{title}\n{'-' * 78}")


def human(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds >= 2 * 86400:
        return f"{seconds / 86400:g} d"
    return f"{seconds / 3600:g} h" if seconds >= 3600 else f"{seconds / 60:g} min"


def entry_files(cache: AsyncToolCache, namespace: str = "") -> list[Path]:
    """The entry files this cache wrote (all namespaces, or one), relative to the cache folder."""
    root = Path(cache.config.cache_dir)
    top = root / cache.config.key_prefix / namespace
    return sorted(p.relative_to(root) for p in top.rglob("*") if p.is_file())


async def what_is_cached(cache: AsyncToolCache) -> None:
    section("WHAT: five kinds of agent work, with ToolWeaver's key shapes")
    catalog_hash, query_hash = stable_hash(CATALOG)[:16], stable_hash("process receipt")[:16]
    await cache.set_catalog(catalog_hash, CATALOG)
    await cache.set_search_results(query_hash, "v2", 10, SEARCH_RESULTS)
    await cache.set_embedding(query_hash, MODEL, EMBEDDING)
    await cache.set_tool("process_receipt", "1.0", CATALOG["tools"]["process_receipt"])
    await cache.set_result("process_receipt", ARGS, RESULT)
    rows = [
        ("tool catalog", "catalog", catalog_key(catalog_hash)),
        ("search results", "search", search_key(query_hash, "v2", 10)),
        ("embedding", "embeddings", embedding_key(query_hash, MODEL)),
        ("tool metadata", "tools", tool_key("process_receipt", "1.0")),
        ("tool result", "results", result_key("process_receipt", ARGS)),
    ]
    for kind, namespace, key in rows:
        print(f"  {kind:<15} {namespace:<11} {key}")
    reordered = {"dpi": 300, "image_uri": "receipt_123.jpg"}
    same = result_key("process_receipt", reordered) == result_key("process_receipt", ARGS)
    print(f"  tool-result args are hashed stably: same key with the dict reordered: {same}")


def show_envelope() -> None:
    section("HOW (1/3): every entry is a msgspec envelope; no pickle, bytes never run code")
    now, codec = time.time(), EntryCodec(max_value_bytes=1 << 20)
    key, value = "tool:process_receipt:v1.0", {"domain": "receipts"}
    data = codec.encode("tools", key, value, created_at=now, expires_at=now + 86400)
    print(f"  what set() writes: {len(data)} bytes of msgpack, an array of")
    for name, value in zip(Envelope.__struct_fields__, msgspec.msgpack.decode(data), strict=True):
        shown = hex(value) if name == "version" else repr(value)
        print(f"    {name:<11} {shown}")


async def redis_keys(config: CacheConfig) -> list[str]:
    """This run's keys in Redis, read with a plain client (SCAN on the prefix, nothing else)."""
    client = Redis.from_url(config.redis_url, password=config.redis_password, socket_timeout=0.5)
    try:
        keys = [k.decode() async for k in client.scan_iter(match=f"{config.key_prefix}:*")]
    except (RedisError, OSError) as exc:
        return [f"(cannot list them: {type(exc).__name__})"]
    finally:
        await client.aclose()
    return sorted(keys)


async def show_layout(cache: AsyncToolCache) -> None:
    section("HOW (2/3): layers memory -> Redis -> file; the files on disk")
    config = cache.config
    print(f"  chain: {' -> '.join(config.enabled_stores)}   (reads stop at the first fresh hit)")
    print(f"  Redis keys: {config.key_prefix}:<namespace>:<generation>:<key>")
    if config.use_redis:
        for key in await redis_keys(config):
            print(f"    {key}")
    print(f"  files under {config.cache_dir}: <prefix>/<namespace>/<2 hex>/<hash of the key>")
    for path in entry_files(cache):
        print(f"    {path}  ({(config.cache_dir / path).stat().st_size} bytes)")


async def bad_input(cache: AsyncToolCache) -> None:
    section("HOW (3/3): bad input is refused before anything is written")
    try:
        await cache.set("lock:1", threading.Lock())
    except SerializationError as exc:
        print(f"  SerializationError: {exc}")
        print(f"    .key={exc.key!r} .value_type={exc.value_type!r}")
        print(f"    GET lock:1 -> {await cache.get('lock:1')}  (nothing was written)")
    try:
        await cache.set("user:1", {"name": "Alice"}, ttl=0)
    except InvalidTTLError as exc:
        print(f"  InvalidTTLError: {exc}")


def ttl_table(cache: AsyncToolCache) -> None:
    section("WHEN (1/3): how long each namespace keeps its entries")
    for namespace, when in WHEN_AND_WHY.items():
        print(f"  {namespace:<11} {human(cache.config.policy(namespace).ttl):>6}   {when}")


async def what_is_there(cache: AsyncToolCache) -> str:
    catalog = await cache.get_catalog(stable_hash(CATALOG)[:16]) is not None
    tool = await cache.get_tool("process_receipt", "1.0") is not None
    files = len(entry_files(cache, "catalog"))
    return f"catalog cached: {catalog!s:<5}  tool cached: {tool!s:<5}  files in catalog/: {files}"


async def invalidation(cache: AsyncToolCache) -> None:
    section("WHEN (2/3): the catalog changed -> invalidate('catalog')")
    print(f"  before: {await what_is_there(cache)}")
    await cache.invalidate("catalog")
    print(f"  after:  {await what_is_there(cache)}  (other namespaces keep theirs)")


async def on_a_miss(cache: AsyncToolCache) -> None:
    section("WHEN (3/3): a miss runs the loader once, then the cache answers")
    calls = 0

    async def discover_catalog() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.05)  # simulated discovery over the network
        return CATALOG

    for attempt in ("first", "second"):
        started = time.perf_counter()
        await cache.get_or_set("current", discover_catalog, namespace="catalog")
        elapsed = (time.perf_counter() - started) * 1000
        print(f"  {attempt} get_or_set: {elapsed:7.2f} ms, loader calls so far: {calls}")


async def main() -> None:
    print("=" * 78)
    print("toolweaver-async: WHAT is cached, HOW, and WHEN")
    print("=" * 78)
    with tempfile.TemporaryDirectory() as scratch:
        overrides: dict[str, Any] = {"key_prefix": f"whw-{uuid.uuid4().hex[:8]}"}
        if not os.environ.get("TOOLWEAVER_CACHE_DIR"):
            overrides["cache_dir"] = scratch
        async with AsyncToolCache.from_env(**overrides) as cache:
            await what_is_cached(cache)
            show_envelope()
            await show_layout(cache)
            await bad_input(cache)
            ttl_table(cache)
            await invalidation(cache)
            await on_a_miss(cache)
            await cache.clear()
    print("\nDone: every entry of this run was removed with cache.clear().")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
