"""An agent workload: time per request and estimated cost, with and without the cache.

    python -m benchmarks.bench_agent [--quick] [--json] [--redis-url URL]

Fifty agents run concurrently; every step asks for an embedding, a search, a tool call or an
LLM answer. Keys repeat with a Zipf distribution, sized so that about 85 % of requests repeat
earlier ones (the hit pattern of ToolWeaver's original samples). Services are simulated with
fixed latencies and prices (listed in the output) so the run is reproducible and offline.
The baseline calls the service on every request; the cache runs ``get_or_set`` on the embedded
chain (memory + file) and the full chain (memory + Redis + file), starting cold.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolweaver_async import AsyncToolCache, CacheConfig

from ._harness import (
    Report,
    Result,
    Target,
    compare,
    emit,
    parser,
    percentile,
    redis_for_benchmark,
    run,
)
from ._values import EMBEDDING, ONE_KB

AGENTS = 50
TARGET_REPEAT_SHARE = 0.85
ZIPF_S = 1.05
SEED = 20240611


@dataclass(frozen=True)
class Service:
    """A simulated expensive call: its namespace, latency, price and answer."""

    name: str
    namespace: str
    share: float  # of all requests
    latency_s: float
    usd_per_call: float
    answer: Any


SERVICES = (
    Service("embedding", "embeddings", 0.40, 0.008, 0.00002, EMBEDDING),
    Service("search", "search", 0.25, 0.015, 0.0005, ONE_KB),
    Service("tool call", "results", 0.25, 0.025, 0.001, ONE_KB),
    Service("LLM answer", "default", 0.10, 0.060, 0.003, {"text": "x" * 600, "tokens": 812}),
)


def _zipf_cdf(universe: int) -> list[float]:
    weights = [1.0 / (rank**ZIPF_S) for rank in range(1, universe + 1)]
    total = sum(weights)
    cdf, acc = [], 0.0
    for w in weights:
        acc += w / total
        cdf.append(acc)
    return cdf


def _requests(count: int, universe: int) -> list[tuple[Service, str]]:
    """``count`` (service, key) pairs, deterministic for a given universe size."""
    rng = random.Random(SEED)
    cdf = _zipf_cdf(universe)
    shares = [s.share for s in SERVICES]
    out = []
    for _ in range(count):
        service = rng.choices(SERVICES, weights=shares)[0]
        rank = bisect.bisect_left(cdf, rng.random())
        out.append((service, f"{service.name}:{rank}"))
    return out


def _workload(count: int) -> tuple[list[tuple[Service, str]], float]:
    """Requests whose share of repeats is as close to 85 % as a universe size can make it."""
    best: tuple[float, list[tuple[Service, str]]] | None = None
    universe = 8
    while universe < count * 4:
        requests = _requests(count, universe)
        repeats = 1 - len({key for _, key in requests}) / count
        if best is None or abs(repeats - TARGET_REPEAT_SHARE) < abs(best[0] - TARGET_REPEAT_SHARE):
            best = (repeats, requests)
        universe = int(universe * 1.25) + 1
    assert best is not None
    return best[1], best[0]


async def _run_agents(
    requests: list[tuple[Service, str]], call: Callable[[Service, str], Awaitable[Any]]
) -> tuple[list[float], float]:
    """Every agent takes the next request until none is left; per-request latencies in µs."""
    pending = iter(requests)
    latencies: list[float] = []
    clock = time.perf_counter_ns

    async def agent() -> None:
        for service, key in pending:
            started = clock()
            await call(service, key)
            latencies.append((clock() - started) / 1000)

    started = time.perf_counter()
    await asyncio.gather(*(agent() for _ in range(AGENTS)))
    return latencies, time.perf_counter() - started


async def main() -> None:
    args = parser(__doc__ or "").parse_args()
    count = 800 if args.quick else 6000
    requests, repeat_share = _workload(count)
    results: list[Result] = []
    cost_rows: list[str] = []
    service_calls: dict[str, int] = {}

    async def no_cache(service: Service, key: str) -> Any:
        service_calls["no cache"] = service_calls.get("no cache", 0) + 1
        await asyncio.sleep(service.latency_s)
        return service.answer

    async def measure(label: str, call: Callable[[Service, str], Awaitable[Any]]) -> Result:
        latencies, wall = await _run_agents(requests, call)
        latencies.sort()
        return Result(
            label,
            f"{AGENTS} agents, {count} requests",
            round(percentile(latencies, 0.5), 1),
            round(percentile(latencies, 0.99), 1),
            round(statistics.fmean(latencies), 1),
            round(count / wall, 1),
        )

    with redis_for_benchmark(args.redis_url) as url, tempfile.TemporaryDirectory() as scratch:
        baseline = await measure("no cache: every request calls the service (baseline)", no_cache)
        results.append(baseline)
        spend: dict[str, float] = {"no cache": sum(s.usd_per_call for s, _ in requests)}
        chains = {
            "toolweaver-async, memory + file (embedded default)": CacheConfig(
                cache_dir=Path(scratch) / "embedded", key_prefix=f"agent{uuid.uuid4().hex[:6]}"
            ),
            "toolweaver-async, memory + Redis + file": CacheConfig(
                use_redis=True,
                redis_url=url,
                cache_dir=Path(scratch) / "full",
                key_prefix=f"agent{uuid.uuid4().hex[:6]}",
            ),
        }
        for label, config in chains.items():
            async with AsyncToolCache(dataclasses.replace(config)) as cache:
                paid = 0.0
                calls = 0

                async def cached(service: Service, key: str, cache: AsyncToolCache = cache) -> Any:
                    async def load() -> Any:
                        nonlocal paid, calls
                        calls += 1
                        paid += service.usd_per_call
                        await asyncio.sleep(service.latency_s)
                        return service.answer

                    return await cache.get_or_set(key, load, namespace=service.namespace)

                result = compare(await measure(label, cached), baseline)
                results.append(result)
                spend[label] = paid
                service_calls[label] = calls
                hit_rate = cache.stats().overall.hit_rate
                await cache.clear()
            cost_rows.append(
                f"| {label} | {hit_rate:.1%} | {calls:,} | ${paid:,.2f} | "
                f"{result.mean_us / 1000:.2f} ms | {baseline.mean_us / result.mean_us:.1f}x |"
            )

    per_thousand = 1000 / count
    appendix_lines = [
        "Estimated service spend and time per request:",
        "",
        "| run | hit rate | service calls | spend | mean time per request | speed-up |",
        "|---|---:|---:|---:|---:|---:|",
        f"| no cache | 0.0% | {count:,} | ${spend['no cache']:,.2f} | "
        f"{baseline.mean_us / 1000:.2f} ms | 1.0x |",
        *cost_rows,
        "",
        f"Per 1,000 requests: ${spend['no cache'] * per_thousand:,.2f} without the cache, "
        + ", ".join(
            f"${spend[label] * per_thousand:,.2f} with {label.split(', ', 1)[1]}"
            for label in chains
        )
        + ".",
        "",
        "Simulated services (latency, price per call, share of requests): "
        + "; ".join(
            f"{s.name} {s.latency_s * 1000:.0f} ms ${s.usd_per_call:g} {s.share:.0%}"
            for s in SERVICES
        )
        + f". Requests that repeat an earlier one: {repeat_share:.1%} (Zipf s={ZIPF_S}).",
    ]
    full = results[-1]
    targets = [
        Target(
            "agent workload, full chain: time per request far below the uncached one",
            f"{full.mean_us / 1000:.2f} ms mean",
            f"{baseline.mean_us / 1000:.2f} ms mean",
            round(full.mean_us / baseline.mean_us, 3),
            full.mean_us < baseline.mean_us,
        )
    ]
    emit(
        Report(
            "agent",
            "Agent workload: time per request, cold start, Zipf repeats (~85 % hits)",
            results,
            targets,
            appendix="\n".join(appendix_lines),
            notes=[
                "p50/p99/mean are per request, as an agent step sees them; ops/s is requests "
                "per second over the whole run.",
                "Concurrent misses of one key run the service once (get_or_set coalesces them).",
            ],
        ),
        args,
    )


if __name__ == "__main__":
    run(main)
