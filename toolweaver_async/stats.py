"""Counters of what the cache did, per namespace, and frozen snapshots of them.

Counting is a plain attribute increment on the hot path; :meth:`StatsRecorder.snapshot` builds the
immutable :class:`CacheStats` only when someone asks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from .config import MAX_TRACKED_NAMESPACES, OTHER_NAMESPACES

__all__ = ["CacheStats", "NamespaceCounters", "NamespaceStats", "StatsRecorder"]


class NamespaceCounters:
    """Mutable counters of one namespace (internal; read them through ``CacheStats``)."""

    __slots__ = (
        "coalesced",
        "corrupt",
        "deletes",
        "errors",
        "hits",
        "loader_calls",
        "loader_errors",
        "loader_seconds",
        "misses",
        "sets",
        "stale_served",
        "type_mismatches",
    )

    def __init__(self, store_names: Iterable[str]) -> None:
        names = tuple(store_names)
        self.hits: dict[str, int] = dict.fromkeys(names, 0)
        self.errors: dict[str, int] = dict.fromkeys(names, 0)
        self.misses = 0
        self.sets = 0
        self.deletes = 0
        self.corrupt = 0
        self.type_mismatches = 0
        self.stale_served = 0
        self.coalesced = 0
        self.loader_calls = 0
        self.loader_errors = 0
        self.loader_seconds = 0.0


@dataclass(frozen=True, slots=True)
class NamespaceStats:
    """What happened in one namespace (or overall) since the cache was created."""

    hits: Mapping[str, int] = field(default_factory=dict)
    misses: int = 0
    sets: int = 0
    deletes: int = 0
    errors: Mapping[str, int] = field(default_factory=dict)
    corrupt: int = 0
    type_mismatches: int = 0
    stale_served: int = 0
    coalesced: int = 0  # get_or_set calls answered by another caller's load in this process
    loader_calls: int = 0
    loader_errors: int = 0
    loader_seconds: float = 0.0
    # hits x the namespace's mean loader time, and x its NamespacePolicy.cost_per_call
    # (filled by savings.with_savings)
    saved_seconds: float = 0.0
    saved_cost: float = 0.0

    @property
    def total_hits(self) -> int:
        return sum(self.hits.values())

    @property
    def hit_rate(self) -> float:
        """Hits over lookups, 0.0 before the first lookup."""
        lookups = self.total_hits + self.misses
        return self.total_hits / lookups if lookups else 0.0

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["hits"] = dict(self.hits)
        data["errors"] = dict(self.errors)
        data["total_hits"] = self.total_hits
        data["hit_rate"] = self.hit_rate
        return data


@dataclass(frozen=True, slots=True)
class CacheStats:
    """A snapshot: ``overall`` plus one :class:`NamespaceStats` per namespace used, and per
    store the ``bugs``: exceptions a store raised that were not outages (logged at ERROR)."""

    overall: NamespaceStats
    namespaces: Mapping[str, NamespaceStats]
    bugs: Mapping[str, int] = field(default_factory=dict)
    # memory coherence across processes: invalidations received, entries they dropped, memory
    # flushes, channel losses (see toolweaver_async.coherence)
    coherence: Mapping[str, int] = field(default_factory=dict)
    # the file store's write-behind queue: entries and bytes queued now, flushed, coalesced,
    # failed, waits (writers held by a full queue)
    write_queue: Mapping[str, int] = field(default_factory=dict)

    @property
    def hit_rate(self) -> float:
        return self.overall.hit_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "overall": self.overall.to_dict(),
            "namespaces": {name: s.to_dict() for name, s in self.namespaces.items()},
            "bugs": dict(self.bugs),
            "coherence": dict(self.coherence),
            "write_queue": dict(self.write_queue),
        }


class StatsRecorder:
    """Hands out per-namespace counters and snapshots them."""

    def __init__(self, store_names: Iterable[str]) -> None:
        self._store_names = tuple(store_names)
        self._by_namespace: dict[str, NamespaceCounters] = {}

    def counters(self, namespace: str) -> NamespaceCounters:
        """The counters of ``namespace``. Past ``MAX_TRACKED_NAMESPACES`` namespaces, new ones
        share the counters reported as ``OTHER_NAMESPACES``: an agent minting a namespace per
        task must not grow the cache by ~800 bytes per namespace for ever (overall sums stay
        exact)."""
        found = self._by_namespace.get(namespace)
        if found is None:
            if len(self._by_namespace) >= MAX_TRACKED_NAMESPACES:
                namespace = OTHER_NAMESPACES
                found = self._by_namespace.get(namespace)
                if found is not None:
                    return found
            found = self._by_namespace[namespace] = NamespaceCounters(self._store_names)
        return found

    def snapshot(
        self,
        corrupt_in_stores: Mapping[str, int] | None = None,
        bugs: Mapping[str, int] | None = None,
    ) -> CacheStats:
        """Frozen counters; ``corrupt_in_stores`` adds broken entries that a store found and
        dropped itself, per namespace (the file store checks its own file headers); ``bugs``
        are counted by the guards, per store."""
        for namespace in corrupt_in_stores or ():
            self.counters(namespace)
        per_namespace = {
            name: _freeze(c, (corrupt_in_stores or {}).get(name, 0))
            for name, c in sorted(self._by_namespace.items())
        }
        return CacheStats(
            overall=_sum(per_namespace.values(), self._store_names),
            namespaces=per_namespace,
            bugs=dict(bugs or {}),
        )


def _freeze(c: NamespaceCounters, corrupt_in_stores: int) -> NamespaceStats:
    return NamespaceStats(
        hits=dict(c.hits),
        misses=c.misses,
        sets=c.sets,
        deletes=c.deletes,
        errors=dict(c.errors),
        corrupt=c.corrupt + corrupt_in_stores,
        type_mismatches=c.type_mismatches,
        stale_served=c.stale_served,
        coalesced=c.coalesced,
        loader_calls=c.loader_calls,
        loader_errors=c.loader_errors,
        loader_seconds=c.loader_seconds,
    )


def _sum(parts: Iterable[NamespaceStats], store_names: tuple[str, ...]) -> NamespaceStats:
    items = list(parts)
    return NamespaceStats(
        hits={n: sum(p.hits.get(n, 0) for p in items) for n in store_names},
        misses=sum(p.misses for p in items),
        sets=sum(p.sets for p in items),
        deletes=sum(p.deletes for p in items),
        errors={n: sum(p.errors.get(n, 0) for p in items) for n in store_names},
        corrupt=sum(p.corrupt for p in items),
        type_mismatches=sum(p.type_mismatches for p in items),
        stale_served=sum(p.stale_served for p in items),
        coalesced=sum(p.coalesced for p in items),
        loader_calls=sum(p.loader_calls for p in items),
        loader_errors=sum(p.loader_errors for p in items),
        loader_seconds=sum(p.loader_seconds for p in items),
    )
