"""Listening to a cache: loader calls and breaker state changes, pushed; everything else pulled.

The read and write paths already count hits per store, misses, sets and errors per namespace
(:class:`~toolweaver_async.stats.StatsRecorder`). Exporters read those counters when they are
scraped or collected, so a memory hit does exactly the same work with or without metrics. Only
events that are rare and slow anyway are pushed to listeners: a loader call (with its duration)
and a breaker changing state.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from ..loading.coordinator import LoadCoordinator
from ..resilience.breaker import BreakerState, CircuitBreaker

__all__ = ["CacheListener", "attach_listener"]

logger = logging.getLogger("toolweaver_async.metrics")


class CacheListener(Protocol):
    """What :meth:`AsyncToolCache.add_listener` calls. Both methods run on the event loop, in
    the cache's own call: keep them short and non-blocking (an exception is logged, never
    raised into the cache)."""

    def on_load(self, namespace: str, seconds: float, failed: bool) -> None:
        """A loader of ``namespace`` ran for ``seconds``; ``failed`` if it raised."""

    def on_breaker_change(self, store: str, old: BreakerState, new: BreakerState) -> None:
        """The breaker of ``store`` (``"redis"``, ``"file"``) went from ``old`` to ``new``."""


class _LoadFanOut:
    """Every listener's ``on_load``, as the coordinator's one ``on_load`` callback."""

    __slots__ = ("listeners",)

    def __init__(self) -> None:
        self.listeners: list[CacheListener] = []

    def __call__(self, namespace: str, seconds: float, failed: bool) -> None:
        for listener in self.listeners:
            try:
                listener.on_load(namespace, seconds, failed)
            except Exception:
                logger.exception("cache listener %r failed on a load", listener)


def attach_listener(
    listener: CacheListener,
    loads: LoadCoordinator,
    breakers: Mapping[str, CircuitBreaker],
) -> None:
    """Wire ``listener`` to a cache's load coordinator and breakers."""
    fan_out = loads.on_load
    if not isinstance(fan_out, _LoadFanOut):
        fan_out = _LoadFanOut()
        loads.on_load = fan_out
    fan_out.listeners.append(listener)

    def on_change(store: str, old: BreakerState, new: BreakerState, /) -> None:
        try:
            listener.on_breaker_change(store, old, new)
        except Exception:
            logger.exception("cache listener %r failed on a breaker change", listener)

    for breaker in breakers.values():
        breaker.add_listener(on_change)
