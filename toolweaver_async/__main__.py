"""Command line: ``python -m toolweaver_async {demo,doctor,inspect,keys,clear,bench}``.

Every command builds its cache with ``AsyncToolCache.from_env()``, so it sees exactly what an
agent configured by the same environment sees.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from collections.abc import Sequence
from typing import Any

import msgspec

from .cache import AsyncToolCache

__all__ = ["main"]


def _json(value: Any) -> str:
    return msgspec.json.format(msgspec.json.encode(value, enc_hook=repr), indent=2).decode()


async def _doctor(_: argparse.Namespace) -> int:
    async with AsyncToolCache.from_env() as cache:
        report = await cache.health_check()
    print(_json(report))
    return 0 if all(store["ok"] for store in report["stores"].values()) else 1


async def _inspect(args: argparse.Namespace) -> int:
    async with AsyncToolCache.from_env() as cache:
        missing = object()
        value = await cache.get(args.key, namespace=args.namespace, default=missing)
        answered = {n: c for n, c in cache.stats().overall.hits.items() if c}
    if value is missing:
        print(f"miss: {args.namespace}/{args.key}", file=sys.stderr)
        return 1
    print(f"# {args.namespace}/{args.key} from {', '.join(answered) or '?'}", file=sys.stderr)
    print(_json(value))
    return 0


async def _clear(args: argparse.Namespace) -> int:
    if not args.yes:
        target = f"namespace {args.namespace!r}" if args.namespace else "every entry"
        print(f"refusing to remove {target} without --yes", file=sys.stderr)
        return 2
    async with AsyncToolCache.from_env() as cache:
        if args.namespace:
            await cache.invalidate(args.namespace)
        else:
            await cache.clear()
        print(
            f"cleared prefix {cache.config.key_prefix!r}"
            + (f" namespace {args.namespace!r}" if args.namespace else "")
        )
    return 0


async def _keys(args: argparse.Namespace) -> int:
    """One key a line, streamed as the stores hand them over."""
    async with AsyncToolCache.from_env() as cache:
        async for key in cache.keys(namespace=args.namespace, prefix=args.prefix):
            print(key)
    return 0


async def _bench(args: argparse.Namespace) -> int:
    """A quick latency check of the configured chain (the full suite is ``make bench``)."""
    value = {"tool": "search", "results": [{"id": i, "score": i / 10} for i in range(20)]}
    async with AsyncToolCache.from_env(key_prefix=f"bench-{uuid.uuid4().hex[:8]}") as cache:
        sets, gets = [], []
        for i in range(args.n):
            started = time.perf_counter()
            await cache.set(f"k{i % 100}", value)
            sets.append(time.perf_counter() - started)
            started = time.perf_counter()
            await cache.get(f"k{i % 100}")
            gets.append(time.perf_counter() - started)
        await cache.clear()
    chain = " + ".join(cache.config.enabled_stores)
    print(f"chain: {chain}; {args.n} sets and gets of a ~1 KB value")
    print(f"set p50 {statistics.median(sets) * 1e6:8.1f} µs")
    print(f"get p50 {statistics.median(gets) * 1e6:8.1f} µs")
    return 0


async def _demo(_: argparse.Namespace) -> int:
    async def slow_tool(query: str) -> dict[str, Any]:
        await asyncio.sleep(0.2)
        return {"query": query, "answer": 42}

    async with AsyncToolCache.from_env(key_prefix=f"demo-{uuid.uuid4().hex[:8]}") as cache:
        for attempt in ("first call (miss)", "second call (hit)"):
            started = time.perf_counter()
            await cache.get_or_set("q:answer", lambda: slow_tool("answer"), namespace="results")
            print(f"{attempt:<18} {(time.perf_counter() - started) * 1000:8.2f} ms")
        print(_json(cache.stats().overall.to_dict()))
        await cache.clear()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m toolweaver_async`` and the ``toolweaver-async`` script."""
    parser = argparse.ArgumentParser(prog="toolweaver-async", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("demo", help="a miss and a hit, with timings")
    commands.add_parser("doctor", help="health of every store (exit 1 when one is down)")
    inspect = commands.add_parser("inspect", help="print the cached value of a key")
    inspect.add_argument("key")
    inspect.add_argument("--namespace", default="default")
    clear = commands.add_parser("clear", help="remove this prefix's entries (or one namespace)")
    clear.add_argument("--namespace")
    clear.add_argument("--yes", action="store_true", help="really remove them")
    keys = commands.add_parser("keys", help="list the keys of fresh entries, one a line")
    keys.add_argument("--namespace", default="default")
    keys.add_argument("--prefix", default="", help="only keys that start with this text")
    bench = commands.add_parser("bench", help="quick set/get latency of the configured chain")
    bench.add_argument("-n", type=int, default=2000)
    args = parser.parse_args(argv)
    handler = {
        "demo": _demo,
        "doctor": _doctor,
        "inspect": _inspect,
        "clear": _clear,
        "bench": _bench,
        "keys": _keys,
    }[args.command]
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
