"""Run every benchmark script and gather their tables in benchmarks/results/README.md.

    python -m benchmarks.run_all [--quick]        (what `make bench` runs)

Each script runs in its own process (its own event loop and redis-server), one after another,
so they never compete for the two cores a small machine has. Scripts that do not exist yet are
skipped; a script that fails is reported and the others still run.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
RESULTS = HERE / "results"

# (module, the Markdown file it writes[, its arguments]), in the order the results page shows
# them. The failover timeline runs twice: 50 agents without memory (every get asks Redis), and
# 200 agents with memory in front (the outage figures the reliability targets name).
SCRIPTS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("bench_layers", "layers.md", ()),
    ("bench_throughput", "throughput.md", ()),
    ("bench_peers", "peers.md", ()),
    ("bench_agent", "agent.md", ()),
    ("bench_failover", "failover.md", ()),
    ("bench_failover", "failover_200_memory.md", ("--quick", "--agents", "200", "--memory")),
    ("bench_stampede", "stampede.md", ()),
    ("bench_cluster", "cluster.md", ()),
    ("bench_coherence", "coherence.md", ()),
    ("bench_metrics", "metrics.md", ()),
    ("bench_adapters", "adapters.md", ()),
    ("bench_writes", "writes.md", ()),
)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--quick", action="store_true", help="pass --quick to every script")
    args = p.parse_args()
    sections: list[str] = []
    failed: list[str] = []
    for module, markdown, extra in SCRIPTS:
        if not (HERE / f"{module}.py").exists():
            print(f"-- {module}: not present, skipped", flush=True)
            continue
        command = [sys.executable, "-m", f"benchmarks.{module}", *extra]
        if args.quick and "--quick" not in extra:
            command.append("--quick")
        print(f"-- {module} {' '.join(extra)}".rstrip(), flush=True)
        started = time.monotonic()
        completed = subprocess.run(command, cwd=HERE.parent, check=False)
        print(f"-- {module}: {time.monotonic() - started:.0f} s", flush=True)
        if completed.returncode != 0:
            failed.append(module)
            sections.append(f"## {module}\n\n_failed with exit code {completed.returncode}_\n")
            continue
        path = RESULTS / markdown
        if path.exists():
            sections.append(f"## {module}\n\n{path.read_text()}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    page = [
        "# Benchmark results",
        "",
        "Produced by `make bench` (`python -m benchmarks.run_all`). Every ratio compares with a "
        "baseline measured in the same process run. Re-run on your machine to compare.",
        "",
        *_targets_section(),
        *sections,
    ]
    (RESULTS / "README.md").write_text("\n".join(page))
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _targets_section() -> list[str]:
    """Every script's targets (from its JSON) in one table."""
    rows: list[str] = []
    for module, markdown, _ in SCRIPTS:
        path = RESULTS / markdown.replace(".md", ".json")
        try:
            targets = json.loads(path.read_text()).get("targets") or []
        except (OSError, ValueError):
            continue
        for t in targets:
            if not isinstance(t, dict) or "description" not in t:
                continue
            ratio = f"{t['ratio']:.2f}x" if isinstance(t.get("ratio"), int | float) else "—"
            verdict = "yes" if t.get("met") else "**no**"
            if t.get("note"):
                verdict += f" — {t['note']}"
            rows.append(
                f"| {t['description']} | {t.get('measured', '')} | {t.get('baseline', '')} | "
                f"{ratio} | {verdict} | {module} |"
            )
    if not rows:
        return []
    return [
        "## Targets",
        "",
        "| target | measured | baseline (same run) | ratio | met | script |",
        "|---|---|---|---:|---|---|",
        *rows,
        "",
    ]


if __name__ == "__main__":
    raise SystemExit(main())
