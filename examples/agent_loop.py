"""A small simulated agent loop, run without and then with AsyncToolCache.

Four agents work through tasks concurrently. Each step discovers the tool catalog, embeds the
task, searches for tools and calls one: the expensive, repetitive work real agents do. Tasks repeat
the way they do in practice (a few common ones, a long tail), so most steps can be answered from
the cache. The latencies are simulated with asyncio.sleep; everything else is the real library.

    USE_REDIS=false python examples/agent_loop.py      # memory + file (the default)
    USE_REDIS=true  python examples/agent_loop.py      # memory + Redis + file
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from toolweaver_async import DEFAULT_NAMESPACES, AsyncToolCache

# Simulated cost of each kind of work: seconds and dollars per call.
CATALOG_DISCOVERY = (0.050, 0.0)
EMBEDDING = (0.020, 0.0001)
SEARCH = (0.030, 0.002)
TOOL_CALL = (0.040, 0.010)

AGENTS = 4
STEPS_PER_AGENT = 25
COMMON_TASKS = [
    "summarise the latest invoice",
    "find receipts over $100",
    "list open support tickets",
    "translate the release notes",
    "draft a reply to the customer",
    "check the build status",
]


@dataclass
class Meter:
    """Counts what the simulated services were asked to do."""

    seconds: float = 0.0
    dollars: float = 0.0
    calls: dict[str, int] = field(default_factory=dict)

    async def spend(self, what: str, cost: tuple[float, float]) -> None:
        self.calls[what] = self.calls.get(what, 0) + 1
        self.seconds += cost[0]
        self.dollars += cost[1]
        await asyncio.sleep(cost[0])


def task_stream(seed: int) -> list[str]:
    """85 % of tasks come from a few common ones, the rest are one-offs."""
    rng = random.Random(seed)
    tasks = []
    for i in range(STEPS_PER_AGENT):
        if rng.random() < 0.85:
            tasks.append(rng.choice(COMMON_TASKS))
        else:
            tasks.append(f"one-off task {seed}-{i}")
    return tasks


def digest(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=8).hexdigest()


class Services:
    """The agent's expensive dependencies."""

    def __init__(self, meter: Meter) -> None:
        self.meter = meter

    async def discover_catalog(self) -> dict[str, Any]:
        await self.meter.spend("catalog", CATALOG_DISCOVERY)
        return {"version": "2026.11", "tools": [f"tool_{i}" for i in range(40)]}

    async def embed(self, text: str) -> list[float]:
        await self.meter.spend("embedding", EMBEDDING)
        rng = random.Random(text)
        return [rng.random() for _ in range(256)]

    async def search(self, embedding: list[float], top_k: int) -> list[dict[str, Any]]:
        await self.meter.spend("search", SEARCH)
        best = sorted(range(len(embedding)), key=embedding.__getitem__)[-top_k:]
        return [{"tool": f"tool_{i % 40}", "score": embedding[i]} for i in best]

    async def call_tool(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        await self.meter.spend("tool_call", TOOL_CALL)
        return {"tool": name, "args": args, "output": f"result of {name}"}


Step = Callable[[str], Awaitable[Any]]


def uncached_step(services: Services) -> Step:
    async def step(task: str) -> Any:
        catalog = await services.discover_catalog()
        embedding = await services.embed(task)
        hits = await services.search(embedding, top_k=3)
        return await services.call_tool(hits[0]["tool"], {"task": task, "v": catalog["version"]})

    return step


def cached_step(services: Services, cache: AsyncToolCache) -> Step:
    @cache.cached(namespace="results")
    async def call_tool(name: str, args: dict[str, Any]) -> dict[str, Any]:
        return await services.call_tool(name, args)

    async def step(task: str) -> Any:
        catalog = await cache.get_or_set("current", services.discover_catalog, namespace="catalog")
        text_hash = digest(task)
        embedding = await cache.get_or_set(
            f"embedding:{text_hash}:demo-embed-v1",
            lambda: services.embed(task),
            namespace="embeddings",
            type=list[float],
        )
        hits = await cache.get_or_set(
            f"search:{text_hash}:{catalog['version']}:3",
            lambda: services.search(embedding, 3),
            namespace="search",
        )
        return await call_tool(hits[0]["tool"], {"task": task, "v": catalog["version"]})

    return step


async def run_agents(step: Step) -> list[float]:
    """Every agent's step latencies, in seconds."""
    latencies: list[float] = []

    async def agent(seed: int) -> None:
        for task in task_stream(seed):
            started = time.perf_counter()
            await step(task)
            latencies.append(time.perf_counter() - started)

    await asyncio.gather(*(agent(seed) for seed in range(AGENTS)))
    return latencies


def summary(name: str, latencies: list[float], wall: float, meter: Meter) -> str:
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p95 = ordered[int(len(ordered) * 0.95) - 1] * 1000
    return (
        f"{name:<14} {len(ordered):>5} {p50:>9.2f} {p95:>9.2f} {wall:>8.2f} "
        f"{meter.seconds:>12.2f} {meter.dollars:>9.3f}"
    )


async def main() -> None:
    header = (
        f"{'run':<14} {'steps':>5} {'p50 ms':>9} {'p95 ms':>9} {'wall s':>8} "
        f"{'service s':>12} {'cost $':>9}"
    )
    print(f"Simulated agent loop: {AGENTS} agents x {STEPS_PER_AGENT} steps\n")
    print(header)
    print("-" * len(header))

    plain = Meter()
    started = time.perf_counter()
    plain_latencies = await run_agents(uncached_step(Services(plain)))
    plain_wall = time.perf_counter() - started
    print(summary("without cache", plain_latencies, plain_wall, plain))

    with tempfile.TemporaryDirectory() as scratch:
        # What one call of each kind costs, so stats() can say what the cache saved.
        prices = {"embeddings": EMBEDDING[1], "search": SEARCH[1], "results": TOOL_CALL[1]}
        overrides: dict[str, Any] = {
            "key_prefix": f"demo-{uuid.uuid4().hex[:8]}",
            "namespaces": {
                name: replace(DEFAULT_NAMESPACES[name], cost_per_call=price)
                for name, price in prices.items()
            },
        }
        if not os.environ.get("TOOLWEAVER_CACHE_DIR"):
            overrides["cache_dir"] = scratch
        async with AsyncToolCache.from_env(**overrides) as cache:
            metered = Meter()
            started = time.perf_counter()
            cached_latencies = await run_agents(cached_step(Services(metered), cache))
            cached_wall = time.perf_counter() - started
            print(summary("with cache", cached_latencies, cached_wall, metered))
            stats = cache.stats()
            health = await cache.health_check()
            await cache.clear()

    print()
    print(f"stores in the chain: {', '.join(health['stores'])}  (redis: {health['redis_ping']})")
    print(
        f"hit rate: {stats.hit_rate:.0%}   hits per store: {dict(stats.overall.hits)}   "
        f"loader calls: {stats.overall.loader_calls}"
    )
    saved = plain_wall - cached_wall
    print(
        f"time saved: {saved:.2f} s of {plain_wall:.2f} s ({saved / plain_wall:.0%}), "
        f"cost ${plain.dollars:.3f} -> ${metered.dollars:.3f}, "
        f"median step {statistics.median(plain_latencies) * 1000:.0f} ms -> "
        f"{statistics.median(cached_latencies) * 1000:.2f} ms"
    )
    print(
        f"the cache's own account (stats()): saved {stats.overall.saved_seconds:.2f} s of "
        f"loader time and ${stats.overall.saved_cost:.3f} in {stats.overall.total_hits} hits"
    )
    print(f"service calls without cache: {plain.calls}")
    print(f"service calls with cache:    {metered.calls}")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
