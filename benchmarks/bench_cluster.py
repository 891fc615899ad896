"""Redis Cluster and Sentinel: gets/s against raw RedisCluster, and failover timelines.

    python -m benchmarks.bench_cluster [--quick] [--json] [--throughput-only]

Starts a local cluster (3 primaries + 3 replicas), a Sentinel setup (primary, replica, 3
sentinels) and a single redis-server, all on free loopback ports, in this one run.

Throughput: N coroutines each get a ~1 KB value, cycling over 1000 keys spread over every slot.
Baselines: raw ``redis.asyncio.cluster.RedisCluster`` ``get`` (one call per get), and raw
``mget_nonatomic`` of 100 of the same keys per call (counted as 100 gets). Ours: the cache
with Redis alone in the chain (memory off), on the cluster and on the single server.

Failover: 50 agents get and set their own keys through a Redis + file chain; a primary is
SIGKILLed after 2 s and its replica promoted. Per second: gets, p50/p99 latency, errors;
then how long after the promotion the cache read from Redis again (breaker closed, outage
journal replayed). An observer (a second cache instance with its own folder, Redis alone, as
another process would read) keeps reading the agents' keys: a read older than a write that
had returned before it started is stale. At the end the observer reads every key once more:
Redis must hold each one's newest value (else it is counted as older or missing).
"""

from __future__ import annotations

import asyncio
import dataclasses
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import msgspec
from redis.asyncio.cluster import RedisCluster

from tests.topologies import ClusterTopology, Node, SentinelTopology
from toolweaver_async import AsyncToolCache, BreakerSettings, BreakerState, CacheConfig
from toolweaver_async.testing import RedisServer

from ._harness import (
    Contender,
    Report,
    Result,
    Target,
    compare_throughput,
    cpu_note,
    emit,
    interleaved_throughput,
    parser,
    percentile,
    run,
)
from ._values import ONE_KB

CONCURRENCY = (100, 1000)
KEYS = [f"key-{n}" for n in range(1000)]
AGENTS = 50


def cycling(keys: list[str]) -> Callable[[], str]:
    position = 0

    def next_key() -> str:
        nonlocal position
        position = (position + 1) % len(keys)
        return keys[position]

    return next_key


