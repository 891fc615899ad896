"""Failover: an agent workload while Redis is killed, restarted, paused and resumed.

    python -m benchmarks.bench_failover [--quick] [--json] [--agents N] [--memory]

Fifty agent coroutines read tool results (10 000 keys of ~1 KB, written beforehand) and store
fresh ones (a fifth of the steps, and every miss) through Redis, with no memory layer so that
every get really asks Redis. Part-way through, the redis-server is SIGKILLed and
restarted on the same port; later it is SIGSTOPped (a black hole: the port accepts, nothing
answers) and resumed. The same timeline runs twice in this process:

- **toolweaver-async**: ``stores=("redis", "file")`` with default settings (0.25 s command
  timeout, breaker: 5 failures, 2 s recovery growing to 30 s, 1 probe), outage journal on.
- **ToolWeaver-style baseline**: a plain ``redis.asyncio`` client with 5 s socket timeouts and
  no breaker; a failed call counts as an error and as a miss.

Printed per second: get latency p50/p99 (by the second the get started), errors reaching the
agent, the breaker state and journal size; then the time from Redis coming back to the breaker
closing with the journal replayed (baseline: to its first successful call). Always starts its
own redis-server on a free loopback port (it kills it).

``--agents N`` runs N agent coroutines instead of 50; ``--memory`` puts the memory layer in
front (``stores=("memory", "redis", "file")``). Every run also counts stale reads (a get
answered with an older version than one whose write had returned before the get started) and
the p99 of gets started from 0.5 s into each outage until it ends. Once the cache has closed it
reads every key written back from Redis alone and from the file store alone: a key whose newest
acknowledged value is in neither is lost (Redis runs without persistence, so what it held
before the SIGKILL is missing there by design; the file store has it).
"""

from __future__ import annotations

import asyncio
import math
import random
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache, BreakerSettings, BreakerState, CacheConfig
from toolweaver_async.testing import RedisServer

from ._harness import Report, Result, Target, compare, emit, parser, percentile, run
from ._values import ONE_KB

AGENTS = 50
# The outage p99 targets, for 200 agents with memory in front (quiet machine).
OUTAGE_P99_MS = {"kill": 31.0, "pause": 16.0}
KEYS = 10_000
THINK_SECONDS = 0.005  # an agent's own work between cache calls
WRITE_SHARE = 0.2  # steps that store a fresh tool result after the get
SEED = 20240611


@dataclass
class Timeline:
    """When each fault starts and ends, in seconds from the start of a run."""

    kill: float
    restart: float
    pause: float
    resume: float
    end: float

    @classmethod
    def for_run(cls, quick: bool) -> Timeline:
        if quick:
            return cls(kill=1.0, restart=2.5, pause=7.5, resume=10.5, end=16.0)
        # The black hole lasts longer than the baseline's 5 s socket timeout. After each fault
        # the run waits long enough for a breaker whose open period has doubled twice (8 s),
        # so one recovery never runs into the next fault.
        return cls(kill=2.0, restart=4.0, pause=10.0, resume=16.0, end=26.0)

    def redis_at(self, second: float) -> str:
        if self.kill <= second < self.restart:
            return "killed"
        if self.pause <= second < self.resume:
            return "paused"
        return "up"


