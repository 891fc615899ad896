"""Promotion: a hit found in a slower store is copied into the faster ones (see ``_reads.py``).

A copy carries the entry's remaining lifetime and never overwrites. A copy into a store that
other processes share must never outlive a removal made meanwhile: another process may delete
the key (or invalidate or clear) between our read and the copy landing. Its removal reaches
the promotion targets a second time once the slower store has answered (see ``_writes.py``), so
a copy that lands after that finds the source empty and is taken back
(:func:`promote_checked`), only while the target still holds exactly the bytes copied.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from .freshness import EntryState, entry_state
from .resilience.breaker import BreakerState
from .resilience.guard import GuardedStore
from .serialization import EntryCodec, Envelope
from .stores.base import ConditionalDeleteStore
from .stores.memory import MemoryStore

__all__ = ["Promoter", "promote_checked"]

_STALE_SERVABLE, _EXPIRED = EntryState.STALE_SERVABLE, EntryState.EXPIRED


async def promote_checked(
    target: GuardedStore,
    source: GuardedStore,
    namespace: str,
    key: str,
    data: bytes,
    remaining: float | None,
) -> None:
    """Copy ``data`` into ``target`` (``SET NX``), then take it back if ``source`` no longer
    holds it."""
    if await target.add(namespace, key, data, remaining) is not True:
        return
    if await source.get(namespace, key) == data:
        return
    assert isinstance(target.store, ConditionalDeleteStore)
    await target.attempt(target.store.delete_if, namespace, key, data)


class Promoter:
    """Copies hits into the faster stores of a chain: ``memory`` and the guarded ``layers``
    in read order (a hit found at index ``i`` goes into memory and ``layers[:i]``)."""

    def __init__(
        self,
        memory: MemoryStore | None,
        layers: Sequence[GuardedStore],
        *,
        codec: EntryCodec,
        clock: Callable[[], float],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self.memory = memory
        self.layers = layers
        self._codec = codec
        self._clock = clock
        self._spawn = spawn

    def promote(
        self,
        found_at: int,
        namespace: str,
        key: str,
        data: bytes,
        envelope: Envelope[Any],
        *,
        vouched: bool = True,
    ) -> None:
        """Copy a hit into the faster stores with its remaining lifetime; never overwrite.

        ``vouched=False``: a faster store (Redis) was down or skipped, so the hit may be older
        than what it holds; memory keeps it for the coherence window at most."""
        if found_at == 0 and self.memory is None:
            return
        hard = envelope.hard_expires_at
        remaining = None if hard is None else hard - self._clock()
        if remaining is not None and remaining <= 0:
            return
        if self.memory is not None:
            self.memory.put_if_absent(namespace, key, data, remaining, vouched=vouched)
        for layer in self.layers[:found_at]:
            # Only into a healthy store: during an outage a task per hit would only be refused
            # by the open breaker (~15 us of loop time each), and a half-open store's probe
            # slot belongs to real traffic.
            if layer.breaker.state is BreakerState.CLOSED:
                if isinstance(layer.store, ConditionalDeleteStore):
                    source = self.layers[found_at]
                    self._spawn(promote_checked(layer, source, namespace, key, data, remaining))
                else:
                    self._spawn(layer.add(namespace, key, data, remaining))

    def drop_stale_memory_copy(self, namespace: str, key: str, found: Envelope[Any]) -> None:
        """Before promoting a fresh ``found``: promotion never overwrites, so a stale copy in
        memory would go on shadowing it until its grace period ends."""
        memory = self.memory
        now = self._clock()
        if memory is None or _past_expiry(found, now):
            return
        data = memory.lookup(namespace, key)
        if data is None:
            return
        try:
            stale = _past_expiry(self._codec.decode_header(data), now)
        except Exception:
            stale = True  # a broken copy shadows the fresh entry just as well
        if stale:
            memory.discard(namespace, key)


def _past_expiry(entry: Envelope[Any], now: float) -> bool:
    state = entry_state(entry, now)
    return state is _STALE_SERVABLE or state is _EXPIRED
