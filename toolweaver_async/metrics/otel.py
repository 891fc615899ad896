"""OpenTelemetry metrics exporter (extra ``otel``): observable instruments read the caches'
counters when the SDK collects; loader durations and breaker changes are recorded as they
happen.

    exporter = OpenTelemetryExporter()          # default: the global MeterProvider
    exporter.track(cache)

Instrument names follow the Prometheus exporter's (``toolweaver_cache_lookups`` ...): an
OpenTelemetry-to-Prometheus pipeline adds ``_total`` to counters itself. Durations are in
seconds (unit ``s``); every point carries the cache's ``prefix``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from ..resilience.breaker import BreakerState
from .readout import (
    BREAKER_TRANSITIONS,
    BREAKER_TRANSITIONS_HELP,
    COUNTERS,
    GAUGES,
    LOAD_DURATION,
    LOAD_DURATION_HELP,
    Labels,
    MetricsReadout,
)

if TYPE_CHECKING:
    from ..cache import AsyncToolCache

__all__ = ["OpenTelemetryExporter"]


class _Listener:
    def __init__(self, prefix: str, exporter: OpenTelemetryExporter) -> None:
        self._prefix = prefix
        self._exporter = exporter

    def on_load(self, namespace: str, seconds: float, failed: bool) -> None:
        self._exporter._durations.record(
            seconds,
            {"prefix": self._prefix, "namespace": namespace, "result": "error" if failed else "ok"},
        )

    def on_breaker_change(self, store: str, old: BreakerState, new: BreakerState) -> None:
        self._exporter._transitions.add(
            1, {"prefix": self._prefix, "store": store, "state": new.value}
        )


class OpenTelemetryExporter:
    """Publishes the caches it tracks through ``meter_provider``'s meter."""

    def __init__(self, meter_provider: MeterProvider | None = None) -> None:
        provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        meter = provider.get_meter("toolweaver_async")
        self._caches: list[AsyncToolCache] = []
        self._readouts: list[MetricsReadout] = []  # one reading per collection, see _observe
        for name, help_text, labels, attribute in COUNTERS:
            unit = "s" if "seconds" in name else "1"
            meter.create_observable_counter(
                name,
                [self._observe(attribute, labels, first=name == COUNTERS[0][0])],
                unit,
                help_text,
            )
        for name, help_text, labels, attribute in GAUGES:
            meter.create_observable_gauge(name, [self._observe(attribute, labels)], "1", help_text)
        self._durations = meter.create_histogram(LOAD_DURATION, "s", LOAD_DURATION_HELP)
        self._transitions = meter.create_counter(BREAKER_TRANSITIONS, "1", BREAKER_TRANSITIONS_HELP)

    def track(self, cache: AsyncToolCache) -> None:
        """Publish ``cache`` too (its ``key_prefix`` tells its points apart)."""
        cache.add_listener(_Listener(cache.config.key_prefix, self))
        self._caches.append(cache)

    def _observe(
        self, attribute: str, labels: Labels, *, first: bool = False
    ) -> Callable[[CallbackOptions], Iterable[Observation]]:
        def callback(options: CallbackOptions) -> Iterable[Observation]:
            if first or not self._readouts:
                # The first instrument of a collection reads every cache once; the others
                # reuse that reading, so one collection costs one stats() per cache.
                self._readouts = [MetricsReadout.of(cache) for cache in self._caches]
            for readout in self._readouts:
                for values, number in getattr(readout, attribute).items():
                    attributes = {
                        "prefix": readout.prefix,
                        **dict(zip(labels, values, strict=True)),
                    }
                    yield Observation(number, attributes)

        return callback
