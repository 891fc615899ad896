"""The :class:`Store` protocol: what every layer of the chain does, and nothing more.

Stores move opaque entry bytes (see :mod:`toolweaver_async.serialization`); they never encode
values, decide order or fall back. A store reports any failure as
:class:`~toolweaver_async.errors.StoreError`, translated at one seam inside the store.

What a store can do beyond :class:`Store` it declares with the small capability protocols
below (:class:`LockingStore`, :class:`SelfBoundedStore`, :class:`RemoteStore`,
:class:`TimedStore`, :class:`CorruptionCountingStore`, :class:`HousekeepingStore`). The chain
checks them once, when it is built (``_chain.py``); nothing later asks which store it is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .redis.write_lane import WriteLane

__all__ = [
    "ConditionalDeleteStore",
    "CorruptionCountingStore",
    "TopologyReportingStore",
    "EntryPage",
    "HousekeepingStore",
    "KeyListingStore",
    "KeyLock",
    "LaneWritingStore",
    "LockingStore",
    "RemoteStore",
    "SelfBoundedStore",
    "Store",
    "StoreItem",
    "TimedStore",
]

# (key, entry bytes, seconds until the store may drop it or None for never)
StoreItem = tuple[str, bytes, float | None]
# (key, entry bytes) pairs a listing store hands back a page at a time
EntryPage = Sequence[tuple[str, bytes]]


@runtime_checkable
class Store(Protocol):
    """A layer of the cache. ``namespace`` and ``key`` are plain strings; each store builds its
    own physical key or path from them (and from the cache's key prefix it was given)."""

    name: str

    async def get(self, namespace: str, key: str) -> bytes | None:
        """The entry bytes under ``key``, or ``None``."""
        ...

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        """Entry bytes for each of ``keys``, in order, ``None`` where absent; one round trip."""
        ...

    async def set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        """Store ``data``; the store may drop it after ``ttl`` seconds (``None``: keep)."""
        ...

    async def add(self, namespace: str, key: str, data: bytes, ttl: float | None) -> bool:
        """Store ``data`` only where no entry is present (promotion never overwrites a newer
        write); ``True`` when it was stored."""
        ...

    async def set_many(self, namespace: str, items: Sequence[StoreItem]) -> None:
        """Store several entries in one round trip."""
        ...

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove ``key``; ``True`` when something was removed."""
        ...

    async def invalidate(self, namespace: str) -> None:
        """Make every entry of ``namespace`` unreadable at once."""
        ...

    async def clear(self) -> None:
        """Remove every entry under this cache's key prefix, and nothing else."""
        ...

    async def ping(self) -> None:
        """Return when the store answers; raise ``StoreError`` when it does not."""
        ...

    async def aclose(self) -> None:
        """Release connections, threads and files. Idempotent."""
        ...


@runtime_checkable
class KeyListingStore(Protocol):
    """A store that can list its entries (optional; ``AsyncToolCache.keys`` uses it)."""

    def list_entries(self, namespace: str, prefix: str) -> AsyncIterator[EntryPage]:
        """Pages of ``(key, entry bytes)`` of ``namespace`` whose key starts with ``prefix``,
        streamed: never every entry at once. An entry present for the whole listing appears
        once; the caller judges freshness from the bytes."""
        ...


@runtime_checkable
class ConditionalDeleteStore(Protocol):
    """A store that can remove an entry only while it holds given bytes: how the coordinator
    removes a corrupt entry it found without deleting a fresh one written since."""

    async def delete_if(self, namespace: str, key: str, data: bytes) -> bool:
        """Remove ``key`` only while it holds exactly ``data``; ``True`` when removed."""
        ...


class KeyLock(Protocol):
    """A lock on one cache key, held for at most ``ttl`` seconds unless extended."""

    ttl: float

    async def acquire(self) -> bool:
        """Take the lock if nobody holds it; ``True`` when taken. Never waits."""
        ...

    async def extend(self) -> bool:
        """Give the held lock a full ``ttl`` again; ``False`` when it is no longer ours."""
        ...

    async def release(self) -> bool:
        """Let go of the lock; ``False`` when it was no longer ours."""
        ...


# -- capabilities -----------------------------------------------------------------------------
# Flag capabilities are attributes typed ``Literal[True]``: a store has the capability when it
# declares the attribute, and mypy rejects a declaration with any other value.


@runtime_checkable
class LockingStore(Protocol):
    """A store that offers key locks shared by every process using it (one loader per key)."""

    def lock(self, namespace: str, key: str, *, ttl: float) -> KeyLock: ...


@runtime_checkable
class SelfBoundedStore(Protocol):
    """A store that bounds every get, set, add and delete with its own deadline, so the chain
    adds none (an ``asyncio.timeout`` per call costs ~3.4 us on uvloop), and that fails a call
    its server or disk did not answer in time itself. Its breaker then counts those failures
    only: a call that succeeded late waited in this process (a queue, a busy event loop), which
    says nothing about the store."""

    bounds_calls: Literal[True]


@runtime_checkable
class RemoteStore(Protocol):
    """A store reached over the network: shared by processes and prone to outages. The chain
    gives it an outage journal, so that it never serves a value older than one written while
    it was down. ``identity`` names the server (and database) it talks to, without secrets: a
    journal is only ever replayed onto the server it was written for."""

    remote: Literal[True]

    @property
    def identity(self) -> str: ...


@runtime_checkable
class TimedStore(Protocol):
    """A store with a time budget per call. Unless it bounds its calls itself
    (:class:`SelfBoundedStore`), a slower call counts against its breaker, and a
    :class:`RemoteStore` is cut off after it."""

    @property
    def call_timeout(self) -> float | None: ...


@runtime_checkable
class CorruptionCountingStore(Protocol):
    """A store that judges entries itself and drops broken ones the coordinator never sees;
    it reports how many it met per namespace, for ``stats()``."""

    @property
    def corrupt_by_namespace(self) -> Mapping[str, int]: ...


@runtime_checkable
class HousekeepingStore(Protocol):
    """A store that removes entries by itself (broken, expired, over its size bound) and
    counts them, for ``health_check()``."""

    @property
    def corrupt_removed(self) -> int: ...

    @property
    def expired_removed(self) -> int: ...

    @property
    def evicted(self) -> int: ...


@runtime_checkable
class TopologyReportingStore(Protocol):
    """A store spread over servers (Redis standalone, Sentinel or Cluster) that reports its
    topology for ``health_check()``: ``mode`` and ``nodes`` with each node's state."""

    async def describe(self) -> dict[str, Any]: ...


@runtime_checkable
class LaneWritingStore(Protocol):
    """A store that sends its own writes through one connection the invalidation channel can
    track with ``NOLOOP`` (Redis), so that this process is not told of its own writes."""

    @property
    def write_lane(self) -> WriteLane: ...
