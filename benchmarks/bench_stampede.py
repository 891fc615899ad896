"""A stampede: 1000 concurrent calls of one missing key with a 50 ms loader.

    python -m benchmarks.bench_stampede [--quick] [--json] [--redis-url URL]
                                        [--callers 1000] [--processes 4] [--repeat 5]

Counts loader calls and wall time (first call to last answer) for toolweaver-async's
``@cache.cached``, aiocache's ``@cached`` and cashews' ``@cache`` without and with its lock, all
in the same run: first in one process (memory, then Redis backends), then with the callers
split over ``--processes`` spawned processes sharing one Redis. Each repeat uses a new key, so
every round starts from a miss. Starts its own redis-server unless --redis-url is given.
"""

from __future__ import annotations

import asyncio
import gc
import json
import multiprocessing
import statistics
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from multiprocessing.synchronize import Barrier
from queue import Queue
from typing import Any
from urllib.parse import urlsplit

from toolweaver_async import AsyncToolCache, CacheConfig

from ._harness import RESULTS, machine_line, parser, redis_for_benchmark, run

LOADER_SECONDS = 0.05
VALUE = {"embedding": [0.125] * 64, "model": "text-embedding-3-small"}


@dataclass
class Outcome:
    """One contender in one scope: loader calls and wall time of each repeat."""

    scope: str
    contender: str
    backend: str
    loader_calls: list[int]
    wall_ms: list[float]

    @property
    def median_ms(self) -> float:
        return statistics.median(self.wall_ms)


class Contender:
    """A decorated async function with a 50 ms loader that counts its calls; ``call(round)``
    misses on each new ``round``."""

    def __init__(self) -> None:
        self.calls = 0

    async def load(self, round_: int) -> dict[str, Any]:
        self.calls += 1
        await asyncio.sleep(LOADER_SECONDS)
        return {"round": round_, **VALUE}

    async def call(self, round_: int) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        pass


class Floor(Contender):
    """No cache: every caller awaits one shared task running the loader. What the event loop
    alone costs for 1000 awaiting tasks; no cache can beat it."""

    def __init__(self, redis_url: str | None, prefix: str) -> None:
        super().__init__()
        self.tasks: dict[int, asyncio.Task[dict[str, Any]]] = {}

    async def call(self, round_: int) -> Any:  # type: ignore[override]
        task = self.tasks.get(round_)
        if task is None:
            task = self.tasks[round_] = asyncio.ensure_future(self.load(round_))
        return await asyncio.shield(task)


class Toolweaver(Contender):
    def __init__(self, redis_url: str | None, prefix: str) -> None:
        super().__init__()
        if redis_url is None:
            config = CacheConfig(stores=("memory",), key_prefix=prefix)
        else:
            config = CacheConfig(
                use_redis=True, redis_url=redis_url, key_prefix=prefix, stores=("memory", "redis")
            )
        self.cache = AsyncToolCache(config)
        self.call = self.cache.cached(namespace="results", ttl=60)(self.load)  # type: ignore[method-assign]

    async def close(self) -> None:
        await self.cache.aclose()


class Aiocache(Contender):
    def __init__(self, redis_url: str | None, prefix: str) -> None:
        super().__init__()
        from aiocache import Cache, cached

        options: dict[str, Any] = {"cache": Cache.MEMORY}
        if redis_url is not None:
            from redis.asyncio import BlockingConnectionPool

            parts = urlsplit(redis_url)
            # A blocking pool: with redis-py's default pool, 1000 concurrent calls fail with
            # "Too many connections" instead of waiting.
            options = {
                "cache": Cache.REDIS,
                "endpoint": parts.hostname,
                "port": parts.port,
                "pool_max_size": 64,
                "connection_pool_class": BlockingConnectionPool,
            }
        self.call = cached(ttl=60, namespace=prefix, **options)(self.load)  # type: ignore[method-assign]

    async def close(self) -> None:
        await self.call.cache.close()  # type: ignore[attr-defined]


class Cashews(Contender):
    def __init__(self, redis_url: str | None, prefix: str, *, lock: bool) -> None:
        super().__init__()
        from cashews import Cache

        self.cache = Cache()
        self.cache.setup(redis_url or "mem://")
        self.call = self.cache(ttl=60, lock=lock, prefix=prefix)(self.load)  # type: ignore[method-assign]

    async def close(self) -> None:
        await self.cache.close()


CONTENDERS: dict[str, tuple[str, Callable[[str | None, str], Contender]]] = {
    "asyncio floor": ("one shared task, no cache", Floor),
    "toolweaver-async": ("@cache.cached", Toolweaver),
    "aiocache": ("@cached", Aiocache),
    "cashews": ("@cache", lambda url, prefix: Cashews(url, prefix, lock=False)),
    "cashews lock": ("@cache(lock=True)", lambda url, prefix: Cashews(url, prefix, lock=True)),
}


async def _round(contender: Contender, round_: int, callers: int) -> tuple[int, float, float]:
    """(loader calls, start, end) of ``callers`` concurrent calls of one missing key."""
    before = contender.calls
    started = time.monotonic()
    await asyncio.gather(*(contender.call(round_) for _ in range(callers)))
    return contender.calls - before, started, time.monotonic()


