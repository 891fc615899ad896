"""Metrics and hooks: the listener protocol, and what the Prometheus and OpenTelemetry exporters
publish (read back through a prometheus_client registry and OpenTelemetry's in-memory reader)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from prometheus_client import CollectorRegistry, generate_latest

from tests.polling import eventually
from toolweaver_async import AsyncToolCache, BreakerState, NamespacePolicy
from toolweaver_async.metrics.otel import OpenTelemetryExporter
from toolweaver_async.metrics.prometheus import PrometheusExporter


async def _answer() -> dict[str, int]:
    return {"answer": 42}


async def _workload(cache: AsyncToolCache) -> None:
    await cache.set("k", 1)
    await cache.get("k")  # memory hit
    await cache.get("nope")  # miss
    await cache.get_or_set("q", _answer, namespace="results")  # load
    await cache.get_or_set("q", _answer, namespace="results")  # hit


class Recorder:
    def __init__(self) -> None:
        self.loads: list[tuple[str, float, bool]] = []
        self.changes: list[tuple[str, BreakerState, BreakerState]] = []

    def on_load(self, namespace: str, seconds: float, failed: bool) -> None:
        self.loads.append((namespace, seconds, failed))

    def on_breaker_change(self, store: str, old: BreakerState, new: BreakerState) -> None:
        self.changes.append((store, old, new))


async def test_listener_hears_loads_with_durations_and_breaker_changes(
    make_cache: Callable[..., AsyncToolCache], free_port: Callable[[], int]
) -> None:
    cache = make_cache(use_redis=True, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    recorder = Recorder()
    cache.add_listener(recorder)
    await cache.connect()  # Redis is not there: its breaker opens

    async def broken() -> None:
        raise RuntimeError("tool down")

    await cache.get_or_set("q", _answer, namespace="results")
    with pytest.raises(RuntimeError):
        await cache.get_or_set("b", broken, namespace="results")
    assert [(ns, failed) for ns, _, failed in recorder.loads] == [
        ("results", False),
        ("results", True),
    ]
    assert all(seconds >= 0 for _, seconds, _ in recorder.loads)
    assert ("redis", BreakerState.CLOSED, BreakerState.OPEN) in recorder.changes


async def test_a_failing_listener_never_breaks_the_cache(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    class Broken(Recorder):
        def on_load(self, namespace: str, seconds: float, failed: bool) -> None:
            raise ValueError("listener bug")

    cache = make_cache()
    cache.add_listener(Broken())
    assert await cache.get_or_set("q", _answer) == {"answer": 42}


# -- Prometheus -------------------------------------------------------------------------------


async def test_prometheus_exporter_publishes_counters_histogram_and_gauges(
    make_cache: Callable[..., AsyncToolCache], free_port: Callable[[], int]
) -> None:
    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry)
    cache = make_cache(
        use_redis=True,
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        namespaces={"results": NamespacePolicy(ttl=60, cost_per_call=0.01)},
    )
    exporter.track(cache)
    await cache.connect()  # Redis down: breaker open, writes journaled
    await _workload(cache)
    prefix = cache.config.key_prefix

    def sample(name: str, **labels: str) -> Any:
        return registry.get_sample_value(name, {"prefix": prefix, **labels})

    hit = {"namespace": "default", "store": "memory", "result": "hit"}
    assert sample("toolweaver_cache_lookups_total", **hit) == 1
    miss = {"namespace": "default", "store": "none", "result": "miss"}
    assert sample("toolweaver_cache_lookups_total", **miss) == 1
    assert sample("toolweaver_cache_sets_total", namespace="default") == 1
    assert sample("toolweaver_cache_loads_total", namespace="results", result="ok") == 1
    assert sample("toolweaver_cache_saved_cost_total", namespace="results") == pytest.approx(0.01)
    assert (
        sample("toolweaver_cache_load_duration_seconds_count", namespace="results", result="ok")
        == 1
    )
    assert sample("toolweaver_cache_breaker_state", store="redis") == 2  # open
    assert sample("toolweaver_cache_breaker_state", store="file") == 0  # closed
    assert sample("toolweaver_cache_breaker_transitions_total", store="redis", state="open") == 1
    assert sample("toolweaver_cache_journal_entries", store="redis") == 2  # the two sets
    text = generate_latest(registry).decode()
    assert "# TYPE toolweaver_cache_lookups_total counter" in text
    assert "# TYPE toolweaver_cache_load_duration_seconds histogram" in text
    exporter.close()
    assert registry.get_sample_value("toolweaver_cache_sets_total", {"prefix": prefix}) is None


async def test_prometheus_exporter_tells_several_caches_apart_by_prefix(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry)
    first, second = make_cache(key_prefix="agent-a"), make_cache(key_prefix="agent-b")
    exporter.track(first)
    exporter.track(second)
    await first.set("k", 1)
    await second.get("k")  # a miss: the namespace appears, with no set
    for prefix, expected in (("agent-a", 1), ("agent-b", 0)):
        labels = {"prefix": prefix, "namespace": "default"}
        assert registry.get_sample_value("toolweaver_cache_sets_total", labels) == expected


# -- OpenTelemetry ----------------------------------------------------------------------------


def _points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    found: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                found.setdefault(metric.name, []).extend(metric.data.data_points)
    return found


@pytest.mark.allow_blocking(reason="an OpenTelemetry MeterProvider joins a thread pool")
async def test_opentelemetry_exporter_publishes_through_the_in_memory_reader(
    make_cache: Callable[..., AsyncToolCache], free_port: Callable[[], int]
) -> None:
    reader = InMemoryMetricReader()
    exporter = OpenTelemetryExporter(MeterProvider(metric_readers=[reader]))
    cache = make_cache(use_redis=True, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    exporter.track(cache)
    await cache.connect()
    await _workload(cache)
    points = _points(reader)
    prefix = cache.config.key_prefix

    def value(name: str, **labels: str) -> Any:
        wanted = {"prefix": prefix, **labels}
        matches = [p for p in points[name] if dict(p.attributes) == wanted]
        assert len(matches) == 1, (name, wanted, points.get(name))
        return matches[0]

    hit = {"namespace": "default", "store": "memory", "result": "hit"}
    assert value("toolweaver_cache_lookups", **hit).value == 1
    assert value("toolweaver_cache_sets", namespace="default").value == 1
    assert value("toolweaver_cache_loads", namespace="results", result="ok").value == 1
    durations = value("toolweaver_cache_load_duration_seconds", namespace="results", result="ok")
    assert durations.count == 1
    assert value("toolweaver_cache_breaker_state", store="redis").value == 2
    assert value("toolweaver_cache_journal_entries", store="redis").value == 2
    assert value("toolweaver_cache_breaker_transitions", store="redis", state="open").value == 1


async def test_prometheus_exporter_counts_coherence_invalidations_from_another_cache(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    registry = CollectorRegistry()
    exporter = PrometheusExporter(registry)
    writer = make_cache(use_redis=True)
    reader = make_cache(use_redis=True)
    exporter.track(reader)
    await writer.connect()
    await reader.connect()
    await writer.set("k", 1)
    assert await reader.get("k") == 1
    labels = {"prefix": reader.config.key_prefix, "event": "invalidations"}
    before = registry.get_sample_value("toolweaver_cache_coherence_events_total", labels)
    await writer.set("k", 2)

    def invalidated() -> bool:
        now = registry.get_sample_value("toolweaver_cache_coherence_events_total", labels)
        return now is not None and before is not None and now > before

    await eventually(invalidated, what="the reader's invalidation counter to rise")
