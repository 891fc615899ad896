"""Latency of a get and a set in each layer, against the raw thing measured in the same run.

    python -m benchmarks.bench_layers [--quick] [--json] [--redis-url URL]

For a ~1 KB tool result, ~100 KB of retrieved documents and a 1536-float embedding: memory
(baseline: a dict lookup), Redis (baseline: raw ``redis.asyncio`` GET/SET + msgspec), file
(baseline: one worker-thread hop doing open+read or write+replace), and the full chain (a set
against the slower of the Redis-only and file-only sets). Operations compared with each other
run interleaved. Starts its own redis-server on a free loopback port unless --redis-url is given.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, CacheConfig, NamespacePolicy

from ._harness import (
    Report,
    Result,
    Target,
    compare,
    emit,
    measure_interleaved,
    parser,
    redis_for_benchmark,
    run,
)
from ._values import ONE_KB, SHAPES

__all__ = ["ONE_KB", "main"]


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_file(path: str, data: bytes) -> None:
    temp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(temp, "wb") as f:
        f.write(data)
    os.replace(temp, path)


def _samples(quick: bool, size: int) -> int:
    """Rounds per interleaved group: fewer for big values, few with --quick."""
    full = 2000 if size < 20_000 else 600
    return max(50, full // 10) if quick else full


async def main() -> None:
    args = parser(__doc__ or "").parse_args()
    results: list[Result] = []
    targets: list[Target] = []
    loop = asyncio.get_running_loop()
    decoder = msgspec.msgpack.Decoder()

    with redis_for_benchmark(args.redis_url) as url, tempfile.TemporaryDirectory() as scratch:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        base = CacheConfig(
            use_redis=True,
            redis_url=url,
            cache_dir=Path(scratch),
            key_prefix=prefix,
            namespaces={"shared": NamespacePolicy(share_objects=True)},
        )
        memory = AsyncToolCache(dataclasses.replace(base, stores=("memory",)))
        redis_only = AsyncToolCache(dataclasses.replace(base, stores=("redis",)))
        file_only = AsyncToolCache(dataclasses.replace(base, stores=("file",)))
        chain = AsyncToolCache(base)
        caches = (memory, redis_only, file_only, chain)
        for cache in caches:
            await cache.connect()
        raw = aioredis.Redis.from_url(url)

        for shape, value in SHAPES.items():
            encoded = msgspec.msgpack.encode(value)
            samples = _samples(args.quick, len(encoded))
            fast_batch = 50 if len(encoded) < 20_000 else 5

            # -- memory ------------------------------------------------------------------------
            plain: dict[str, Any] = {"k": value}

            async def dict_get(plain: dict[str, Any] = plain) -> Any:
                return plain.get("k")

            await memory.set("k", value)
            await memory.set("k", value, namespace="shared")
            got = await measure_interleaved(
                f"memory {shape}",
                {
                    "dict.get (baseline)": dict_get,
                    "cache.get, copy-on-read": lambda: memory.get("k"),
                    "cache.get, share_objects": lambda: memory.get("k", namespace="shared"),
                },
                samples=samples,
                batch=fast_batch,
            )
            d = got["dict.get (baseline)"]
            copy = compare(got["cache.get, copy-on-read"], d)
            shared = compare(got["cache.get, share_objects"], d)
            results += [d, copy, shared]

            # -- Redis -------------------------------------------------------------------------
            raw_key = f"{prefix}:raw"
            await raw.set(raw_key, encoded)
            await redis_only.set("k", value)

            async def raw_get(raw_key: str = raw_key) -> Any:
                return decoder.decode(await raw.get(raw_key))

            async def raw_set(raw_key: str = raw_key, value: Any = value) -> Any:
                return await raw.set(raw_key, msgspec.msgpack.encode(value), px=60_000)

            got = await measure_interleaved(
                f"redis {shape}",
                {
                    "redis.asyncio GET + msgspec (baseline)": raw_get,
                    "cache.get, redis only": lambda: redis_only.get("k"),
                },
                samples=samples,
            )
            rg = got["redis.asyncio GET + msgspec (baseline)"]
            cg = compare(got["cache.get, redis only"], rg)
            got = await measure_interleaved(
                f"redis {shape}",
                {
                    "redis.asyncio SET + msgspec (baseline)": raw_set,
                    "cache.set, redis only": lambda value=value: redis_only.set("k", value),
                },
                samples=samples,
            )
            rs = got["redis.asyncio SET + msgspec (baseline)"]
            cs = compare(got["cache.set, redis only"], rs)
            results += [rg, cg, rs, cs]

            # -- file --------------------------------------------------------------------------
            raw_path = str(Path(scratch) / "raw.bin")
            _write_file(raw_path, encoded)
            await file_only.set("k", value)

            async def thread_read(raw_path: str = raw_path) -> Any:
                return decoder.decode(await loop.run_in_executor(None, _read_file, raw_path))

            async def thread_write(raw_path: str = raw_path, value: Any = value) -> Any:
                data = msgspec.msgpack.encode(value)
                await loop.run_in_executor(None, _write_file, raw_path, data)

            got = await measure_interleaved(
                f"file {shape}",
                {
                    "one worker-thread open+read + msgspec (baseline)": thread_read,
                    "cache.get, file only": lambda: file_only.get("k"),
                },
                samples=samples,
            )
            fr = got["one worker-thread open+read + msgspec (baseline)"]
            fg = compare(got["cache.get, file only"], fr)
            got = await measure_interleaved(
                f"file {shape}",
                {
                    "one worker-thread write+replace + msgspec (baseline)": thread_write,
                    "cache.set, file only": lambda value=value: file_only.set("k", value),
                },
                samples=samples,
            )
            fw = got["one worker-thread write+replace + msgspec (baseline)"]
            fs = compare(got["cache.set, file only"], fw)
            results += [fr, fg, fw, fs]

            # -- full chain --------------------------------------------------------------------
            await chain.set("k", value)

            async def raw_both(thread_write: Any = thread_write, raw_set: Any = raw_set) -> Any:
                await asyncio.gather(thread_write(), raw_set())

            got = await measure_interleaved(
                f"full chain {shape}",
                {
                    "cache.set, redis only": lambda value=value: redis_only.set("k", value),
                    "cache.set, file only": lambda value=value: file_only.set("k", value),
                    "raw SET and thread write+replace, concurrently (floor)": raw_both,
                    "cache.set, memory+redis+file": lambda value=value: chain.set("k", value),
                },
                samples=samples,
            )
            slower = max(
                got["cache.set, redis only"], got["cache.set, file only"], key=lambda r: r.p50_us
            )
            floor = compare(got["raw SET and thread write+replace, concurrently (floor)"], slower)
            full_set = compare(got["cache.set, memory+redis+file"], slower)
            results += [slower, floor, full_set]

            if shape == "1 KB":
                targets += [
                    Target(
                        "memory hit, 1 KB, share_objects: p50 <= 1 µs",
                        f"{shared.p50_us:.2f} µs",
                        "1 µs (absolute)",
                        None,
                        shared.p50_us <= 1.0,
                    ),
                    _ratio_target(
                        "Redis hit, one caller: <= 1.1x raw redis.asyncio + msgspec", cg, rg, 1.1
                    ),
                    _ratio_target(
                        "file hit, 1 KB, memory off: <= 1.2x one worker-thread open+read",
                        fg,
                        fr,
                        1.2,
                    ),
                    _ratio_target(
                        "full-chain set: <= 1.3x the slower of its Redis and file writes alone",
                        full_set,
                        slower,
                        1.3,
                        note=(
                            f"raw SET + thread write+replace run concurrently, no cache code: "
                            f"{floor.ratio:.2f}x in this run"
                        ),
                    ),
                ]

        for cache in caches:
            await cache.clear()
            await cache.aclose()
        await raw.delete(f"{prefix}:raw")
        await raw.aclose()

    emit(
        Report(
            "layers",
            "Layer latencies: one get/set per layer against the raw operation (same run)",
            results,
            targets,
            notes=[
                "copy-on-read: every hit decodes the stored msgpack bytes into a new object "
                "(that decode is the copy); share_objects: every hit returns the one object "
                "decoded on the first hit (callers promise not to mutate it).",
                "Raw redis.asyncio uses its defaults (hiredis parser, connection pool); the "
                "file baseline is one `loop.run_in_executor` hop, the fastest way to read a "
                "file off the event loop.",
            ],
        ),
        args,
    )


def _ratio_target(
    description: str, result: Result, baseline: Result, limit: float, note: str = ""
) -> Target:
    ratio = result.p50_us / baseline.p50_us
    return Target(
        description,
        f"{result.p50_us:.1f} µs",
        f"{baseline.p50_us:.1f} µs",
        round(ratio, 2),
        ratio <= limit,
        note,
    )


if __name__ == "__main__":
    run(main)
