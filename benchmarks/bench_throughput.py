"""Gets per second with 1, 10, 100 and 1000 concurrent coroutines, against raw redis.asyncio.

    python -m benchmarks.bench_throughput [--quick] [--json] [--redis-url URL]

Every coroutine gets ~1 KB values in a loop, cycling over 1000 keys. Baseline: raw ``redis.asyncio`` GET + msgspec,
one call per get, on a pool of 100 connections (the most a pool should hold; more only
queue in the server). The batching floor: the same client sending the gets as one ``MGET``
per 100 keys, as a hand-batching application would. The cache runs Redis alone (memory
off), memory + Redis (every get a memory hit), and file alone. All contenders of one
concurrency run interleaved in short slices, so a noisy neighbour slows them alike.
"""

from __future__ import annotations

import dataclasses
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, CacheConfig

from ._harness import (
    Contender,
    Op,
    Report,
    Result,
    Target,
    compare_throughput,
    cpu_note,
    emit,
    interleaved_throughput,
    parser,
    redis_for_benchmark,
    run,
)
from ._values import ONE_KB

CONCURRENCY = (1, 10, 100, 1000)
RAW_POOL = 100
KEYS = [f"key-{n}" for n in range(1000)]
BASELINE = "redis.asyncio GET + msgspec, one call per get (baseline)"
FLOOR = "redis.asyncio MGET x100 + msgspec (the batching floor; p50/p99 per MGET)"


def cycling(keys: list[str]) -> Callable[[], str]:
    position = 0

    def next_key() -> str:
        nonlocal position
        position = (position + 1) % len(keys)
        return keys[position]

    return next_key


async def main() -> None:
    args = parser(__doc__ or "").parse_args()
    seconds, rounds = (0.6, 2) if args.quick else (3.0, 3)
    results: list[Result] = []
    notes = [
        "p50/p99 are the latency each call saw under that load (per MGET for the floor).",
        "Contenders ran interleaved (round robin, short slices); ops/s is the median slice.",
        "The cache sends gets that arrive while a round trip is in flight as one MGET "
        "(see toolweaver_async/stores/redis/batching.py); callers still await one key each.",
        "The machine is shared (2 cores, other jobs running): compare figures within this "
        "run only.",
    ]
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
            await cache.set_many(dict.fromkeys(KEYS, ONE_KB))
        await with_memory.get_many(KEYS)
        raw = aioredis.Redis(
            connection_pool=aioredis.BlockingConnectionPool.from_url(
                url, max_connections=RAW_POOL, timeout=None
            )
        )
        raw_keys = [f"{prefix}:raw:{key}" for key in KEYS]
        await raw.mset(dict.fromkeys(raw_keys, encoded))
        raw_next = cycling(raw_keys)
        batch_start = 0

        async def raw_get() -> Any:
            return decoder.decode(await raw.get(raw_next()))

        async def raw_mget_100() -> Any:
            # One call fetches 100 values; counted as 100 gets.
            nonlocal batch_start
            batch_start = (batch_start + 100) % len(raw_keys)
            values = await raw.mget(raw_keys[batch_start : batch_start + 100])
            return [decoder.decode(v) for v in values]

        misses = dict.fromkeys(caches, 0)

        def counted(cache: AsyncToolCache) -> Op:
            """The cache's gets over ``KEYS``, counting misses: a breaker tripped by a stalled
            machine answers at once with nothing, which would flatter the figures."""
            next_key = cycling(KEYS)

            async def get() -> Any:
                value = await cache.get(next_key())
                if value is None:
                    misses[cache] += 1
                return value

            return get

        for n in CONCURRENCY:
            group = f"{n} coroutine{'s' if n > 1 else ''}"
            base_result, batched, ours, memory_hits, files = await interleaved_throughput(
                group,
                [
                    Contender(BASELINE, raw_get, n),
                    Contender(FLOOR, raw_mget_100, max(1, n // 100), per_call=100),
                    Contender("cache.get, redis only (memory off)", counted(redis_only), n),
                    Contender("cache.get, memory + redis (memory hits)", counted(with_memory), n),
                    Contender("cache.get, file only", counted(file_only), n),
                ],
                seconds=seconds,
                rounds=rounds,
            )
            results += [
                base_result,
                compare_throughput(batched, base_result),
                compare_throughput(ours, base_result),
                compare_throughput(memory_hits, base_result),
                compare_throughput(files, base_result),
            ]
            if n in (100, 1000):
                ratio = ours.ops_per_s / base_result.ops_per_s
                floor = ours.ops_per_s / batched.ops_per_s
                targets.append(
                    Target(
                        f"Redis gets, {n} coroutines, memory off: >= 6x raw per-call gets"
                        if n == 100
                        else f"Redis gets, {n} coroutines, memory off (reported)",
                        f"{ours.ops_per_s:,.0f} gets/s{cpu_note(ours)}, "
                        f"{floor:.0%} of the MGET floor",
                        f"raw GET {base_result.ops_per_s:,.0f}/s{cpu_note(base_result)}; "
                        f"MGET x100 {batched.ops_per_s:,.0f} keys/s{cpu_note(batched)}",
                        round(ratio, 2),
                        ratio >= 6 if n == 100 else True,
                    )
                )
        missed = {c: m for c, m in misses.items() if m}
        if missed:
            notes.append(
                "**Invalid run**: gets that should all hit missed "
                f"({', '.join(f'{m:,}' for m in missed.values())}): a breaker tripped "
                "(the machine stalled past the command timeout); rerun."
            )
            for target in targets:
                target.met = False
                target.note = "misses: breaker tripped"
        for cache in caches:
            await cache.clear()
            await cache.aclose()
        await raw.delete(*raw_keys)
        await raw.aclose()

    emit(
        Report(
            "throughput",
            "Throughput: gets/s of a ~1 KB value by N concurrent coroutines (same run)",
            results,
            targets,
            notes=notes,
        ),
        args,
    )


if __name__ == "__main__":
    run(main)
