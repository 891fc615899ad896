"""Latency of a get and a set in each layer, against the raw thing measured in the same run.

    python -m benchmarks.bench_layers [--quick] [--json] [--redis-url URL]

Baselines: a dict lookup (memory), raw ``redis.asyncio`` GET/SET + msgspec (Redis), one
worker-thread open+read / write+replace (file). Starts its own redis-server on a free loopback
port unless --redis-url is given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import anyio
import msgspec
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, CacheConfig

from ._harness import (
    Result,
    compare,
    machine_line,
    measure,
    parser,
    redis_for_benchmark,
    render_table,
    run,
    write_outputs,
)

ONE_KB = {
    "tool": "search_receipts",
    "args": {"query": "receipts over $100", "top_k": 5},
    "results": [
        {"id": i, "title": f"receipt {i:04d}", "amount": 100.5 + i, "tags": ["food", "q4"]}
        for i in range(12)
    ],
}


def _read_file(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def _write_file(path: str, data: bytes) -> None:
    temp = f"{path}.{uuid.uuid4().hex[:8]}.tmp"
    with open(temp, "wb") as f:
        f.write(data)
    os.replace(temp, path)


async def main() -> None:
    args = parser(__doc__ or "").parse_args()
    samples = 300 if args.quick else 3000
    encoded = msgspec.msgpack.encode(ONE_KB)
    decoder = msgspec.msgpack.Decoder()
    results: list[Result] = []

    with redis_for_benchmark(args.redis_url) as url, tempfile.TemporaryDirectory() as scratch:
        prefix = f"bench{uuid.uuid4().hex[:6]}"
        base = CacheConfig(
            use_redis=True, redis_url=url, cache_dir=Path(scratch), key_prefix=prefix
        )

        # -- memory ----------------------------------------------------------------------
        plain: dict[str, Any] = {"k": ONE_KB}

        async def dict_get() -> Any:
            return plain.get("k")

        memory = AsyncToolCache(dataclasses.replace(base, stores=("memory",)))
        await memory.set("k", ONE_KB)
        d = await measure("dict.get (baseline)", "memory 1 KB", dict_get, samples=samples, batch=50)
        m = await measure(
            "cache.get, memory only",
            "memory 1 KB",
            lambda: memory.get("k"),
            samples=samples,
            batch=50,
        )
        results += [d, compare(m, d)]

        # -- Redis -----------------------------------------------------------------------
        raw = aioredis.Redis.from_url(url)
        await raw.set(f"{prefix}:raw", encoded)

        async def raw_get() -> Any:
            return decoder.decode(await raw.get(f"{prefix}:raw"))

        async def raw_set() -> Any:
            return await raw.set(f"{prefix}:raw", msgspec.msgpack.encode(ONE_KB), px=60_000)

        redis_only = AsyncToolCache(dataclasses.replace(base, stores=("redis",)))
        await redis_only.set("k", ONE_KB)
        rg = await measure(
            "redis.asyncio GET + msgspec (baseline)", "redis 1 KB", raw_get, samples=samples
        )
        cg = await measure(
            "cache.get, redis only", "redis 1 KB", lambda: redis_only.get("k"), samples=samples
        )
        rs = await measure(
            "redis.asyncio SET + msgspec (baseline)", "redis 1 KB", raw_set, samples=samples
        )
        cs = await measure(
            "cache.set, redis only",
            "redis 1 KB",
            lambda: redis_only.set("k", ONE_KB),
            samples=samples,
        )
        results += [rg, compare(cg, rg), rs, compare(cs, rs)]

        # -- file ------------------------------------------------------------------------
        raw_path = str(Path(scratch) / "raw.bin")
        _write_file(raw_path, encoded)

        async def thread_read() -> Any:
            return decoder.decode(await anyio.to_thread.run_sync(_read_file, raw_path))

        async def thread_write() -> Any:
            await anyio.to_thread.run_sync(_write_file, raw_path, msgspec.msgpack.encode(ONE_KB))

        file_only = AsyncToolCache(dataclasses.replace(base, stores=("file",)))
        await file_only.set("k", ONE_KB)
        fr = await measure(
            "worker-thread open+read (baseline)", "file 1 KB", thread_read, samples=samples
        )
        fg = await measure(
            "cache.get, file only", "file 1 KB", lambda: file_only.get("k"), samples=samples
        )
        fw = await measure(
            "worker-thread write+replace (baseline)", "file 1 KB", thread_write, samples=samples
        )
        fs = await measure(
            "cache.set, file only", "file 1 KB", lambda: file_only.set("k", ONE_KB), samples=samples
        )
        results += [fr, compare(fg, fr), fw, compare(fs, fw)]

        # -- full chain ------------------------------------------------------------------
        chain = AsyncToolCache(base)
        await chain.set("k", ONE_KB)
        slower_write = max((cs, fs), key=lambda r: r.p50_us)
        full_set = await measure(
            "cache.set, memory+redis+file",
            "full chain 1 KB",
            lambda: chain.set("k", ONE_KB),
            samples=samples,
        )
        full_get = await measure(
            "cache.get, memory+redis+file (memory hit)",
            "full chain 1 KB",
            lambda: chain.get("k"),
            samples=samples,
            batch=50,
        )
        results += [compare(full_set, slower_write), compare(full_get, d)]

        for cache in (memory, redis_only, file_only, chain):
            await cache.clear()
            await cache.aclose()
        await raw.delete(f"{prefix}:raw")
        await raw.aclose()

    title = "Layer latencies: one get/set of a ~1 KB value"
    if args.json:
        print(json.dumps([dataclasses.asdict(r) for r in results], indent=2))
    else:
        print(render_table(results, title))
        print(f"\n_{machine_line()}_")
    write_outputs("layers", title, results)


if __name__ == "__main__":
    run(main)
