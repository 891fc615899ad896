"""Gets per second with 1, 10, 100 and 1000 concurrent coroutines, against raw redis.asyncio.

    python -m benchmarks.bench_throughput [--quick] [--json] [--redis-url URL]

Every coroutine gets one ~1 KB value in a loop. Baseline: raw ``redis.asyncio`` GET + msgspec,
one call per get, on a pool of 100 connections (the most a pool should hold; more only
queue in the server). Reference ceiling: the same client sending the gets as ``MGET``
batches of 100, as a hand-batching application would. The cache runs Redis alone (memory
off), memory + Redis (every get a memory hit), and file alone.
"""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, CacheConfig

from ._harness import (
    Report,
    Result,
    Target,
    compare_throughput,
    emit,
    measure_throughput,
    parser,
    redis_for_benchmark,
    run,
)
from ._values import ONE_KB

CONCURRENCY = (1, 10, 100, 1000)
RAW_POOL = 100


async def main() -> None:
    args = parser(__doc__ or "").parse_args()
    seconds = 0.25 if args.quick else 1.5
    results: list[Result] = []
    targets: list[Target] = []
    encoded = msgspec.msgpack.encode(ONE_KB)
    decoder = msgspec.msgpack.Decoder()

    with redis_for_benchmark(args.redis_url) as url, tempfile.TemporaryDirectory() as scratch:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        base = CacheConfig(
            use_redis=True, redis_url=url, cache_dir=Path(scratch), key_prefix=prefix
        )
        redis_only = AsyncToolCache(dataclasses.replace(base, stores=("redis",)))
        with_memory = AsyncToolCache(dataclasses.replace(base, stores=("memory", "redis")))
        file_only = AsyncToolCache(dataclasses.replace(base, stores=("file",)))
        caches = (redis_only, with_memory, file_only)
        for cache in caches:
            await cache.connect()
            await cache.set("k", ONE_KB)
        await with_memory.get("k")
        raw = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                url, max_connections=RAW_POOL, timeout=None
            )
        )
        raw_key = f"{prefix}:raw"
        await raw.set(raw_key, encoded)

        async def raw_get() -> Any:
            return decoder.decode(await raw.get(raw_key))

        batch_keys = [raw_key] * 100

        async def raw_mget_100() -> Any:
            # One call fetches 100 values; counted below as 100 gets.
            return [decoder.decode(v) for v in await raw.mget(batch_keys)]

        for n in CONCURRENCY:
            group = f"{n} coroutine{'s' if n > 1 else ''}"
            base_result = await measure_throughput(
                "redis.asyncio GET + msgspec, one call per get (baseline)",
                group,
                raw_get,
                concurrency=n,
                seconds=seconds,
            )
            batched = await measure_throughput(
                "redis.asyncio MGET x100 + msgspec (hand-batched reference; p50/p99 per MGET)",
                group,
                raw_mget_100,
                concurrency=max(1, n // 100),
                seconds=seconds,
            )
            batched.ops_per_s *= 100
            ours = await measure_throughput(
                "cache.get, redis only (memory off)",
                group,
                lambda: redis_only.get("k"),
                concurrency=n,
                seconds=seconds,
            )
            memory_hits = await measure_throughput(
                "cache.get, memory + redis (memory hits)",
                group,
                lambda: with_memory.get("k"),
                concurrency=n,
                seconds=seconds,
            )
            files = await measure_throughput(
                "cache.get, file only",
                group,
                lambda: file_only.get("k"),
                concurrency=n,
                seconds=seconds,
            )
            results += [
                base_result,
                compare_throughput(batched, base_result),
                compare_throughput(ours, base_result),
                compare_throughput(memory_hits, base_result),
                compare_throughput(files, base_result),
            ]
            if n == 100:
                ratio = ours.ops_per_s / base_result.ops_per_s
                targets.append(
                    Target(
                        "Redis hits, 100 coroutines, memory off: >= 4x raw per-call gets",
                        f"{ours.ops_per_s:,.0f} gets/s",
                        f"{base_result.ops_per_s:,.0f} gets/s",
                        round(ratio, 2),
                        ratio >= 4,
                    )
                )

        for cache in caches:
            await cache.clear()
            await cache.aclose()
        await raw.delete(raw_key)
        await raw.aclose()

    emit(
        Report(
            "throughput",
            "Throughput: gets/s of a ~1 KB value by N concurrent coroutines (same run)",
            results,
            targets,
            notes=[
                "p50/p99 are the latency each get saw under that load.",
                "The cache sends gets that arrive while a round trip is in flight as one MGET "
                "(see toolweaver_async/stores/redis/batching.py); callers still await one key each.",
            ],
        ),
        args,
    )


if __name__ == "__main__":
    run(main)
