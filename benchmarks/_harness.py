"""Shared benchmark plumbing: timing loops, percentiles, tables, targets, JSON/Markdown/PNG output.

Every benchmark measures its baseline in the same process run, so ratios compare like with like.
Fast operations are timed in batches (one clock read per batch) so the clock does not dominate.
Operations compared with each other are timed *interleaved* (round robin, one batch each per
round), so a noisy neighbour on a small machine slows all of them alike instead of one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolweaver_async.testing import RedisServer

RESULTS = Path(__file__).parent / "results"

Op = Callable[[], Awaitable[Any]]


@dataclass
class Result:
    """Latency of one operation in microseconds (and, for throughput runs, operations/s)."""

    name: str
    group: str
    p50_us: float
    p99_us: float
    mean_us: float
    ops_per_s: float
    baseline: str | None = None
    ratio: float | None = None  # p50 / baseline p50 (lower is better), or see ratio_by
    ratio_by: str = "p50"  # "p50": latency ratio; "ops/s": throughput ratio (higher is better)
    # Throughput runs: this process's CPU time per operation (median of the slices), in us;
    # on a CPU-bound loop, ops/s ratios follow the inverse ratio of these.
    cpu_us: float | None = None


@dataclass
class Target:
    """One promise of the issue: the measured figure, its baseline, and whether it holds."""

    description: str
    measured: str
    baseline: str
    ratio: float | None
    met: bool
    note: str = ""


@dataclass
class Report:
    """Everything one script produced."""

    stem: str
    title: str
    results: list[Result]
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    appendix: str = ""  # more Markdown, after the targets


def percentile(sorted_values: Sequence[float], q: float) -> float:
    index = min(len(sorted_values) - 1, max(0, round(q * (len(sorted_values) - 1))))
    return sorted_values[index]


async def time_op(
    op: Op, *, samples: int = 2000, batch: int = 1, warmup: int = 200
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


async def measure(name: str, group: str, op: Op, **kwargs: Any) -> Result:
    p50, p99, mean = await time_op(op, **kwargs)
    return _result(name, group, p50, p99, mean)


async def measure_interleaved(
    group: str,
    ops: Mapping[str, Op],
    *,
    samples: int = 2000,
    batch: int = 1,
    warmup: int = 100,
) -> dict[str, Result]:
    """Time every op of ``ops`` round robin: each round runs ``batch`` calls of each op.
    Returns one :class:`Result` per name, in the order given."""
    for op in ops.values():
        for _ in range(warmup):
            await op()
    per_call: dict[str, list[float]] = {name: [] for name in ops}
    clock = time.perf_counter_ns
    items = list(ops.items())
    for _ in range(samples):
        for name, op in items:
            started = clock()
            for _ in range(batch):
                await op()
            per_call[name].append((clock() - started) / batch / 1000)
    out: dict[str, Result] = {}
    for name, values in per_call.items():
        values.sort()
        out[name] = _result(
            name, group, percentile(values, 0.5), percentile(values, 0.99), statistics.fmean(values)
        )
    return out


async def measure_throughput(
    name: str,
    group: str,
    op: Op,
    *,
    concurrency: int,
    seconds: float,
    warmup_seconds: float = 0.1,
) -> Result:
    """``concurrency`` coroutines call ``op`` in a loop for ``seconds``; ops/s overall and the
    latency each call saw (p50/p99 over a sample of calls)."""
    if warmup_seconds > 0:
        await _hammer(op, concurrency, warmup_seconds, None)
    latencies: list[float] = []
    done = await _hammer(op, concurrency, seconds, latencies)
    latencies.sort()
    result = _result(
        name,
        group,
        percentile(latencies, 0.5),
        percentile(latencies, 0.99),
        statistics.fmean(latencies),
    )
    result.ops_per_s = round(done / seconds, 1)
    return result


@dataclass
class Contender:
    """One side of an interleaved throughput comparison: ``op`` run by ``concurrency``
    coroutines; each call counts as ``per_call`` operations (100 for an MGET of 100 keys)."""

    name: str
    op: Op
    concurrency: int
    per_call: int = 1


async def interleaved_throughput(
    group: str, contenders: Sequence[Contender], *, seconds: float, rounds: int = 3
) -> list[Result]:
    """Each contender for ``seconds`` in all, in ``rounds`` slices taken round robin, so a
    noisy neighbour slows all of them alike. ops/s is the median of the slices' rates; p50/p99
    are over every call's latency (per call, not per operation)."""
    slice_seconds = seconds / rounds
    for contender in contenders:  # warm-up: connections, decoders, the generation counters
        await _hammer(contender.op, contender.concurrency, min(0.1, slice_seconds), None)
    rates: dict[str, list[float]] = {c.name: [] for c in contenders}
    cpu: dict[str, list[float]] = {c.name: [] for c in contenders}
    latencies: dict[str, list[float]] = {c.name: [] for c in contenders}
    for _ in range(rounds):
        for contender in contenders:
            cpu_before = time.process_time()
            done = await _hammer(
                contender.op, contender.concurrency, slice_seconds, latencies[contender.name]
            )
            operations = done * contender.per_call
            rates[contender.name].append(operations / slice_seconds)
            if operations:
                cpu[contender.name].append((time.process_time() - cpu_before) / operations * 1e6)
    results = []
    for contender in contenders:
        values = sorted(latencies[contender.name])
        result = _result(
            contender.name,
            group,
            percentile(values, 0.5),
            percentile(values, 0.99),
            statistics.fmean(values),
        )
        result.ops_per_s = round(statistics.median(rates[contender.name]), 1)
        if cpu[contender.name]:
            result.cpu_us = round(statistics.median(cpu[contender.name]), 2)
        results.append(result)
    return results


