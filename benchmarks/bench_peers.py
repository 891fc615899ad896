"""This library against its peers, side by side in one process run.

    python -m benchmarks.bench_peers [--quick] [--json] [--redis-url URL]

Memory hits of a ~1 KB value: a dict, ``cachetools.TTLCache``, ``cashews`` ``mem://``,
``aiocache`` ``SimpleMemoryCache``, this cache copy-on-read and with ``share_objects``. Redis
hits, one caller and 100 concurrent coroutines (memory off): raw ``redis.asyncio`` + msgspec,
aiocache and cashews on Redis, this cache. File hits: ``diskcache`` (called on the event loop,
as async code usually does, and through one worker-thread hop) against this cache's file store.
Peers run with their default serializers. Peers come from the ``bench`` extra.
"""

from __future__ import annotations

import asyncio
import dataclasses
import tempfile
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cachetools
import diskcache
import msgspec
import redis.asyncio as aioredis
from aiocache import RedisCache, SimpleMemoryCache
from cashews import Cache as CashewsCache

from toolweaver_async import AsyncToolCache, CacheConfig, NamespacePolicy

from ._harness import (
    Report,
    Result,
    Target,
    compare,
    compare_throughput,
    emit,
    measure_interleaved,
    measure_throughput,
    parser,
    redis_for_benchmark,
    run,
)
from ._values import ONE_KB

CONCURRENT = 100
_DECODE = "msgspec decode of the value alone (the price of a copy)"
RAW_POOL = 100


