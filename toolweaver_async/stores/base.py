"""The :class:`Store` protocol: what every layer of the chain does, and nothing more.

Stores move opaque entry bytes (see :mod:`toolweaver_async.serialization`); they never encode
values, decide order or fall back. A store reports any failure as
:class:`~toolweaver_async.errors.StoreError`, translated at one seam inside the store.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Protocol, runtime_checkable

__all__ = ["EntryPage", "KeyListingStore", "KeyLock", "Store", "StoreItem"]

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