async def _hammer(op: Op, concurrency: int, seconds: float, latencies: list[float] | None) -> int:
    clock = time.perf_counter_ns
    stop = time.perf_counter() + seconds
    done = 0

    async def worker() -> None:
        nonlocal done
        record = latencies.append if latencies is not None else None
        while time.perf_counter() < stop:
            started = clock()
            await op()
            if record is not None:
                record((clock() - started) / 1000)
            done += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return done


def _result(name: str, group: str, p50: float, p99: float, mean: float) -> Result:
    return Result(
        name,
        group,
        round(p50, 3),
        round(p99, 3),
        round(mean, 3),
        round(1e6 / mean if mean else 0.0, 1),
    )


def cpu_note(result: Result) -> str:
    """``", 15.2 us CPU/get"``: this process's CPU per operation, when it was measured."""
    return "" if result.cpu_us is None else f", {result.cpu_us:.1f} µs CPU/get"


def compare(result: Result, baseline: Result) -> Result:
    """Latency ratio: ``result`` p50 over ``baseline`` p50 (lower is better)."""
    result.baseline = baseline.name
    result.ratio = round(result.p50_us / baseline.p50_us, 3) if baseline.p50_us else None
    result.ratio_by = "p50"
    return result


def compare_throughput(result: Result, baseline: Result) -> Result:
    """Throughput ratio: ``result`` ops/s over ``baseline`` ops/s (higher is better)."""
    result.baseline = baseline.name
    result.ratio = round(result.ops_per_s / baseline.ops_per_s, 3) if baseline.ops_per_s else None
    result.ratio_by = "ops/s"
    return result


def render_table(results: list[Result], title: str) -> str:
    lines = [
        f"### {title}",
        "",
        "| group | operation | p50 µs | p99 µs | ops/s | vs baseline |",
        "|---|---|---:|---:|---:|---|",
    ]
    for r in results:
        if r.ratio is None:
            versus = "baseline"
        elif r.ratio_by == "ops/s":
            versus = f"{_fmt_ratio(r.ratio)} the ops/s of {r.baseline}"
        else:
            versus = f"{_fmt_ratio(r.ratio)} the p50 of {r.baseline}"
        lines.append(
            f"| {r.group} | {r.name} | {_fmt_us(r.p50_us)} | {_fmt_us(r.p99_us)} | "
            f"{r.ops_per_s:,.0f} | {versus} |"
        )
    return "\n".join(lines)


def _fmt_ratio(ratio: float) -> str:
    return f"{ratio:.2f}x" if ratio >= 0.1 else f"{ratio:.2g}x"


def _fmt_us(value: float) -> str:
    return f"{value:.2f}" if value < 100 else f"{value:,.0f}"


def render_targets(targets: list[Target]) -> str:
    if not targets:
        return ""
    lines = [
        "| target | measured | baseline (same run) | ratio | met |",
        "|---|---|---|---:|---|",
    ]
    for t in targets:
        ratio = _fmt_ratio(t.ratio) if t.ratio is not None else "—"
        verdict = "yes" if t.met else "**no**"
        if t.note:
            verdict += f" — {t.note}"
        lines.append(f"| {t.description} | {t.measured} | {t.baseline} | {ratio} | {verdict} |")
    return "\n".join(lines)


