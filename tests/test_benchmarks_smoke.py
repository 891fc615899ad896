"""The benchmark harness still runs end to end: bench_layers --quick in a subprocess."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUDGET_SECONDS = 10


@pytest.mark.slow
def test_bench_layers_quick_reports_every_layer_and_target(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="the bench extra is not installed")
    command = [
        sys.executable,
        "-m",
        "benchmarks.bench_layers",
        "--quick",
        "--json",
        "--results-dir",
        str(tmp_path),
    ]
    try:
        done = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=BUDGET_SECONDS, check=False
        )
    except subprocess.TimeoutExpired:
        pytest.skip(f"bench_layers --quick took more than {BUDGET_SECONDS} s on this machine")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout)
    groups = {row["group"] for row in report["results"]}
    for layer in ("memory", "redis", "file", "full chain"):
        assert any(group.startswith(layer) for group in groups), groups
    assert len(report["targets"]) == 4
    assert (tmp_path / "layers.md").read_text().startswith("### Layer latencies")
    assert (tmp_path / "layers.png").stat().st_size > 0
