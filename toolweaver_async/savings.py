"""What the cache saved: time (hits x the namespace's measured mean loader time) and money
(hits x ``NamespacePolicy.cost_per_call``).

Computed when a snapshot is taken, from counters the hot path keeps anyway: nothing is added to
a get. A namespace whose loader never ran in this process has no measured time, so its hits
save 0 s here rather than a guess.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from .config import NamespacePolicy
from .stats import CacheStats, NamespaceStats
from .stats_file import add_to_stats_file
from .stores.worker_lane import in_daemon_thread

__all__ = ["mean_loader_seconds", "record_run", "with_savings"]

logger = logging.getLogger("toolweaver_async.savings")


def mean_loader_seconds(stats: NamespaceStats) -> float:
    """Mean duration of one loader call, 0.0 before the first."""
    return stats.loader_seconds / stats.loader_calls if stats.loader_calls else 0.0


def _saved(stats: NamespaceStats, policy: NamespacePolicy) -> NamespaceStats:
    hits = stats.total_hits
    return replace(
        stats,
        saved_seconds=hits * mean_loader_seconds(stats),
        saved_cost=hits * policy.cost_per_call,
    )


def with_savings(stats: CacheStats, policy: Callable[[str], NamespacePolicy]) -> CacheStats:
    """``stats`` with ``saved_seconds`` and ``saved_cost`` per namespace, summed overall."""
    namespaces = {name: _saved(s, policy(name)) for name, s in stats.namespaces.items()}
    overall = replace(
        stats.overall,
        saved_seconds=sum(s.saved_seconds for s in namespaces.values()),
        saved_cost=sum(s.saved_cost for s in namespaces.values()),
    )
    return replace(stats, overall=overall, namespaces=namespaces)


async def record_run(path: Path, stats: CacheStats, *, within: float = 1.0) -> None:
    """Add a closing cache's counters to its stats file (on a daemon thread, awaited at most
    ``within`` seconds: a dead mount neither holds ``aclose`` up nor keeps the process from
    exiting); a file that cannot be written is logged, never raised from ``aclose``."""
    if stats.overall.total_hits + stats.overall.misses + stats.overall.sets == 0:
        return  # nothing happened: no run to count
    try:
        step = in_daemon_thread("toolweaver-stats", add_to_stats_file, path, stats)
        await asyncio.wait_for(step, within)
    except (OSError, ValueError) as exc:  # TimeoutError is an OSError
        logger.warning("could not add this run's counters to %s: %s", path, exc)
