"""Coherence on a Redis Cluster: propagation through one channel per primary, and its cost.

    python -m benchmarks.bench_coherence_cluster [--quick] [--json]

Starts a local cluster (3 primaries + 3 replicas, as the tests do) and runs the scenarios of
``bench_coherence`` against it:

- **Propagation**: four processes, one writer setting ``k`` = 1, 2, 3 ...; three readers poll it
  from their memory layers; per write, from the writer's ``await set`` returning to the last
  reader's ``get`` returning the new value. The same run on a standalone server is the baseline.
- **Cost**: a memory hit with cluster coherence live vs off (``coherence_window=None``),
  interleaved in one run.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from toolweaver_async.testing import RedisServer

from ._harness import Report, Result, Target, compare, emit, parser, run
from .bench_coherence import _delay_result, _stats_ms, hit_costs, propagation


async def main() -> None:
    from tests.topologies import ClusterTopology  # the test fixtures' cluster, started by PID

    args = parser(__doc__ or "").parse_args()
    writes = 50 if args.quick else 300
    results: list[Result] = []
    targets: list[Target] = []
    notes = ["The machine runs other agents' work on 2 cores: compare the pairs, not runs."]
    cluster = ClusterTopology().start()
    try:
        with RedisServer() as server, tempfile.TemporaryDirectory() as folder:
            # alternate halves so that load drift hits both alike
            half = writes // 2
            on_cluster, lost = await propagation("coherent", cluster.url, folder, half, 0.005)
            single, single_lost = await propagation("coherent", server.url, folder, half, 0.005)
            more, more_lost = await propagation("coherent", cluster.url, folder, half, 0.005)
            more_single, more_single_lost = await propagation(
                "coherent", server.url, folder, half, 0.005
            )
            on_cluster += more
            single += more_single
            lost += more_lost
            single_lost += more_single_lost
            hits = await hit_costs(cluster.url, str(Path(folder) / "hits"), args.quick)
    finally:
        cluster.stop()

    p50, p99, worst = _stats_ms(on_cluster)
    s50, s99, sworst = _stats_ms(single)
    results.append(_delay_result("cluster, one channel per primary", on_cluster))
    results.append(_delay_result("single server (same run)", single))
    targets.append(
        Target(
            "cluster propagation p99 <= 5 ms (4 processes, 1 writer)",
            f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {worst:.1f} ms over {len(on_cluster)} "
            "writes" + (f" ({lost} overtaken)" if lost else ""),
            f"single server: p50 {s50:.2f} ms, p99 {s99:.2f} ms, max {sworst:.1f} ms over "
            f"{len(single)} writes" + (f" ({single_lost} overtaken)" if single_lost else ""),
            round(p99 / s99, 3) if s99 else None,
            p99 <= 5.0,
        )
    )
    live, off = hits["memory+redis, coherence live"], hits["memory+redis, coherence off"]
    results += [compare(live, off), off]
    ratio = live.p50_us / off.p50_us if off.p50_us else None
    targets.append(
        Target(
            "memory hit with cluster coherence live <= 5 % slower",
            f"{live.p50_us:.2f} µs p50",
            f"{off.p50_us:.2f} µs p50 (coherence off)",
            round(ratio, 3) if ratio else None,
            ratio is not None and ratio <= 1.05,
        )
    )
    notes.append(
        "Readers poll every ~1 ms (the event loop's timer resolution), which is part of the "
        "propagation figure."
    )
    emit(
        Report(
            stem="coherence_cluster",
            title="Coherence on a Redis Cluster",
            results=results,
            targets=targets,
            notes=notes,
        ),
        args,
        plot=False,
    )


if __name__ == "__main__":
    run(main)