@dataclass
class Run:
    """What one implementation saw."""

    name: str
    started: float = 0.0
    gets: list[tuple[float, float]] = field(default_factory=list)  # (start offset, seconds)
    errors: list[float] = field(default_factory=list)  # offsets of errors reaching an agent
    states: dict[int, str] = field(default_factory=dict)  # second -> breaker state
    journal: dict[int, int] = field(default_factory=dict)  # second -> journaled operations
    recovery: dict[str, float | None] = field(default_factory=dict)  # fault -> seconds
    open_period: dict[str, float] = field(default_factory=dict)  # fault -> breaker's at heal
    healed_at: dict[str, float] = field(default_factory=dict)  # fault -> perf_counter time
    closed_at: list[float] = field(default_factory=list)  # breaker closings, perf_counter time
    opened_at: list[float] = field(default_factory=list)  # breaker openings, perf_counter time
    faulted_at: dict[str, float] = field(default_factory=dict)  # fault -> perf_counter time
    last_success: float = 0.0
    down: bool = False  # set once a fault has taken effect, cleared once Redis is back
    written: dict[str, int] = field(default_factory=dict)  # key -> newest version written
    read_back: tuple[int, int] = (0, 0)  # outage writes found in Redis afterwards, of all
    stale: int = 0  # gets answered with an older version than one already written
    # Older, but written by a set that overlapped the newer one's (either order may land).
    overlapped: int = 0
    # (key, version) -> (set started, set returned or inf while in flight), perf_counter time
    set_calls: dict[tuple[str, int], tuple[float, float]] = field(default_factory=dict)
    outage_keys: set[str] = field(default_factory=set)  # keys written while Redis was away
    # After the cache closed (write-behind queue drained): keys whose newest acknowledged
    # version is in neither store, and those missing from each store.
    lost: list[str] = field(default_factory=list)
    missing: dict[str, int] = field(default_factory=dict)


Get = Callable[[str], Awaitable[Any]]
Set = Callable[[str, Any], Awaitable[None]]


def _overlapped(run_: Run, key: str, older: int, newer: int) -> bool:
    """Whether the set of version ``older`` of ``key`` was still running when the set of
    ``newer`` started: two overlapping sets may land in either order, so reading ``older``
    after both is no stale read. (Versions are numbered as sets start.)"""
    older_call = run_.set_calls.get((key, older))
    newer_call = run_.set_calls.get((key, newer))
    if older_call is None or newer_call is None:
        return False  # written before the run (version 0): never overlapping
    return older_call[1] > newer_call[0]


async def agents(get: Get, set_: Set, run_: Run, stop: asyncio.Event, count: int = AGENTS) -> None:
    rng = random.Random(SEED)
    loop_clock = time.perf_counter
    version = 0

    async def agent(n: int) -> None:
        nonlocal version
        mine = random.Random(rng.random())
        while not stop.is_set():
            key = f"tool:{mine.randrange(KEYS)}"
            started = loop_clock()
            newest = run_.written.get(key, -1)  # acknowledged before this get started
            try:
                value = await get(key)
            except Exception:
                run_.errors.append(started - run_.started)
                value = None
            else:
                run_.last_success = loop_clock()
                got = value.get("version", newest) if isinstance(value, dict) else newest
                if got < newest:
                    if _overlapped(run_, key, got, newest):
                        run_.overlapped += 1
                    else:
                        run_.stale += 1
            run_.gets.append((started - run_.started, loop_clock() - started))
            if value is None or mine.random() < WRITE_SHARE:
                version += 1
                # A write started while Redis is surely down; one racing the fault itself may
                # have been acknowledged by a Redis that then died without persistence.
                mark, during_outage = version, run_.down
                set_started = loop_clock()
                run_.set_calls[(key, mark)] = (set_started, math.inf)
                try:
                    await set_(key, {**ONE_KB, "key": key, "version": mark})
                except Exception:
                    run_.errors.append(loop_clock() - run_.started)
                else:
                    run_.set_calls[(key, mark)] = (set_started, loop_clock())
                    if mark > run_.written.get(key, -1):  # concurrent writes: the later call
                        run_.written[key] = mark
                        if during_outage:
                            run_.outage_keys.add(key)
                        else:
                            run_.outage_keys.discard(key)
            await asyncio.sleep(THINK_SECONDS)

    await asyncio.gather(*(agent(n) for n in range(count)))


