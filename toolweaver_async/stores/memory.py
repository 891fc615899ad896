"""The in-process layer: a bounded LRU of entry bytes with per-entry expiry.

Every hit decodes the bytes again, so each caller gets its own copy and a caller that mutates a
result cannot corrupt the cache. The synchronous ``lookup_entry``/``put`` are the hot path the
coordinator uses directly: no locks, tasks or awaits (the event loop is the only writer).

Each :class:`MemoryEntry` also has two slots the coordinator fills on the first hit and reuses
on every later one: ``header``, the checked envelope with its payload still encoded (so a hit
checks freshness before decoding and decodes the payload alone), and ``shared``, the decoded
object handed to every caller of a ``share_objects`` namespace. Replacing an entry drops both.

``trust_for`` (seconds, ``None`` for no limit) caps how long an entry stored from now on may be
served, whatever its TTL: while no invalidation channel vouches for the memory layer (see
:mod:`toolweaver_async.coherence`), entries live at most the coherence window (``window``), and
so does an entry read past a store that was down. The cap is folded into each entry's expiry
when it is stored, so a hit pays nothing for it.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

from .base import EntryPage, StoreItem

__all__ = ["MemoryEntry", "MemoryStore"]

# Rough bookkeeping cost of one entry (dict slot, tuple key, entry object), so that a flood of
# tiny values is bounded by max_bytes too.
_ENTRY_OVERHEAD = 160


class MemoryEntry:
    """Entry bytes, when the store may drop them, and the coordinator's memos (see above).

    ``shared`` objects are not counted in ``max_bytes``: a decoded value takes several times
    the room of its msgpack bytes.
    """

    __slots__ = ("data", "expires_at", "header", "shared", "size")

    def __init__(self, data: bytes, expires_at: float | None, size: int) -> None:
        self.data = data
        self.expires_at = expires_at
        self.size = size
        # the checked Envelope[msgspec.Raw] of ``data``: key, expiry, undecoded payload
        self.header: Any = None
        # (type, decoded object) handed to every caller of a share_objects namespace
        self.shared: tuple[Any, Any] | None = None


class MemoryStore:
    """Bounded by entry count and bytes; least recently used entries are evicted first."""

    name = "memory"

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._clock = clock
        self._entries: OrderedDict[tuple[str, str], MemoryEntry] = OrderedDict()
        self._bytes = 0
        self.evictions = 0
        self.trust_for: float | None = None
        # the coherence window, for entries read past a store that was down (see put)
        self.window: float | None = None

    # -- synchronous hot path -------------------------------------------------------------
    def lookup_entry(
        self, namespace: str, key: str, now: float | None = None
    ) -> MemoryEntry | None:
        """The live entry under ``key`` (refreshing its LRU position), or ``None``. ``now``
        saves a clock read when the caller has just made one."""
        k = (namespace, key)
        entry = self._entries.get(k)
        if entry is None:
            return None
        expires_at = entry.expires_at
        if expires_at is not None and expires_at <= (self._clock() if now is None else now):
            self._remove(k)
            return None
        self._entries.move_to_end(k)
        return entry

    def lookup(self, namespace: str, key: str) -> bytes | None:
        entry = self.lookup_entry(namespace, key)
        return None if entry is None else entry.data

    def put(
        self, namespace: str, key: str, data: bytes, ttl: float | None, *, vouched: bool = True
    ) -> bool:
        """Store ``data``; ``False`` when it is larger than the whole store may hold.
        ``vouched=False``: whatever the mode, keep it ``window`` seconds at most."""
        size = len(data) + len(key) + _ENTRY_OVERHEAD
        k = (namespace, key)
        trust_for = self.trust_for
        if not vouched and self.window is not None:
            trust_for = self.window if trust_for is None else min(trust_for, self.window)
        if size > self.max_bytes or trust_for == 0:
            self._remove(k)
            return False
        if trust_for is None:
            expires_at = None if ttl is None else self._clock() + ttl
        else:
            now = self._clock()
            expires_at = now + (trust_for if ttl is None else min(ttl, trust_for))
        old = self._entries.pop(k, None)
        if old is not None:
            self._bytes -= old.size
        self._entries[k] = MemoryEntry(data, expires_at, size)
        self._bytes += size
        self._evict()
        return True

    def put_if_absent(
        self, namespace: str, key: str, data: bytes, ttl: float | None, *, vouched: bool = True
    ) -> bool:
        if self.lookup_entry(namespace, key) is not None:
            return False
        return self.put(namespace, key, data, ttl, vouched=vouched)

    def discard(self, namespace: str, key: str) -> bool:
        return self._remove((namespace, key))

    def discard_if(self, namespace: str, key: str, data: bytes) -> bool:
        """Remove ``key`` only while it holds exactly ``data`` (a corrupt entry that a newer
        write has not replaced yet)."""
        entry = self._entries.get((namespace, key))
        if entry is None or (entry.data is not data and entry.data != data):
            return False
        return self._remove((namespace, key))

    def discard_namespace(self, namespace: str) -> int:
        doomed = [k for k in self._entries if k[0] == namespace]
        for k in doomed:
            self._remove(k)
        return len(doomed)

    def discard_all(self) -> None:
        self._entries.clear()
        self._bytes = 0

    def expire_all_within(self, seconds: float) -> None:
        """Let every entry live at most ``seconds`` more (one pass; used when the memory layer
        stops being vouched for, which is rare)."""
        if seconds <= 0:
            self.discard_all()
            return
        limit = self._clock() + seconds
        for entry in self._entries.values():
            if entry.expires_at is None or entry.expires_at > limit:
                entry.expires_at = limit

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    # -- Store protocol -----------------------------------------------------------------
    async def get(self, namespace: str, key: str) -> bytes | None:
        return self.lookup(namespace, key)

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        return [self.lookup(namespace, k) for k in keys]

    async def set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        self.put(namespace, key, data, ttl)

    async def add(self, namespace: str, key: str, data: bytes, ttl: float | None) -> bool:
        return self.put_if_absent(namespace, key, data, ttl)

    async def set_many(self, namespace: str, items: Sequence[StoreItem]) -> None:
        for key, data, ttl in items:
            self.put(namespace, key, data, ttl)

    async def delete(self, namespace: str, key: str) -> bool:
        return self.discard(namespace, key)

    async def delete_if(self, namespace: str, key: str, data: bytes) -> bool:
        return self.discard_if(namespace, key, data)

    async def invalidate(self, namespace: str) -> None:
        self.discard_namespace(namespace)

    async def clear(self) -> None:
        self.discard_all()

    async def ping(self) -> None:
        return None

    async def list_entries(self, namespace: str, prefix: str) -> AsyncIterator[EntryPage]:
        """One snapshot page (the store is bounded by ``max_entries``), taken synchronously so
        no write can interleave with it."""
        now = self._clock()
        page = [
            (k[1], entry.data)
            for k, entry in self._entries.items()
            if k[0] == namespace
            and k[1].startswith(prefix)
            and (entry.expires_at is None or entry.expires_at > now)
        ]
        if page:
            yield page

    async def aclose(self) -> None:
        self.discard_all()

    # -- internals ------------------------------------------------------------------------
    def _remove(self, k: tuple[str, str]) -> bool:
        entry = self._entries.pop(k, None)
        if entry is None:
            return False
        self._bytes -= entry.size
        return True

    def _evict(self) -> None:
        entries = self._entries
        while len(entries) > self.max_entries or self._bytes > self.max_bytes:
            _, entry = entries.popitem(last=False)
            self._bytes -= entry.size
            self.evictions += 1
