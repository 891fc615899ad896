"""How the layers work, after ToolWeaver's samples/07-caching-optimization/caching_deep_dive.py.

The health report, which store answered a read, promotion of a hit into the faster stores, TTL
expiry (with a fake clock, so nothing waits), the circuit breaker that guards Redis and the file
store, and the time a cached expensive call saves. Latencies are simulated with asyncio.sleep.

    USE_REDIS=false python examples/caching_deep_dive.py      # memory + file (the default)
    USE_REDIS=true  python examples/caching_deep_dive.py      # memory + Redis + file
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from toolweaver_async import AsyncToolCache, CacheConfig, CircuitBreaker
from toolweaver_async.testing import FakeClock  # a clock that moves only when told to

EXPENSIVE_CALL_SECONDS = 0.05  # a simulated LLM call
RUNS = 5


def section(title: str) -> None:
    print(f"\n{title}\n{'-' * 72}")


async def read_and_tell(cache: AsyncToolCache, key: str) -> str:
    """Read ``key`` and say which store answered, from the hit counters before and after."""
    before = dict(cache.stats().overall.hits)
    value = await cache.get(key)
    after = cache.stats().overall.hits
    answered = [name for name, hits in after.items() if hits > before.get(name, 0)]
    return f"{value}  <- {answered[0] if answered else 'miss'}"


async def health(cache: AsyncToolCache) -> None:
    section("1. Health check")
    report = await cache.health_check()
    for field in (
        "redis_enabled",
        "redis_available",
        "redis_url",
        "circuit_breaker_state",
        "fallback_enabled",
        "cache_dir",
        "redis_ping",
    ):
        print(f"  {field:<22} {report[field]}")
    for name, store in report["stores"].items():
        problem = f"  ({store['error']})" if store.get("error") else ""
        print(f"  store {name:<16} breaker {store['state']}, answered: {store['ok']}{problem}")


async def which_layer(cache: AsyncToolCache, config: CacheConfig) -> None:
    section("2. Which layer answered")
    await cache.set("user:123", {"name": "Alice", "role": "admin"}, ttl=60)
    print(f"  this cache:       GET user:123 -> {await read_and_tell(cache, 'user:123')}")
    async with AsyncToolCache(config) as other:  # another process: same prefix, empty memory
        print(f"  a second cache:   GET user:123 -> {await read_and_tell(other, 'user:123')}")


async def promotion(cache: AsyncToolCache, config: CacheConfig) -> None:
    section("3. Promotion: a hit is copied into the faster stores")
    file_only = CacheConfig(
        stores=("file",), cache_dir=config.cache_dir, key_prefix=config.key_prefix
    )
    async with AsyncToolCache(file_only) as writer:
        await writer.set("report:q3", {"revenue": 1250000}, ttl=600)
    print("  written by a file-only cache: report:q3")
    print(f"  first read:   {await read_and_tell(cache, 'report:q3')}")
    print(f"  second read:  {await read_and_tell(cache, 'report:q3')}")
    if config.use_redis:
        await asyncio.sleep(0.05)  # the copy into Redis runs in the background
        async with AsyncToolCache(config) as other:
            print(f"  a second cache: {await read_and_tell(other, 'report:q3')}")


async def ttl_expiry(config: CacheConfig) -> None:
    section("4. TTL and expiry (fake clock: no waiting)")
    clock = FakeClock(time.time())
    async with AsyncToolCache(config, clock=clock) as cache:
        await cache.set("temp:data", "this expires quickly", ttl=2)
        for label, step in (("t=0s", 0.0), ("t=1.5s", 1.5), ("t=3s", 1.5)):
            clock.advance(step)
            print(f"  {label:<7} GET temp:data -> {await cache.get('temp:data')}")
        print("  (ttl=2: expired in every store, memory, Redis and file alike)")


def circuit_breaker() -> None:
    section("5. Circuit breaker (one guards each of Redis and the file store)")
    clock = FakeClock(time.time())
    breaker = CircuitBreaker(
        failure_threshold=3, recovery_timeout=5.0, jitter=0.0, clock=clock, name="demo"
    )
    print(f"  start:                   {breaker.state.name}")
    for attempt in range(1, 4):
        breaker.record_failure()
        print(f"  failure {attempt}:               {breaker.state.name}")
    print(f"  allow() while open:      {breaker.allow()}  (no I/O: the store is skipped)")
    clock.advance(5.0)
    print(f"  5 s later, allow():      {breaker.allow()}  -> {breaker.state.name} (one probe)")
    breaker.record_failure()
    waiting = breaker.snapshot()["recovery_timeout"]
    print(f"  probe failed:            {breaker.state.name} again, for {waiting:g} s this time")
    clock.advance(waiting)
    print(f"  {waiting:g} s later, allow():     {breaker.allow()}  -> {breaker.state.name}")
    breaker.record_success()
    print(f"  probe succeeded:         {breaker.state.name}")
    breaker.trip()
    print(f"  trip() (store down at start-up): {breaker.state.name}")


async def expensive_call(prompt: str) -> dict[str, str]:
    await asyncio.sleep(EXPENSIVE_CALL_SECONDS)
    return {"prompt": prompt, "answer": f"an answer to {prompt!r}"}


async def median_ms(call: Callable[[str], Awaitable[object]], prompt: str) -> float:
    timings = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await call(prompt)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings) * 1000


async def timing(cache: AsyncToolCache) -> None:
    section(f"6. With and without cache (median of {RUNS} calls)")
    cached_call = cache.cached(namespace="results", ttl=60)(expensive_call)
    without = await median_ms(expensive_call, "summarise the invoice")
    await cached_call("summarise the invoice")  # the first call runs and fills the cache
    with_cache = await median_ms(cached_call, "summarise the invoice")
    print(f"  without cache: {without:8.2f} ms per call")
    print(f"  with cache:    {with_cache:8.3f} ms per call")
    print(f"  speedup:       {without / with_cache:8.0f}x")
    print(f"  loader calls:  {cache.stats().overall.loader_calls} (the one miss)")


async def main() -> None:
    print("=" * 72)
    print("toolweaver-async deep dive: the multi-layer cache")
    print("=" * 72)
    with tempfile.TemporaryDirectory() as scratch:
        overrides: dict[str, Any] = {"key_prefix": f"dive-{uuid.uuid4().hex[:8]}"}
        if not os.environ.get("TOOLWEAVER_CACHE_DIR"):
            overrides["cache_dir"] = scratch
        config = CacheConfig.from_env(**overrides)
        print(f"stores in the chain: {' -> '.join(config.enabled_stores)}")
        async with AsyncToolCache(config) as cache:
            await health(cache)
            await which_layer(cache, config)
            await promotion(cache, config)
            await ttl_expiry(config)
            circuit_breaker()
            await timing(cache)
            await cache.clear()
    print("\nDone: every entry of this run was removed with cache.clear().")


if __name__ == "__main__":
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
    else:
        uvloop.run(main())
