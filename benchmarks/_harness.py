"""Shared benchmark plumbing: timing loops, percentiles, tables, JSON/Markdown output.

Every benchmark measures its baseline in the same process run, so ratios compare like with like.
Fast operations are timed in batches (one clock read per batch) so the clock does not dominate.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolweaver_async.testing import RedisServer

RESULTS = Path(__file__).parent / "results"


@dataclass
class Result:
    """Latency of one operation in microseconds."""

    name: str
    group: str
    p50_us: float
    p99_us: float
    mean_us: float
    ops_per_s: float
    baseline: str | None = None
    ratio: float | None = None  # p50 / baseline p50 (lower is better)


def percentile(sorted_values: list[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def time_op(
    op: Callable[[], Awaitable[Any]], *, samples: int = 2000, batch: int = 1, warmup: int = 200
) -> tuple[float, float, float]:
    """(p50, p99, mean) in microseconds per call of ``op``; ``batch`` calls per clock read."""
    for _ in range(warmup):
        await op()
    per_call: list[float] = []
    clock = time.perf_counter_ns
    for _ in range(samples):
        started = clock()
        for _ in range(batch):
            await op()
        per_call.append((clock() - started) / batch / 1000)
    per_call.sort()
    return percentile(per_call, 0.5), percentile(per_call, 0.99), statistics.fmean(per_call)


async def measure(name: str, group: str, op: Callable[[], Awaitable[Any]], **kwargs: Any) -> Result:
    p50, p99, mean = await time_op(op, **kwargs)
    return Result(
        name,
        group,
        round(p50, 3),
        round(p99, 3),
        round(mean, 3),
        round(1e6 / mean if mean else 0.0, 1),
    )


def compare(result: Result, baseline: Result) -> Result:
    result.baseline = baseline.name
    result.ratio = round(result.p50_us / baseline.p50_us, 3) if baseline.p50_us else None
    return result


def render_table(results: list[Result], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| group | operation | p50 µs | p99 µs | ops/s | vs baseline (p50 ratio) |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        versus = f"{r.ratio:.2f}x {r.baseline}" if r.ratio is not None else "baseline"
        lines.append(
            f"| {r.group} | {r.name} | {r.p50_us:.2f} | {r.p99_us:.2f} | "
            f"{r.ops_per_s:,.0f} | {versus} |"
        )
    return "\n".join(lines)


def machine_line() -> str:
    loop = "uvloop" if "uvloop" in type(asyncio.get_event_loop_policy()).__module__ else "asyncio"
    return (
        f"Python {platform.python_version()} on {platform.machine()}, "
        f"{platform.system()}, {loop} event loop"
    )


def write_outputs(stem: str, title: str, results: list[Result], extra: str = "") -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    markdown = f"{render_table(results, title)}\n\n_{machine_line()}_\n{extra}"
    (RESULTS / f"{stem}.md").write_text(markdown)
    (RESULTS / f"{stem}.json").write_text(
        json.dumps(
            {"title": title, "machine": machine_line(), "results": [asdict(r) for r in results]},
            indent=2,
        )
    )


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="fewer samples (smoke run)")
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.add_argument("--redis-url", help="use this Redis instead of starting one on a free port")
    return p


@contextmanager
def redis_for_benchmark(url: str | None) -> Iterator[str]:
    """A Redis URL: the given one, or a private redis-server on a free loopback port."""
    if url:
        yield url
        return
    with RedisServer() as server:
        yield server.url


def run(main: Callable[[], Awaitable[None]]) -> None:
    """Run with uvloop when installed (the `speed` extra), plain asyncio otherwise."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        if sys.version_info >= (3, 12):
            uvloop.run(main())
        else:
            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
            asyncio.run(main())
