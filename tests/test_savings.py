"""stats() reports what the cache saved: hits x measured mean loader time, hits x cost_per_call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, ConfigError, NamespacePolicy
from toolweaver_async.__main__ import main
from toolweaver_async.stats_file import read_stats_file


async def test_saved_seconds_are_hits_times_the_measured_mean_loader_time(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    cache = make_cache()

    async def load() -> dict[str, Any]:
        return {"answer": sum(range(20_000))}

    for _ in range(4):  # one load, three hits
        await cache.get_or_set("q", load, namespace="results")
    stats = cache.stats()
    results = stats.namespaces["results"]
    assert results.loader_calls == 1
    assert results.total_hits == 3
    assert results.loader_seconds > 0
    assert results.saved_seconds == pytest.approx(3 * results.loader_seconds)
    assert stats.overall.saved_seconds == pytest.approx(results.saved_seconds)
    assert stats.to_dict()["overall"]["saved_seconds"] == pytest.approx(results.saved_seconds)


async def test_hits_of_a_namespace_without_a_measured_loader_save_no_time(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    cache = make_cache()
    await cache.set("k", 1)
    await cache.get("k")
    assert cache.stats().namespaces["default"].saved_seconds == 0.0


async def test_saved_cost_is_hits_times_the_policy_cost_per_call(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    cache = make_cache(namespaces={"embeddings": NamespacePolicy(ttl=60, cost_per_call=0.002)})

    async def embed() -> list[float]:
        return [0.1, 0.2]

    for _ in range(6):  # one load, five hits
        await cache.get_or_set("text", embed, namespace="embeddings")
    await cache.set("free", 1)
    await cache.get("free")  # a hit in a namespace without a price
    stats = cache.stats()
    assert stats.namespaces["embeddings"].saved_cost == pytest.approx(5 * 0.002)
    assert stats.namespaces["default"].saved_cost == 0.0
    assert stats.overall.saved_cost == pytest.approx(0.01)


def test_cost_per_call_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="cost_per_call"):
        NamespacePolicy(cost_per_call=-1)


# -- the stats file: what every run saved, for `toolweaver-async stats` and `doctor` ---------


async def test_closing_caches_add_their_runs_to_the_stats_file(
    make_cache: Callable[..., AsyncToolCache], tmp_path: Path
) -> None:
    stats_file = tmp_path / "stats" / "agent.json"
    for _ in range(2):
        cache = make_cache(
            stats_file=stats_file,
            namespaces={"results": NamespacePolicy(ttl=60, cost_per_call=0.5)},
        )
        await cache.get_or_set("q", _answer, namespace="results")
        await cache.get_or_set("q", _answer, namespace="results")
        await cache.aclose()
    idle = make_cache(stats_file=stats_file)
    await idle.aclose()  # did nothing: not a run

    runs, totals = await asyncio.to_thread(read_stats_file, stats_file)
    assert runs == 2
    results = totals.namespaces["results"]
    assert results.total_hits >= 3  # the second cache also hits the first one's file entry
    assert results.saved_cost == pytest.approx(results.total_hits * 0.5)
    assert totals.overall.saved_seconds > 0


async def _answer() -> int:
    return 42


def test_stats_command_prints_recorded_savings_as_json(
    make_cache: Callable[..., AsyncToolCache],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    stats_file = tmp_path / "stats.json"
    monkeypatch.setenv("TOOLWEAVER_STATS_FILE", str(stats_file))
    monkeypatch.setenv("USE_REDIS", "false")
    monkeypatch.setenv("TOOLWEAVER_CACHE_DIR", str(tmp_path / "cache"))

    async def agent_run() -> None:
        async with AsyncToolCache.from_env(
            namespaces={"search": NamespacePolicy(ttl=60, cost_per_call=0.25)}
        ) as cache:
            for _ in range(3):
                await cache.get_or_set("q", _answer, namespace="search")

    asyncio.run(agent_run())
    assert main(["stats"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["runs"] == 1
    assert report["overall"]["saved_cost"] == pytest.approx(0.5)
    assert report["overall"]["saved_seconds"] > 0
    assert main(["doctor"]) == 0
    doctor = json.loads(capsys.readouterr().out)
    assert doctor["savings"]["runs"] == 1  # doctor's own look is not counted as a run
    assert doctor["savings"]["saved_cost"] == pytest.approx(0.5)


def test_stats_command_without_a_stats_file_is_one_line_and_exit_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("TOOLWEAVER_STATS_FILE", raising=False)
    assert main(["stats"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "TOOLWEAVER_STATS_FILE" in err