def machine_line() -> str:
    loop = "uvloop" if "uvloop" in type(asyncio.get_event_loop_policy()).__module__ else "asyncio"
    cores = os.cpu_count() or 0
    return (
        f"Python {platform.python_version()} on {platform.machine()}, {platform.system()}, "
        f"{cores} cores, {loop} event loop"
    )


def render_report(report: Report) -> str:
    parts = [render_table(report.results, report.title), "", f"_{machine_line()}_"]
    if report.targets:
        parts += ["", "Targets:", "", render_targets(report.targets)]
    if report.appendix:
        parts += ["", report.appendix]
    if report.notes:
        parts += ["", *[f"- {note}" for note in report.notes]]
    return "\n".join(parts) + "\n"


def emit(report: Report, args: argparse.Namespace, *, plot: bool = True) -> None:
    """Print the report (Markdown, or JSON with --json) and write results/<stem>.md/.json/.png."""
    markdown = render_report(report)
    if args.json:
        print(json.dumps(_as_json(report), indent=2))
    else:
        print(markdown)
    out = Path(args.results_dir) if getattr(args, "results_dir", None) else RESULTS
    out.mkdir(parents=True, exist_ok=True)
    png = out / f"{report.stem}.png"
    if plot and plot_results(report, png):
        markdown += f"\n![{report.title}]({png.name})\n"
    (out / f"{report.stem}.md").write_text(markdown)
    (out / f"{report.stem}.json").write_text(json.dumps(_as_json(report), indent=2))


def _as_json(report: Report) -> dict[str, Any]:
    return {
        "title": report.title,
        "machine": machine_line(),
        "results": [asdict(r) for r in report.results],
        "targets": [asdict(t) for t in report.targets],
        "notes": report.notes,
        "appendix": report.appendix,
    }


def plot_results(report: Report, path: Path) -> bool:
    """A horizontal bar chart of every result (p50, with p99 as a whisker; ops/s for
    throughput runs), one colour per group. False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = report.results
    throughput = all(r.ratio_by == "ops/s" or r.ratio is None for r in results) and any(
        r.ratio_by == "ops/s" for r in results
    )
    groups = list(dict.fromkeys(r.group for r in results))
    throughput_groups = {r.group for r in results if r.ratio_by == "ops/s" and r.ratio is not None}
    colours = plt.get_cmap("tab10")
    labels = [f"{r.group} · {r.name}" for r in results]
    height = max(2.5, 0.32 * len(results) + 1.2)
    fig, ax = plt.subplots(figsize=(11, height))
    ys = list(range(len(results)))[::-1]
    for y, r in zip(ys, results, strict=True):
        colour = colours(groups.index(r.group) % 10)
        if throughput:
            ax.barh(y, r.ops_per_s, color=colour)
            label = f" {r.ops_per_s:,.0f}/s"
            at = r.ops_per_s
        else:
            ax.barh(
                y,
                r.p50_us,
                color=colour,
                xerr=[[0], [max(0.0, r.p99_us - r.p50_us)]],
                error_kw={"ecolor": "#555", "capsize": 2, "elinewidth": 0.8},
            )
            label = f" {_fmt_us(r.p50_us)} µs"
            if r.group in throughput_groups:
                label += f" · {r.ops_per_s:,.0f} ops/s"
            at = r.p99_us
        ax.text(at, y, label, va="center", fontsize=7, color="#333")
    ax.set_yticks(ys)
    ax.set_yticklabels(labels, fontsize=8)
    ax.set_xscale("log")
    low, high = ax.get_xlim()
    ax.set_xlim(low, high * 20)  # room for the labels
    ax.set_xlabel(
        "operations/s (higher is better)"
        if throughput
        else "µs, p50 (bar) and p99 (whisker); lower is better"
    )
    ax.set_title(report.title, fontsize=10)
    ax.grid(axis="x", which="both", alpha=0.3)
    fig.text(0.99, 0.005, machine_line(), ha="right", va="bottom", fontsize=7, color="#666")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_outputs(stem: str, title: str, results: list[Result], extra: str = "") -> None:
    """Markdown and JSON for ``results`` (kept for scripts that do not build a Report)."""
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
    p.add_argument("--results-dir", help="write the .md/.json/.png here (default: results/)")
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