async def drive(
    run_: Run,
    server: RedisServer,
    timeline: Timeline,
    get: Get,
    set_: Set,
    *,
    recovered: Callable[[], bool],
    sample: Callable[[], tuple[str, int]],
    open_period: Callable[[], float],
    count: int = AGENTS,
) -> None:
    """Run the agents along the timeline; record states each tick and recovery times."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    run_.started = time.perf_counter()
    workers = asyncio.ensure_future(agents(get, set_, run_, stop, count))
    events = [
        (timeline.kill, "kill", server.kill),
        (timeline.restart, "restart", server.start),
        (timeline.pause, "pause", server.pause),
        (timeline.resume, "resume", server.resume),
    ]
    healed: dict[str, float] = {}
    while (now := time.perf_counter() - run_.started) < timeline.end:
        second = int(now)
        state, journaled = sample()
        seen = run_.states.get(second, "")
        if seen.rpartition("→")[2] != state:  # every state the breaker was in that second
            run_.states[second] = f"{seen}→{state}" if seen else state
        run_.journal[second] = max(run_.journal.get(second, 0), journaled)
        if events and now >= events[0][0]:
            _, what, action = events.pop(0)
            if what in ("restart", "resume"):
                run_.down = False  # writes from here on may land directly
            # Recovery counts from before the restart call: Redis may answer (and the breaker
            # close) before start() has returned, so its end would understate the time.
            begun = time.perf_counter()
            await loop.run_in_executor(None, action)
            if what in ("kill", "pause"):
                run_.down = True
                run_.faulted_at[what] = begun
            if what in ("restart", "resume"):
                healed[what] = run_.healed_at[what] = begun
                run_.open_period[what] = open_period()
                run_.recovery[what] = None
        for what, at in healed.items():
            if run_.recovery[what] is None and recovered() and run_.last_success > at:
                run_.recovery[what] = time.perf_counter() - at
        await asyncio.sleep(0.005)
    stop.set()
    await workers


async def run_ours(
    server: RedisServer,
    timeline: Timeline,
    scratch: Path,
    *,
    count: int = AGENTS,
    memory: bool = False,
) -> Run:
    config = CacheConfig(
        use_redis=True,
        redis_url=server.url,
        cache_dir=scratch / "ours",
        key_prefix=f"bf{uuid.uuid4().hex[:8]}",
        stores=("memory", "redis", "file") if memory else ("redis", "file"),
    )
    run_ = Run("toolweaver-async")
    async with AsyncToolCache(config) as cache:
        [redis] = [layer for layer in cache._layers if layer.name == "redis"]
        breaker, journal = redis.breaker, redis.journal
        assert journal is not None

        def note_change(_name: str, _old: BreakerState, new: BreakerState) -> None:
            if new.value in ("closed", "open"):
                changes = run_.closed_at if new.value == "closed" else run_.opened_at
                changes.append(time.perf_counter())

        breaker.add_listener(note_change)

        async def set_(key: str, value: Any) -> None:
            await cache.set(key, value, namespace="results")

        for start in range(0, KEYS, 500):
            await cache.set_many(
                {f"tool:{n}": {**ONE_KB, "version": 0} for n in range(start, start + 500)},
                namespace="results",
            )

        await drive(
            run_,
            server,
            timeline,
            lambda key: cache.get(key, namespace="results"),
            set_,
            recovered=lambda: breaker.state.value == "closed" and not journal,
            sample=lambda: (breaker.state.value, len(journal)),
            open_period=lambda: breaker.current_recovery_timeout,
            count=count,
        )
        # Every value written while Redis was away must be in Redis itself once it is back.
        deadline = time.perf_counter() + BreakerSettings().max_recovery_timeout + 5
        while not (breaker.state.value == "closed" and not journal):
            if time.perf_counter() > deadline:
                break
            await cache.get("tool:0", namespace="results")  # traffic to probe with
            await asyncio.sleep(0.01)
        async with AsyncToolCache(config.with_changes(stores=("redis",))) as reader:
            found = 0
            for key in run_.outage_keys:
                value = await reader.get(key, namespace="results")
                # (with the memory layer, "reader" has none: this reads Redis itself)
                found += _holds(run_, key, value)
        run_.read_back = (found, len(run_.outage_keys))
    await _find_lost(config, run_)
    return run_


def _holds(run_: Run, key: str, value: Any) -> bool:
    """Whether ``value`` is the newest acknowledged version of ``key``, or one written by a
    set that overlapped it (either may have landed last)."""
    if not isinstance(value, dict):
        return False
    got, newest = value.get("version", -1), run_.written[key]
    return bool(got == newest or (got < newest and _overlapped(run_, key, got, newest)))


async def _find_lost(config: CacheConfig, run_: Run) -> None:
    """Read every key written during the run back from Redis alone and from the file store
    alone (as a restarted process would: what the file store missed is held back), once the
    cache has closed: a key whose value is in neither is lost."""
    keys = sorted(run_.written)
    holding: dict[str, set[str]] = {}
    for store in ("redis", "file"):
        found: dict[str, Any] = {}
        async with AsyncToolCache(config.with_changes(stores=(store,))) as alone:
            for start in range(0, len(keys), 500):
                found.update(await alone.get_many(keys[start : start + 500], namespace="results"))
        holding[store] = {key for key in keys if _holds(run_, key, found.get(key))}
        run_.missing[store] = len(keys) - len(holding[store])
    run_.lost = [key for key in keys if not any(key in held for held in holding.values())]


async def run_file_alone(scratch: Path, seconds: float) -> Run:
    """The same agents on the file store alone, nothing failing: the floor of any fallback."""
    config = CacheConfig(cache_dir=scratch / "file-alone", stores=("file",))
    run_ = Run("file store alone (reference)")
    async with AsyncToolCache(config) as cache:
        for start in range(0, KEYS, 500):
            await cache.set_many(
                {f"tool:{n}": {**ONE_KB, "version": 0} for n in range(start, start + 500)},
                namespace="results",
            )

        async def set_(key: str, value: Any) -> None:
            await cache.set(key, value, namespace="results")

        stop = asyncio.Event()
        run_.started = time.perf_counter()
        workers = asyncio.ensure_future(
            agents(lambda key: cache.get(key, namespace="results"), set_, run_, stop)
        )
        await asyncio.sleep(seconds)
        stop.set()
        await workers
    return run_


async def run_baseline(server: RedisServer, timeline: Timeline, count: int = AGENTS) -> Run:
    client = aioredis.Redis.from_url(server.url, socket_timeout=5.0, socket_connect_timeout=5.0)
    prefix = f"bb{uuid.uuid4().hex[:8]}:"
    encoder, decoder = msgspec.msgpack.Encoder(), msgspec.msgpack.Decoder()
    run_ = Run("ToolWeaver-style (5 s timeouts, no breaker)")

    async def get(key: str) -> Any:
        data = await client.get(prefix + key)
        return None if data is None else decoder.decode(data)

    async def set_(key: str, value: Any) -> None:
        await client.set(prefix + key, encoder.encode(value), ex=300)

    async with client.pipeline(transaction=False) as pipe:
        for n in range(KEYS):
            pipe.set(f"{prefix}tool:{n}", encoder.encode({**ONE_KB, "version": 0}), ex=300)
        await pipe.execute()
    try:
        await drive(
            run_,
            server,
            timeline,
            get,
            set_,
            recovered=lambda: True,
            sample=lambda: ("—", 0),
            open_period=lambda: 0.0,
            count=count,
        )
    finally:
        await client.aclose()
    return run_


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f}" if seconds < 0.1 else f"{seconds * 1000:,.0f}"


def per_second_table(ours: Run, base: Run, timeline: Timeline) -> str:
    lines = [
        "| s | Redis | ours gets | p50 ms | p99 ms | errors | breaker | journal "
        "| baseline gets | p50 ms | p99 ms | errors |",
        "|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|",
    ]
    for second in range(int(timeline.end)):
        row = [str(second), timeline.redis_at(second + 0.5)]
        for r, with_state in ((ours, True), (base, False)):
            got = sorted(d for at, d in r.gets if second <= at < second + 1)
            errors = sum(1 for at in r.errors if second <= at < second + 1)
            if got:
                row += [f"{len(got):,}", _ms(percentile(got, 0.5)), _ms(percentile(got, 0.99))]
            else:
                row += ["0", "—", "—"]
            row.append(str(errors))
            if with_state:
                row += [r.states.get(second, "—"), str(r.journal.get(second, 0))]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def phase_results(r: Run, timeline: Timeline, group: str) -> dict[str, Result]:
    phases = {
        "healthy": (0.0, timeline.kill),
        "killed (from 1 s in)": (timeline.kill + 1, timeline.restart),
        "after restart": (timeline.restart, timeline.pause),
        "paused (from 1 s in)": (timeline.pause + 1, timeline.resume),
        "after resume": (timeline.resume, timeline.end),
    }
    out: dict[str, Result] = {}
    for phase, (start, end) in phases.items():
        got = sorted(d * 1e6 for at, d in r.gets if start <= at < end)
        name = phase
        if not got:  # every agent was stuck in a call that started earlier
            got, name = [0.0], f"{phase}: none started, all agents stuck"
        out[phase] = Result(
            f"{r.name}: get, {name}",
            group,
            round(percentile(got, 0.5), 1),
            round(percentile(got, 0.99), 1),
            round(sum(got) / len(got), 1),
            round(len(got) / max(end - start, 1e-9), 1),
        )
    return out


async def main() -> None:
    options = parser(__doc__ or "")
    options.add_argument("--agents", type=int, default=AGENTS, help="agent coroutines")
    options.add_argument("--memory", action="store_true", help="memory layer in front")
    args = options.parse_args()
    timeline = Timeline.for_run(args.quick)
    defaults = BreakerSettings()
    with tempfile.TemporaryDirectory() as scratch, RedisServer() as server:
        ours = await run_ours(
            server, timeline, Path(scratch), count=args.agents, memory=args.memory
        )
        server.restart()  # a fresh, empty server for the baseline, on the same port
        base = await run_baseline(server, timeline, args.agents)
        floor = await run_file_alone(Path(scratch), 3.0)

    results: list[Result] = []
    mine = phase_results(ours, timeline, "failover")
    theirs = phase_results(base, timeline, "failover")
    for phase in mine:
        results += [theirs[phase], compare(mine[phase], theirs[phase])]

    after_failure = sorted(
        d
        for at, d in ours.gets
        if timeline.kill + 1 <= at < timeline.restart or timeline.pause + 1 <= at < timeline.resume
    )
    # The baseline's agents stall, so few of its gets even start 1 s into an outage: take all
    # of its gets started during the outages.
    base_after = sorted(
        d
        for at, d in base.gets
        if timeline.kill <= at < timeline.restart or timeline.pause <= at < timeline.resume
    )
    p99_ours, p99_base = percentile(after_failure, 0.99), percentile(base_after, 0.99)
    floor_gets = sorted(d for at, d in floor.gets if at >= 1.0)
    floor_result = Result(
        f"{floor.name}: get, nothing failing",
        "reference",
        round(percentile(floor_gets, 0.5) * 1e6, 1),
        round(percentile(floor_gets, 0.99) * 1e6, 1),
        round(sum(floor_gets) / len(floor_gets) * 1e6, 1),
        round(len(floor_gets) / 2.0, 1),
    )
    results.append(floor_result)
    targets = [
        Target(
            "p99 get latency < 5 ms from 1 s after each failure until Redis is back",
            f"{_ms(p99_ours)} ms (max {_ms(after_failure[-1])} ms)",
            f"{_ms(p99_base)} ms, max {_ms(base_after[-1])} ms (its gets started during the "
            "outages)",
            round(p99_ours / p99_base, 4) if p99_base else None,
            p99_ours < 0.005,
            note=(
                f"gets fall through to the file store, which alone, nothing failing, gives "
                f"p50 {_ms(floor_result.p50_us / 1e6)} / p99 {_ms(floor_result.p99_us / 1e6)} "
                "ms at this load"
            ),
        ),
        Target(
            "zero errors reach the agents",
            f"{len(ours.errors)} errors",
            f"{len(base.errors)} errors",
            None,
            not ours.errors,
        ),
    ]
    for heal, what in (("restart", "kill"), ("resume", "pause")):
        took = ours.recovery.get(heal)
        base_took = base.recovery.get(heal)
        period = ours.open_period.get(heal, defaults.recovery_timeout)
        healed = ours.healed_at.get(heal, 0.0)
        closed = next((at - healed for at in ours.closed_at if at > healed), None)
        replay = "" if closed is None or took is None else f"{took - closed:.2f} s"
        limit = defaults.recovery_timeout + 1.0
        targets.append(
            Target(
                f"{what}: breaker closed (journal replayed) within recovery_timeout + 1 s "
                f"= {limit:.0f} s of Redis coming back",
                "never" if took is None else f"{took:.2f} s",
                "never" if base_took is None else f"{base_took:.2f} s to its first success",
                None,
                took is not None and took <= limit,
                note=(
                    f"the breaker's open period when Redis came back was {period:.2f} s (2 s, "
                    f"doubled per failed probe), cut short by the health ping (every "
                    f"{defaults.health_check_interval} s while open); closed after "
                    f"{'—' if closed is None else f'{closed:.2f} s'}, journal replayed "
                    f"{replay} later"
                ),
            )
        )
    for what, (start, end) in (
        ("kill", (timeline.kill, timeline.restart)),
        ("pause", (timeline.pause, timeline.resume)),
    ):
        got = sorted(d for at, d in ours.gets if start + 0.5 <= at < end)
        theirs_got = sorted(d for at, d in base.gets if start <= at < end)
        p99_ms = percentile(got, 0.99) * 1000 if got else math.inf
        limit = OUTAGE_P99_MS.get(what) if (args.agents, args.memory) == (200, True) else None
        fault = ours.faulted_at.get(what)
        opened = next((at - fault for at in ours.opened_at if fault and at >= fault), None)
        targets.append(
            Target(
                f"{what}: get p99 from 0.5 s into the outage until it ends"
                + (f" <= {limit:.0f} ms" if limit is not None else " (reported)"),
                f"{_ms(percentile(got, 0.99))} ms ({len(got):,} gets)" if got else "no gets",
                f"{_ms(percentile(theirs_got, 0.99))} ms (its gets started during it)"
                if theirs_got
                else "no gets",
                None,
                bool(got) and (limit is None or p99_ms <= limit),
                note=(
                    "the breaker opened "
                    + ("never" if opened is None else f"{opened * 1000:.0f} ms")
                    + f" after the {'SIGKILL' if what == 'kill' else 'SIGSTOP'}"
                ),
            )
        )
    targets.append(
        Target(
            "no stale read: never a version older than one whose write had returned, "
            "unless the two writes overlapped (either may land last)",
            f"{ours.stale} stale ({ours.overlapped} older by an overlapping write of the key)",
            f"{base.stale} stale ({base.overlapped} by an overlapping write)",
            None,
            ours.stale == 0,
        )
    )
    targets.append(
        Target(
            "nothing lost: each key's newest acknowledged value is in Redis or the file store "
            "once the cache has closed",
            f"{len(ours.lost)} lost of {len(ours.written):,} keys written (missing or older: "
            f"{ours.missing.get('redis', 0)} in Redis, {ours.missing.get('file', 0)} in the "
            "file store)",
            "—",
            None,
            not ours.lost,
        )
    )
    found, outage_writes = ours.read_back
    targets.append(
        Target(
            "every value written while Redis was away is read back from Redis afterwards",
            f"{found:,} of {outage_writes:,}",
            "lost (no journal)",
            None,
            found == outage_writes,
        )
    )
    notes = [
        f"{args.agents} agents, {KEYS:,} keys of ~1 KB, {THINK_SECONDS * 1000:.0f} ms think time, "
        f"{WRITE_SHARE:.0%} of steps write; "
        f"kill at {timeline.kill:.0f} s, restart at {timeline.restart:.0f} s, SIGSTOP at "
        f"{timeline.pause:.0f} s, SIGCONT at {timeline.resume:.0f} s.",
        "Latencies are bucketed by the second a get started; a get that waits on the black "
        "hole shows its full wait in the second it was asked.",
        f"ours: stores={('memory', 'redis', 'file') if args.memory else ('redis', 'file')}, "
        "default timeouts and breaker; while Redis is away, "
        "gets fall through to the file store and writes are journaled, then replayed.",
    ]
    emit(
        Report(
            # The default workload and the 200-agent memory-on one each keep their own page.
            stem="failover"
            if (args.agents, args.memory) == (AGENTS, False)
            else f"failover_{args.agents}{'_memory' if args.memory else ''}",
            title="Failover: get latency while Redis is killed and black-holed",
            results=results,
            targets=targets,
            notes=notes,
            appendix="Per second:\n\n" + per_second_table(ours, base, timeline),
        ),
        args,
        plot=False,
    )


if __name__ == "__main__":
    run(main)