async def in_process(url: str, callers: int, repeat: int) -> list[Outcome]:
    """Every contender over memory, then over Redis, in one process. Rounds are interleaved
    (round 1 of each contender, then round 2 ...) so a busy machine slows them alike."""
    runs: list[tuple[Outcome, Contender]] = []
    for backend, backend_url in (("memory", None), ("redis", url)):
        for name, (label, build) in CONTENDERS.items():
            if name == "asyncio floor" and backend_url is not None:
                continue
            contender = build(backend_url, f"bench{uuid.uuid4().hex[:8]}")
            outcome = Outcome("1 process", f"{name} {label}", backend, [], [])
            runs.append((outcome, contender))
    try:
        for _, contender in runs:
            await _round(contender, -1, 10)  # connect and warm up
        for round_ in range(repeat):
            for outcome, contender in runs:
                gc.collect()
                loads, started, ended = await _round(contender, round_, callers)
                outcome.loader_calls.append(loads)
                outcome.wall_ms.append((ended - started) * 1000)
    finally:
        for _, contender in runs:
            await contender.close()
    return [outcome for outcome, _ in runs]


def _process_main(
    name: str,
    redis_url: str,
    prefix: str,
    callers: int,
    repeat: int,
    barrier: Barrier,
    results: Queue[Any],
) -> None:
    async def main() -> None:
        contender = CONTENDERS[name][1](redis_url, prefix)
        rounds = []
        try:
            await _round(contender, -1 - int(time.time() * 1000) % 1000, 1)  # connect
            for round_ in range(repeat):
                await asyncio.to_thread(barrier.wait, 60)
                rounds.append(await _round(contender, round_, callers))
        finally:
            await contender.close()
        results.put(rounds)

    run(main)


def across_processes(
    name: str, redis_url: str, callers: int, processes: int, repeat: int
) -> Outcome:
    spawn = multiprocessing.get_context("spawn")
    barrier = spawn.Barrier(processes)
    results = spawn.Queue()
    prefix = f"bench{uuid.uuid4().hex[:8]}"
    share = callers // processes
    workers = [
        spawn.Process(
            target=_process_main,
            args=(name, redis_url, prefix, share, repeat, barrier, results),
        )
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    per_process = [results.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=30)
    calls = [sum(p[r][0] for p in per_process) for r in range(repeat)]
    walls = [
        (max(p[r][2] for p in per_process) - min(p[r][1] for p in per_process)) * 1000
        for r in range(repeat)
    ]
    label = CONTENDERS[name][0]
    return Outcome(f"{processes} processes", f"{name} {label}", "redis", calls, walls)


def render(outcomes: list[Outcome], callers: int, processes: int) -> str:
    loader_ms = LOADER_SECONDS * 1000
    floor = next(o.median_ms for o in outcomes if o.contender.startswith("asyncio floor"))
    lines = [
        f"### Stampede: {callers} concurrent calls of one missing key, {loader_ms:.0f} ms loader",
        "",
        "| scope | contender | backend | loader calls | wall ms (median) | wall ms (min..max) "
        "| over the loader | over the asyncio floor |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for o in outcomes:
        low, high = min(o.loader_calls), max(o.loader_calls)
        calls = f"{low}" if low == high else f"{low}..{high}"
        lines.append(
            f"| {o.scope} | {o.contender} | {o.backend} | {calls} | {o.median_ms:.1f} | "
            f"{min(o.wall_ms):.1f}..{max(o.wall_ms):.1f} | +{o.median_ms - loader_ms:.1f} | "
            f"+{o.median_ms - floor:.1f} |"
        )
    ours = [o for o in outcomes if o.contender.startswith("toolweaver-async")]
    one_call = all(set(o.loader_calls) == {1} for o in ours)
    lines += [
        "",
        f"_{machine_line()}; {processes} processes share {callers} callers; each of the "
        f"{len(outcomes[0].wall_ms)} repeats is a new key_",
        "",
        f"- target: 1 loader call in every case: {'met' if one_call else 'NOT met'}",
    ]
    for o in ours:
        if o.scope == "1 process":
            over = o.median_ms - loader_ms
            lines.append(
                f"- target: in-process ({o.backend}) wall time within 10 ms of the loader's "
                f"{loader_ms:.0f} ms: +{over:.1f} ms, {'met' if over <= 10 else 'NOT met'} "
                f"(the asyncio floor alone is +{floor - loader_ms:.1f} ms)"
            )
    return "\n".join(lines) + "\n"


async def main_in_process(url: str, callers: int, repeat: int) -> list[Outcome]:
    outcomes = [await in_process("asyncio floor", None, callers, repeat)]
    outcomes[0].backend = "-"
    for backend_url in (None, url):
        for name in CONTENDERS:
            if name != "asyncio floor":
                outcomes.append(await in_process(name, backend_url, callers, repeat))
    return outcomes


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--callers", type=int, default=1000)
    p.add_argument("--processes", type=int, default=4)
    p.add_argument("--repeat", type=int, default=9)
    args = p.parse_args()
    repeat = 2 if args.quick else args.repeat
    outcomes: list[Outcome] = []
    with redis_for_benchmark(args.redis_url) as url:

        async def in_one_process() -> None:
            outcomes.extend(await in_process(url, args.callers, repeat))

        run(in_one_process)
        for name in CONTENDERS:
            if name != "asyncio floor":  # one process's tasks cannot be shared
                outcomes.append(across_processes(name, url, args.callers, args.processes, repeat))
    markdown = render(outcomes, args.callers, args.processes)
    data = {
        "title": "stampede",
        "machine": machine_line(),
        "callers": args.callers,
        "processes": args.processes,
        "loader_ms": LOADER_SECONDS * 1000,
        "results": [asdict(o) | {"median_ms": round(o.median_ms, 2)} for o in outcomes],
    }
    print(json.dumps(data, indent=2) if args.json else markdown)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "stampede.md").write_text(markdown)
    (RESULTS / "stampede.json").write_text(json.dumps(data, indent=2))


if __name__ == "__main__":
    main()
