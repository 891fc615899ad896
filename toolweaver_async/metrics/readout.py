"""One reading of a cache's counters, shaped for exporters (labels as tuples, values as numbers).

Both exporters publish the same series under the same names (Prometheus conventions): counters
end in ``_total`` in Prometheus (OpenTelemetry's Prometheus exporter adds that suffix itself),
durations are seconds, every series carries the cache's key ``prefix``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ..resilience.breaker import BreakerState

if TYPE_CHECKING:
    from ..cache import AsyncToolCache

__all__ = ["BREAKER_STATE_VALUES", "MISS_STORE", "MetricsReadout"]

# breaker state gauge: 0 closed, 1 half-open (probing), 2 open (refusing)
BREAKER_STATE_VALUES = {BreakerState.CLOSED: 0, BreakerState.HALF_OPEN: 1, BreakerState.OPEN: 2}
MISS_STORE = "none"  # the store label of a miss: no store answered

Labels = tuple[str, ...]


@dataclass(slots=True)
class MetricsReadout:
    """Every series an exporter publishes for one cache, read at one moment."""

    prefix: str
    lookups: dict[Labels, int] = field(default_factory=dict)  # (namespace, store, result)
    sets: dict[Labels, int] = field(default_factory=dict)  # (namespace,)
    deletes: dict[Labels, int] = field(default_factory=dict)
    errors: dict[Labels, int] = field(default_factory=dict)  # (namespace, store)
    corrupt: dict[Labels, int] = field(default_factory=dict)
    loads: dict[Labels, int] = field(default_factory=dict)  # (namespace, result: ok|error)
    loader_seconds: dict[Labels, float] = field(default_factory=dict)
    saved_seconds: dict[Labels, float] = field(default_factory=dict)
    saved_cost: dict[Labels, float] = field(default_factory=dict)
    breaker_state: dict[Labels, int] = field(default_factory=dict)  # (store,)
    journal_entries: dict[Labels, int] = field(default_factory=dict)  # (store,)
    coherence: dict[Labels, int] = field(default_factory=dict)  # (event,)

    @classmethod
    def of(cls, cache: AsyncToolCache) -> MetricsReadout:
        stats = cache.stats()
        out = cls(prefix=cache.config.key_prefix)
        for namespace, ns in stats.namespaces.items():
            for store, hits in ns.hits.items():
                out.lookups[(namespace, store, "hit")] = hits
            out.lookups[(namespace, MISS_STORE, "miss")] = ns.misses
            out.sets[(namespace,)] = ns.sets
            out.deletes[(namespace,)] = ns.deletes
            for store, errors in ns.errors.items():
                out.errors[(namespace, store)] = errors
            out.corrupt[(namespace,)] = ns.corrupt
            out.loads[(namespace, "ok")] = ns.loader_calls - ns.loader_errors
            out.loads[(namespace, "error")] = ns.loader_errors
            out.loader_seconds[(namespace,)] = ns.loader_seconds
            out.saved_seconds[(namespace,)] = ns.saved_seconds
            out.saved_cost[(namespace,)] = ns.saved_cost
        for store, breaker in cache.breakers().items():
            out.breaker_state[(store,)] = BREAKER_STATE_VALUES[breaker.state]
        for store, size in cache.journal_sizes().items():
            out.journal_entries[(store,)] = size
        for event, count in stats.coherence.items():
            out.coherence[(event,)] = count
        return out


# name, help, label names, the readout's field; counters (Prometheus adds no suffix to these
# names here: the exporters append "_total" where their conventions want it)
COUNTERS: tuple[tuple[str, str, Labels, str], ...] = (
    (
        "toolweaver_cache_lookups",
        "Lookups by answering store (hit) or miss",
        ("namespace", "store", "result"),
        "lookups",
    ),
    ("toolweaver_cache_sets", "Values written", ("namespace",), "sets"),
    ("toolweaver_cache_deletes", "Keys deleted", ("namespace",), "deletes"),
    (
        "toolweaver_cache_errors",
        "Store calls that failed (absorbed)",
        ("namespace", "store"),
        "errors",
    ),
    (
        "toolweaver_cache_corrupt_entries",
        "Entries that did not decode (dropped)",
        ("namespace",),
        "corrupt",
    ),
    ("toolweaver_cache_loads", "Loader calls by outcome", ("namespace", "result"), "loads"),
    (
        "toolweaver_cache_loader_seconds",
        "Seconds spent in loaders",
        ("namespace",),
        "loader_seconds",
    ),
    (
        "toolweaver_cache_saved_seconds",
        "Hits x mean loader seconds",
        ("namespace",),
        "saved_seconds",
    ),
    (
        "toolweaver_cache_saved_cost",
        "Hits x NamespacePolicy.cost_per_call",
        ("namespace",),
        "saved_cost",
    ),
    ("toolweaver_cache_coherence_events", "Memory coherence events", ("event",), "coherence"),
)
GAUGES: tuple[tuple[str, str, Labels, str], ...] = (
    (
        "toolweaver_cache_breaker_state",
        "Breaker state: 0 closed, 1 half-open, 2 open",
        ("store",),
        "breaker_state",
    ),
    (
        "toolweaver_cache_journal_entries",
        "Writes waiting in the outage journal",
        ("store",),
        "journal_entries",
    ),
)
LOAD_DURATION = "toolweaver_cache_load_duration_seconds"
LOAD_DURATION_HELP = "Loader call duration in seconds"
LOAD_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
BREAKER_TRANSITIONS = "toolweaver_cache_breaker_transitions"
BREAKER_TRANSITIONS_HELP = "Breaker state changes, by the state entered"