async def main() -> None:
    args = parser(__doc__ or "").parse_args()
    samples = 200 if args.quick else 2000
    seconds = 0.3 if args.quick else 2.0
    results: list[Result] = []
    targets: list[Target] = []
    loop = asyncio.get_running_loop()
    encoded = msgspec.msgpack.encode(ONE_KB)
    decoder = msgspec.msgpack.Decoder()

    with redis_for_benchmark(args.redis_url) as url, tempfile.TemporaryDirectory() as scratch:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        parts = urlsplit(url)
        base = CacheConfig(
            use_redis=True,
            redis_url=url,
            cache_dir=Path(scratch) / "ours",
            key_prefix=prefix,
            namespaces={"shared": NamespacePolicy(share_objects=True)},
        )

        # -- memory ----------------------------------------------------------------------------
        memory = AsyncToolCache(dataclasses.replace(base, stores=("memory",)))
        await memory.set("k", ONE_KB)
        await memory.set("k", ONE_KB, namespace="shared")
        plain = {"k": ONE_KB}
        ttl_cache: cachetools.TTLCache[str, Any] = cachetools.TTLCache(maxsize=10_000, ttl=3600)
        ttl_cache["k"] = ONE_KB
        cashews_mem = CashewsCache()
        cashews_mem.setup("mem://")
        await cashews_mem.set("k", ONE_KB, expire=3600)
        aiocache_mem = SimpleMemoryCache()
        await aiocache_mem.set("k", ONE_KB, ttl=3600)

        async def dict_get() -> Any:
            return plain.get("k")

        async def cachetools_get() -> Any:
            return ttl_cache.get("k")

        async def decode_only() -> Any:
            return decoder.decode(encoded)

        got = await measure_interleaved(
            "memory hit, 1 KB",
            {
                "dict.get (reference)": dict_get,
                "cachetools.TTLCache": cachetools_get,
                "cashews mem://": lambda: cashews_mem.get("k"),
                "aiocache SimpleMemoryCache": lambda: aiocache_mem.get("k"),
                "msgspec decode of the value alone (the price of a copy)": decode_only,
                "toolweaver-async, copy-on-read": lambda: memory.get("k"),
                "toolweaver-async, share_objects": lambda: memory.get("k", namespace="shared"),
            },
            samples=samples,
            batch=50,
        )
        cashews_result = got["cashews mem://"]
        for name in (
            "dict.get (reference)",
            "cachetools.TTLCache",
            "aiocache SimpleMemoryCache",
            "msgspec decode of the value alone (the price of a copy)",
        ):
            results.append(compare(got[name], cashews_result))
        results.insert(0, cashews_result)
        ours_copy = compare(got["toolweaver-async, copy-on-read"], cashews_result)
        ours_shared = compare(got["toolweaver-async, share_objects"], cashews_result)
        results += [ours_copy, ours_shared]
        targets += [
            Target(
                "memory hit, 1 KB, copy-on-read: p50 <= cashews mem://",
                f"{ours_copy.p50_us:.2f} µs",
                f"{cashews_result.p50_us:.2f} µs",
                ours_copy.ratio,
                ours_copy.p50_us <= cashews_result.p50_us,
                ""
                if ours_copy.p50_us <= cashews_result.p50_us
                else (
                    f"the copy alone (msgspec decode, the fastest deep copy in CPython) takes "
                    f"{got[_DECODE].p50_us:.2f} µs; cashews hands out its stored object, no copy"
                ),
            ),
            Target(
                "memory hit, 1 KB, share_objects: p50 <= 1 µs",
                f"{ours_shared.p50_us:.2f} µs",
                "1 µs (absolute)",
                None,
                ours_shared.p50_us <= 1.0,
            ),
        ]
        await memory.aclose()
        await cashews_mem.close()

        # -- Redis, one caller -----------------------------------------------------------------
        raw = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                url, max_connections=RAW_POOL, timeout=None
            )
        )
        raw_key = f"{prefix}:raw"
        await raw.set(raw_key, encoded)
        aiocache_redis = RedisCache(
            endpoint=parts.hostname,
            port=parts.port,
            namespace=f"{prefix}aio",
            pool_max_size=RAW_POOL,
        )
        await aiocache_redis.set("k", ONE_KB, ttl=3600)
        cashews_redis = CashewsCache()
        cashews_redis.setup(url, max_connections=RAW_POOL)
        cashews_key = f"{prefix}cashews:k"
        await cashews_redis.set(cashews_key, ONE_KB, expire=3600)
        redis_only = AsyncToolCache(dataclasses.replace(base, stores=("redis",)))
        await redis_only.connect()
        await redis_only.set("k", ONE_KB)

        async def raw_get() -> Any:
            return decoder.decode(await raw.get(raw_key))

        redis_ops = {
            "redis.asyncio GET + msgspec (baseline)": raw_get,
            "aiocache RedisCache": lambda: aiocache_redis.get("k"),
            "cashews redis://": lambda: cashews_redis.get(cashews_key),
            "toolweaver-async, redis only": lambda: redis_only.get("k"),
        }
        for op in redis_ops.values():  # every peer returns the value it was given
            assert await op() == ONE_KB
        got = await measure_interleaved("redis hit, 1 KB, one caller", redis_ops, samples=samples)
        raw_one = got["redis.asyncio GET + msgspec (baseline)"]
        results.append(raw_one)
        for name in ("aiocache RedisCache", "cashews redis://", "toolweaver-async, redis only"):
            results.append(compare(got[name], raw_one))
        ours_one = got["toolweaver-async, redis only"]
        targets.append(
            Target(
                "Redis hit, one caller: <= 1.1x raw redis.asyncio + msgspec",
                f"{ours_one.p50_us:.1f} µs",
                f"{raw_one.p50_us:.1f} µs",
                ours_one.ratio,
                ours_one.ratio is not None and ours_one.ratio <= 1.1,
            )
        )

        # -- Redis, 100 concurrent coroutines --------------------------------------------------
        group = f"redis hits, 1 KB, {CONCURRENT} coroutines"
        through: dict[str, Result] = {}
        for name, op in redis_ops.items():
            through[name] = await measure_throughput(
                name, group, op, concurrency=CONCURRENT, seconds=seconds
            )
        raw_many = through["redis.asyncio GET + msgspec (baseline)"]
        results.append(raw_many)
        for name in ("aiocache RedisCache", "cashews redis://", "toolweaver-async, redis only"):
            results.append(compare_throughput(through[name], raw_many))
        ours_many = through["toolweaver-async, redis only"]
        for peer, limit in (
            ("redis.asyncio GET + msgspec (baseline)", 4.0),
            ("aiocache RedisCache", 6.0),
            ("cashews redis://", 6.0),
        ):
            ratio = ours_many.ops_per_s / through[peer].ops_per_s
            targets.append(
                Target(
                    f"Redis hits, {CONCURRENT} coroutines, memory off: >= {limit:g}x {peer.split(' (')[0]}",
                    f"{ours_many.ops_per_s:,.0f} gets/s",
                    f"{through[peer].ops_per_s:,.0f} gets/s",
                    round(ratio, 2),
                    ratio >= limit,
                )
            )
        await raw.delete(raw_key)
        await raw.aclose()
        await aiocache_redis.delete("k")
        await aiocache_redis.close()
        await cashews_redis.delete(cashews_key)
        await cashews_redis.close()
        await redis_only.clear()
        await redis_only.aclose()

        # -- file ------------------------------------------------------------------------------
        disk = diskcache.Cache(str(Path(scratch) / "diskcache"))
        disk.set("k", ONE_KB, expire=3600)
        file_only = AsyncToolCache(dataclasses.replace(base, stores=("file",)))
        await file_only.set("k", ONE_KB)

        async def diskcache_on_loop() -> Any:
            return disk.get("k")

        async def diskcache_thread() -> Any:
            return await loop.run_in_executor(None, disk.get, "k")

        got = await measure_interleaved(
            "file hit, 1 KB",
            {
                "diskcache, on the event loop (blocks it)": diskcache_on_loop,
                "diskcache, one worker-thread hop": diskcache_thread,
                "toolweaver-async, file only": lambda: file_only.get("k"),
            },
            samples=samples,
        )
        hop = got["diskcache, one worker-thread hop"]
        results += [
            compare(got["diskcache, on the event loop (blocks it)"], hop),
            hop,
            compare(got["toolweaver-async, file only"], hop),
        ]
        disk.close()
        await file_only.aclose()

    emit(
        Report(
            "peers",
            "toolweaver-async against raw redis.asyncio, aiocache, cashews, cachetools and diskcache",
            results,
            targets,
            notes=[
                "Memory rows compare against cashews mem://; Redis rows against raw "
                "redis.asyncio (one call per get, a pool of 100 connections for every client); "
                "file rows against diskcache through one worker-thread hop.",
                "Peers use their default serializers (aiocache: JSON on Redis, cashews: pickle); "
                "this cache uses msgpack (msgspec) everywhere.",
            ],
        ),
        args,
    )


if __name__ == "__main__":
    run(main)