async def throughput(
    cluster: ClusterTopology, single: RedisServer, seconds: float, rounds: int, scratch: Path
) -> tuple[list[Result], list[Target]]:
    prefix = f"bench{uuid.uuid4().hex[:6]}"
    encoded = msgspec.msgpack.encode(ONE_KB)
    decoder = msgspec.msgpack.Decoder()
    on_cluster = AsyncToolCache(
        CacheConfig(
            redis_url=cluster.url, key_prefix=prefix, cache_dir=scratch / "c", stores=("redis",)
        )
    )
    on_single = AsyncToolCache(
        CacheConfig(
            redis_url=single.url, key_prefix=prefix, cache_dir=scratch / "s", stores=("redis",)
        )
    )
    for cache in (on_cluster, on_single):
        await cache.connect()
        await cache.set_many(dict.fromkeys(KEYS, ONE_KB))
    raw = RedisCluster.from_url(cluster.url, max_connections=100)
    await raw.initialize()
    raw_keys = [f"{prefix}:raw:{key}" for key in KEYS]
    await raw.mset_nonatomic(dict.fromkeys(raw_keys, encoded))
    raw_next = cycling(raw_keys)
    batch_start = 0

    # RedisCluster's pools do not wait for a free connection (MaxConnectionsError): hold
    # callers at 100 in flight, as a blocking pool of 100 would.
    gate = asyncio.Semaphore(100)

    async def raw_get() -> Any:
        async with gate:
            return decoder.decode(await raw.get(raw_next()))

    async def raw_mget_100() -> Any:
        nonlocal batch_start
        batch_start = (batch_start + 100) % len(raw_keys)
        async with gate:
            values = await raw.mget_nonatomic(raw_keys[batch_start : batch_start + 100])
        return [decoder.decode(v) for v in values]

    misses = {"cluster": 0, "single": 0}

    def counted(cache: AsyncToolCache, where: str) -> Callable[[], Awaitable[Any]]:
        """The cache's gets over ``KEYS``, counting misses: a breaker tripped by a stalled
        machine answers at once with nothing, which would flatter the figures."""
        next_key = cycling(KEYS)

        async def get() -> Any:
            value = await cache.get(next_key())
            if value is None:
                misses[where] += 1
            return value

        return get

    results: list[Result] = []
    targets: list[Target] = []
    for n in CONCURRENCY:
        group = f"{n} coroutines"
        per_call, batched, ours, single_node = await interleaved_throughput(
            group,
            [
                Contender("RedisCluster.get + msgspec, one call per get (baseline)", raw_get, n),
                Contender(
                    "RedisCluster.mget_nonatomic x100 + msgspec (p50/p99 per call)",
                    raw_mget_100,
                    max(1, n // 100),
                    per_call=100,
                ),
                Contender(
                    "cache.get on the cluster, redis only", counted(on_cluster, "cluster"), n
                ),
                Contender(
                    "cache.get on one redis-server, redis only", counted(on_single, "single"), n
                ),
            ],
            seconds=seconds,
            rounds=rounds,
        )
        results += [
            per_call,
            compare_throughput(batched, per_call),
            compare_throughput(ours, per_call),
            compare_throughput(single_node, per_call),
        ]
        ratio = ours.ops_per_s / per_call.ops_per_s
        targets.append(
            Target(
                f"cluster gets, {n} coroutines: >= 4x raw per-call RedisCluster.get",
                f"{ours.ops_per_s:,.0f} gets/s{cpu_note(ours)}",
                f"{per_call.ops_per_s:,.0f} gets/s{cpu_note(per_call)}",
                round(ratio, 2),
                ratio >= 4,
            )
        )
        versus_mget = ours.ops_per_s / batched.ops_per_s
        targets.append(
            Target(
                f"cluster gets, {n} coroutines: >= raw mget_nonatomic of the same keys",
                f"{ours.ops_per_s:,.0f} gets/s",
                f"{batched.ops_per_s:,.0f} gets/s",
                round(versus_mget, 2),
                versus_mget >= 1,
            )
        )
    if any(misses.values()):
        for target in targets:
            target.met = False
            target.note = (
                f"invalid run: {misses['cluster']:,} + {misses['single']:,} misses "
                "(a breaker tripped on a stalled machine)"
            )
    for cache in (on_cluster, on_single):
        await cache.clear()
        await cache.aclose()
    await raw.delete(*raw_keys[:1])
    await raw.aclose()
    return results, targets


async def failover_timeline(
    name: str,
    url: str,
    victim: Node,
    wait_promoted: Callable[[], object],
    scratch: Path,
    seconds: float,
) -> tuple[str, float | None, int, int]:
    """Markdown rows per second, seconds from promotion until Redis answered again, errors,
    stale reads by the observer (see the module doc)."""
    settings = CacheConfig(
        redis_url=url,
        key_prefix=f"fo{uuid.uuid4().hex[:6]}",
        cache_dir=scratch / name,
        stores=("redis", "file"),
        redis_connect_timeout=0.1,
        breaker=BreakerSettings(
            failure_threshold=3, recovery_timeout=0.05, max_recovery_timeout=0.2
        ),
    )
    cache = AsyncToolCache(settings)
    await cache.connect()
    observer = AsyncToolCache(
        dataclasses.replace(settings, cache_dir=scratch / f"{name}-observer", stores=("redis",))
    )
    await observer.connect()
    for _ in range(100):  # discovery done, breaker closed
        await cache.set("warm-up", 1)
        if await cache.get("warm-up") == 1:
            break
    samples: list[tuple[float, float]] = []  # (seconds since start, latency)
    errors: list[float] = []
    stop = asyncio.Event()
    started = time.monotonic()
    latest: dict[str, int] = {}  # per key, the version whose set returned last
    stale: list[float] = []  # when the observer read a version older than that

    async def agent(n: int) -> None:
        step = 0
        while not stop.is_set():
            key = f"agent{n}:{step % 3}"
            try:
                t0 = time.monotonic()
                await cache.get(key)
                samples.append((t0 - started, time.monotonic() - t0))
                await cache.set(key, step)
                latest[key] = step
            except Exception:  # the promise: never; counted if it happens
                errors.append(time.monotonic() - started)
            step += 1
            await asyncio.sleep(0.002)

    # Hits per store, sampled: with one breaker per primary, a dead primary sends only its
    # own slots to the file store; the other primaries' keys are still served by Redis.
    hit_samples: list[tuple[float, int, int]] = []

    async def sample_hits() -> None:
        while not stop.is_set():
            hits = cache.stats().overall.hits
            hit_samples.append(
                (time.monotonic() - started, hits.get("redis", 0), hits.get("file", 0))
            )
            await asyncio.sleep(0.05)

    async def observe() -> None:
        step = 0
        while not stop.is_set():
            key = f"agent{step % AGENTS}:{(step // AGENTS) % 3}"
            step += 1
            expected = latest.get(key)
            try:
                got = await observer.get(key)
            except Exception:
                got = None
            if got is not None and expected is not None and got < expected:
                stale.append(time.monotonic() - started)
            await asyncio.sleep(0.001)

    tasks = [asyncio.create_task(agent(n)) for n in range(AGENTS)]
    tasks.append(asyncio.create_task(sample_hits()))
    tasks.append(asyncio.create_task(observe()))
    await asyncio.sleep(2.0)
    loop = asyncio.get_running_loop()
    killed_at = time.monotonic() - started
    await loop.run_in_executor(None, victim.kill)
    await loop.run_in_executor(None, wait_promoted)
    promoted_at = time.monotonic() - started
    layer = next(layer for layer in cache._layers if layer.name == "redis")
    back_at: float | None = None
    while time.monotonic() - started < promoted_at + 15:
        # Redis in use again: breaker closed and the outage journal replayed into it.
        if layer.breaker.state is BreakerState.CLOSED and not layer.journal:
            back_at = time.monotonic() - started
            break
        await asyncio.sleep(0.01)
    remaining = max(0.0, seconds - (time.monotonic() - started))
    await asyncio.sleep(remaining)
    stop.set()
    await asyncio.gather(*tasks)
    for _ in range(1500):  # up to 15 s for the journal to be replayed before the last reads
        if layer.breaker.state is BreakerState.CLOSED and not layer.journal:
            break
        await asyncio.sleep(0.01)
    older = missing = 0
    for key, version in latest.items():
        got = await observer.get(key)
        if got is None:
            missing += 1
        elif got != version:
            older += 1
    await observer.aclose()
    await cache.aclose()
    rows = [
        "| second | gets | p50 ms | p99 ms | errors | hits from Redis | hits from file |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    last = int(max(t for t, _ in samples)) + 1
    for second in range(last):
        lat = sorted(d for t, d in samples if second <= t < second + 1)
        errs = sum(1 for t in errors if second <= t < second + 1)
        from_redis, from_file = _hits_in(hit_samples, second)
        if not lat:
            rows.append(f"| {second} | 0 | - | - | {errs} | {from_redis} | {from_file} |")
            continue
        marks = []
        if second <= killed_at < second + 1:
            marks.append("primary killed")
        if second <= promoted_at < second + 1:
            marks.append("replica promoted")
        if back_at is not None and second <= back_at < second + 1:
            marks.append("Redis used again")
        note = f" ({', '.join(marks)})" if marks else ""
        rows.append(
            f"| {second}{note} | {len(lat)} | {percentile(lat, 0.5) * 1000:.2f} | "
            f"{percentile(lat, 0.99) * 1000:.2f} | {errs} | {from_redis} | {from_file} |"
        )
    after = None if back_at is None else round(back_at - promoted_at, 3)
    dead = [(r, f) for t, r, f in hit_samples if killed_at + 0.5 <= t <= promoted_at]
    redis_share = "-"
    if len(dead) >= 2 and (dead[-1][0] - dead[0][0]) + (dead[-1][1] - dead[0][1]) > 0:
        from_redis, from_file = dead[-1][0] - dead[0][0], dead[-1][1] - dead[0][1]
        redis_share = f"{100 * from_redis / (from_redis + from_file):.0f} %"
    summary = (
        f"**{name}**: primary killed at {killed_at:.2f} s, replica promoted at "
        f"{promoted_at:.2f} s, Redis used again "
        + (f"{after:.2f} s after the promotion" if after is not None else "never (within 15 s)")
        + f"; from 0.5 s after the kill until the promotion, {redis_share} of the hits "
        "below memory came from Redis" + f"; {len(errors)} errors reached the agents; "
        f"mean latency {statistics.fmean(d for _, d in samples) * 1000:.2f} ms; "
        f"the observer read {len(stale)} stale values"
        + (
            f" (the last {stale[-1] - promoted_at:.2f} s after the promotion)"
            if stale and stale[-1] > promoted_at
            else ""
        )
        + f"; at the end Redis held the newest value of {len(latest) - older - missing} of "
        f"{len(latest)} keys ({older} older, {missing} missing)."
    )
    return summary + "\n\n" + "\n".join(rows), after, len(errors), len(stale)


def _hits_in(samples: list[tuple[float, int, int]], second: int) -> tuple[int, int]:
    """Redis and file hits counted during ``[second, second + 1)``, from cumulative samples."""
    inside = [(redis, file) for t, redis, file in samples if second <= t < second + 1]
    before = [(redis, file) for t, redis, file in samples if t < second]
    if not inside:
        return 0, 0
    start = before[-1] if before else (0, 0)
    return inside[-1][0] - start[0], inside[-1][1] - start[1]


async def failover_timelines(
    cluster: ClusterTopology, scratch: Path, seconds: float, targets: list[Target]
) -> str:
    """A primary of the cluster, then a Sentinel primary, killed under load: the Markdown
    timelines, with one target each appended to ``targets``."""
    primary = cluster.primaries()[0]
    survivor = cluster.primaries()[1]
    cluster_md, cluster_back, cluster_errors, cluster_stale = await failover_timeline(
        "cluster",
        f"redis://{survivor.address}/0",
        primary,
        lambda: cluster.wait_promoted(primary),
        scratch,
        seconds,
    )
    sentinel = SentinelTopology().start()
    try:
        victim = sentinel.primary()
        sentinel_md, sentinel_back, sentinel_errors, sentinel_stale = await failover_timeline(
            "sentinel",
            sentinel.url(),
            victim,
            lambda: sentinel.wait_promoted(victim),
            scratch,
            seconds,
        )
    finally:
        sentinel.stop()
    for name, back, errors, stale in (
        ("cluster", cluster_back, cluster_errors, cluster_stale),
        ("Sentinel", sentinel_back, sentinel_errors, sentinel_stale),
    ):
        measured = f"{errors} errors, {stale} stale reads by another instance"
        targets.append(
            Target(
                f"{name} failover under {AGENTS} agents: 0 errors, Redis used again after "
                "the promotion",
                measured + (f", back after {back} s" if back is not None else ""),
                "0 errors",
                None,
                errors == 0 and back is not None,
            )
        )
    return "### Failover timelines\n\n" + cluster_md + "\n\n" + sentinel_md


async def main() -> None:
    cli = parser(__doc__ or "")
    cli.add_argument("--throughput-only", action="store_true", help="skip the failover timelines")
    args = cli.parse_args()
    seconds, rounds = (0.6, 2) if args.quick else (3.0, 3)
    timeline_seconds = 5.0 if args.quick else 8.0
    appendix = ""
    with tempfile.TemporaryDirectory() as folder, RedisServer() as single:
        scratch = Path(folder)
        cluster = ClusterTopology().start()
        try:
            results, targets = await throughput(cluster, single, seconds, rounds, scratch)
            if not args.throughput_only:
                appendix = await failover_timelines(cluster, scratch, timeline_seconds, targets)
        finally:
            cluster.stop()
    emit(
        Report(
            "cluster",
            "Redis Cluster: gets/s of a ~1 KB value over 1000 keys by N coroutines (same run)",
            results,
            targets,
            appendix=appendix,
            notes=[
                "The cache batches the gets of one event-loop turn into one pipeline per "
                "primary (one MGET per generation stripe); raw per-call gets pay one round "
                "trip each through RedisCluster's routing.",
                "The machine is shared (2 cores, other jobs running): compare figures within "
                "this run only.",
            ],
        ),
        args,
    )


if __name__ == "__main__":
    run(main)
