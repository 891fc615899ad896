"""Every example runs to the end on the embedded default (memory + file) and says what it shows.

Each example runs as its own process, the way a user runs it, with USE_REDIS=false and a cache
folder inside the test's temporary folder; afterwards no entry file may be left there.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def run_example(name: str, cache_dir: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_", "TOOLWEAVER_"))}
    env.update(USE_REDIS="false", TOOLWEAVER_CACHE_DIR=str(cache_dir), PYTHONUNBUFFERED="1")
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        pytest.param(
            "agent_loop.py",
            ["with cache", "service calls with cache:", "the cache's own account (stats()): saved"],
            marks=pytest.mark.slow,  # about 4.5 s: it runs the uncached loop for real
            id="agent_loop",
        ),
        pytest.param(
            "caching_demo.py",
            ["type=Receipt  -> Receipt(merchant='Corner Cafe'", "delete user:1 -> True"],
            id="caching_demo",
        ),
        pytest.param(
            "caching_deep_dive.py",
            ["second read:  {'revenue': 1250000}  <- memory", "probe succeeded:         CLOSED"],
            id="caching_deep_dive",
        ),
        pytest.param(
            "caching_what_how_when.py",
            ["SerializationError: cannot cache key 'lock:1'", "after:  catalog cached: False"],
            id="caching_what_how_when",
        ),
    ],
)
def test_example_runs(name: str, expected: list[str], tmp_path: Path) -> None:
    result = run_example(name, tmp_path)

    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    assert "Traceback" not in result.stderr
    for line in expected:
        assert line in result.stdout, f"{name}: {line!r} missing from:\n{result.stdout}"
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == [], f"{name} left cache files behind: {leftovers}"
