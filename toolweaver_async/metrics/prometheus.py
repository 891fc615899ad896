"""``prometheus_client`` exporter (extra ``prometheus``): one collector per registry, any number
of caches, read when scraped.

    exporter = PrometheusExporter(registry)     # default: prometheus_client.REGISTRY
    exporter.track(cache)

Counters end in ``_total``; load durations are a histogram in seconds; breaker state and journal
size are gauges. Every series carries the cache's ``prefix``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from ..resilience.breaker import BreakerState
from .readout import (
    BREAKER_TRANSITIONS,
    BREAKER_TRANSITIONS_HELP,
    COUNTERS,
    GAUGES,
    LOAD_BUCKETS,
    LOAD_DURATION,
    LOAD_DURATION_HELP,
    MetricsReadout,
)

if TYPE_CHECKING:
    from ..cache import AsyncToolCache

__all__ = ["PrometheusExporter"]


class _Listener:
    """Pushes loader durations and breaker changes of one cache into the exporter's metrics."""

    def __init__(self, prefix: str, durations: Histogram, transitions: Counter) -> None:
        self._prefix = prefix
        self._durations = durations
        self._transitions = transitions

    def on_load(self, namespace: str, seconds: float, failed: bool) -> None:
        result = "error" if failed else "ok"
        self._durations.labels(self._prefix, namespace, result).observe(seconds)

    def on_breaker_change(self, store: str, old: BreakerState, new: BreakerState) -> None:
        self._transitions.labels(self._prefix, store, new.value).inc()


class PrometheusExporter(Collector):
    """Publishes the caches it tracks to ``registry`` (registered on construction)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._caches: list[AsyncToolCache] = []
        # Not registered themselves: collect() hands their samples over with the rest.
        self._durations = Histogram(
            LOAD_DURATION,
            LOAD_DURATION_HELP,
            ("prefix", "namespace", "result"),
            buckets=LOAD_BUCKETS,
            registry=None,
        )
        self._transitions = Counter(
            BREAKER_TRANSITIONS,
            BREAKER_TRANSITIONS_HELP,
            ("prefix", "store", "state"),
            registry=None,
        )
        self.registry = registry if registry is not None else REGISTRY
        self.registry.register(self)

    def track(self, cache: AsyncToolCache) -> None:
        """Publish ``cache`` too (its ``key_prefix`` tells its series apart)."""
        cache.add_listener(_Listener(cache.config.key_prefix, self._durations, self._transitions))
        self._caches.append(cache)

    def close(self) -> None:
        """Stop publishing (unregister from the registry)."""
        self.registry.unregister(self)

    def collect(self) -> Iterator[Metric]:
        readouts = [MetricsReadout.of(cache) for cache in self._caches]
        for name, help_text, labels, attribute in COUNTERS:
            counter = CounterMetricFamily(name, help_text, labels=("prefix", *labels))
            for readout in readouts:
                for values, number in getattr(readout, attribute).items():
                    counter.add_metric((readout.prefix, *values), number)
            yield counter
        for name, help_text, labels, attribute in GAUGES:
            gauge = GaugeMetricFamily(name, help_text, labels=("prefix", *labels))
            for readout in readouts:
                for values, number in getattr(readout, attribute).items():
                    gauge.add_metric((readout.prefix, *values), number)
            yield gauge
        yield from self._durations.collect()
        yield from self._transitions.collect()

    def describe(self) -> Iterator[Metric]:
        return iter(())  # names are checked on collect, so several caches can share them
