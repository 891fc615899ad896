"""The command line: doctor, inspect, clear, demo and bench on the environment's config."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolweaver_async import AsyncToolCache
from toolweaver_async.__main__ import main


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, cache_dir: Path, key_prefix: str) -> Path:
    monkeypatch.setenv("USE_REDIS", "false")
    monkeypatch.setenv("TOOLWEAVER_CACHE_DIR", str(cache_dir))
    monkeypatch.setenv("TOOLWEAVER_CACHE_PREFIX", key_prefix)
    return cache_dir


def _write(key: str, value: object, namespace: str = "default") -> None:
    async def write() -> None:
        async with AsyncToolCache.from_env() as cache:
            await cache.set(key, value, namespace=namespace)

    asyncio.run(write())


def test_doctor_reports_healthy_embedded_chain(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["doctor"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert list(report["stores"]) == ["memory", "file"]
    assert report["redis_ping"].startswith("disabled")


def test_doctor_fails_when_redis_is_configured_but_down(
    env: Path,
    monkeypatch: pytest.MonkeyPatch,
    free_port: object,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("USE_REDIS", "true")
    monkeypatch.setenv("REDIS_URL", f"redis://:pw@127.0.0.1:{free_port()}/0")  # type: ignore[operator]
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert '"redis_available": false' in out
    assert "pw@" not in out


def test_inspect_prints_a_cached_value_and_fails_on_a_miss(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write("tool:calc", {"schema": {"x": "int"}}, namespace="tools")
    assert main(["inspect", "tool:calc", "--namespace", "tools"]) == 0
    assert json.loads(capsys.readouterr().out) == {"schema": {"x": "int"}}
    assert main(["inspect", "nope"]) == 1


def test_clear_needs_yes_and_then_removes_entries(
    env: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _write("k", 1)
    assert main(["clear"]) == 2
    assert main(["inspect", "k"]) == 0
    assert main(["clear", "--yes"]) == 0
    assert main(["inspect", "k"]) == 1


def test_demo_and_bench_run(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo"]) == 0
    assert "second call (hit)" in capsys.readouterr().out
    assert main(["bench", "-n", "50"]) == 0
    assert "get p50" in capsys.readouterr().out


@pytest.mark.slow
def test_a_stats_file_on_a_hung_disk_fails_the_command_clearly_and_the_process_exits(
    tmp_path: Path,
) -> None:
    """A FIFO stands in for a stats file on a dead mount: opening it blocks its reader for
    ever. The command gives up after file_timeout with a one-line error, and the process
    exits although the stuck thread never returns (a default-executor thread would be
    joined at exit and hang it)."""
    fifo = tmp_path / "stats.jsonl"
    os.mkfifo(fifo)
    child = subprocess.run(
        [sys.executable, "-m", "toolweaver_async", "stats"],
        env={**os.environ, "TOOLWEAVER_STATS_FILE": str(fifo), "USE_REDIS": "false"},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == 2, child.stderr
    assert "reading the stats file: no answer from the disk within" in child.stderr
    assert "Traceback" not in child.stderr
