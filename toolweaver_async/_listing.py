"""Key listing: each key of a fresh entry of a namespace once, whichever stores hold it.

Streamed with bounded memory. Stores hand back pages of ``(key, entry bytes)``
(:class:`~toolweaver_async.stores.base.KeyListingStore`); an entry counts when its envelope
names this key and namespace and is fresh by the cache's clock at the moment it is judged.

**Exactly once without a set of every key.** The memory layer is listed first and its keys
are remembered (it holds at most ``memory_max_entries``, so that set is bounded by
configuration). The other stores are listed *slowest first*, and a key is yielded by a store
only when no store listed before it holds a fresh entry of it, checked with one ``get_many``
per page. Slowest first is what makes that check stable: promotion only ever copies entries
into *faster* stores, so a slower store's answer changes during the listing only when the key
itself is written, deleted or expires. Copies of one entry carry the same envelope, so an
entry that expires during the listing is gone from every store alike. An entry present and
unchanged for the whole listing is therefore yielded exactly once; one written meanwhile may
or may not be (as with Redis ``SCAN``, which may also repeat a key when Redis resizes its
table during the scan).

Keys whose newest write is still in Redis's outage journal are not listed from Redis (it may
hold an older value or a deleted one), as ``get`` would not read them there. A store that
fails during the listing is skipped from there on, counted in ``stats()`` and logged.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence

from .errors import StoreError
from .resilience.breaker import BreakerState
from .resilience.guard import GuardedStore, Unreachable
from .serialization import EntryCodec
from .stats import NamespaceCounters
from .stores.base import KeyListingStore
from .stores.memory import MemoryStore

__all__ = ["list_keys"]

logger = logging.getLogger("toolweaver_async.listing")


class _Judge:
    """Is this entry byte string a fresh entry of that key of this namespace, now?"""

    __slots__ = ("clock", "codec", "namespace")

    def __init__(self, codec: EntryCodec, clock: Callable[[], float], namespace: str) -> None:
        self.codec = codec
        self.clock = clock
        self.namespace = namespace

    def fresh(self, key: str, data: bytes) -> bool:
        try:
            header = self.codec.decode_header(data)
        except Exception:
            return False  # not one of our entries: reads remove it, a listing just skips it
        if header.key != key or header.namespace != self.namespace:
            return False
        return header.expires_at is None or header.expires_at > self.clock()


async def list_keys(
    *,
    memory: MemoryStore | None,
    layers: Sequence[GuardedStore],
    codec: EntryCodec,
    clock: Callable[[], float],
    counters: NamespaceCounters,
    namespace: str,
    prefix: str,
) -> AsyncIterator[str]:
    """The keys (see the module docstring for the order and the once-only argument)."""
    judge = _Judge(codec, clock, namespace)
    in_memory: set[str] = set()
    if memory is not None:
        async for page in memory.list_entries(namespace, prefix):
            for key, data in page:
                if judge.fresh(key, data):
                    in_memory.add(key)
                    yield key
    listed: list[GuardedStore] = []
    for layer in reversed(layers):
        store = layer.store
        if not isinstance(store, KeyListingStore) or layer.breaker.state is BreakerState.OPEN:
            continue
        journal = layer.journal
        try:
            async for page in store.list_entries(namespace, prefix):
                keys = [
                    key
                    for key, data in page
                    if key not in in_memory
                    and (journal is None or not journal.covers(namespace, key))
                    and judge.fresh(key, data)
                ]
                for key in await _not_held_by(listed, keys, judge):
                    yield key
        except StoreError as exc:
            counters.errors[layer.name] += 1
            logger.warning(
                "listing keys of %r in the %s store stopped: %s", namespace, layer.name, exc
            )
            continue
        except Exception:
            counters.errors[layer.name] += 1
            logger.exception("listing keys of %r in the %s store failed", namespace, layer.name)
            continue
        listed.append(layer)


async def _not_held_by(
    earlier: Sequence[GuardedStore], keys: list[str], judge: _Judge
) -> list[str]:
    """``keys`` less those a store listed earlier holds fresh (it yielded them already). A store
    that does not answer now is taken not to hold them: a possible repeat beats a lost key."""
    for layer in earlier:
        if not keys:
            break
        answers = await layer.get_many(judge.namespace, keys)
        if isinstance(answers, Unreachable):
            continue
        keys = [
            key
            for key, data in zip(keys, answers, strict=True)
            if data is None or not judge.fresh(key, data)
        ]
    return keys
