"""Metrics and hooks: a listener protocol and exporters for OpenTelemetry and Prometheus.

- :class:`CacheListener` and ``AsyncToolCache.add_listener``: loader calls and breaker changes.
- ``toolweaver_async.metrics.prometheus.PrometheusExporter`` (extra ``prometheus``).
- ``toolweaver_async.metrics.otel.OpenTelemetryExporter`` (extra ``otel``).

Both exporters read the cache's own counters when collected: zero work on the hot path.
"""

from .hooks import CacheListener
from .readout import BREAKER_STATE_VALUES, MetricsReadout

__all__ = ["BREAKER_STATE_VALUES", "CacheListener", "MetricsReadout"]
