"""A copy of a hit into a faster store that never outlives a removal made meanwhile.

Another process may delete the key (or invalidate or clear) between our read and the copy
landing. Its removal reaches the promotion targets a second time once the slower store has
answered (see ``_writes.py``), so a copy that lands after that finds the source empty here and
is taken back, only while the target still holds exactly the bytes copied.
"""

from __future__ import annotations

from .resilience.guard import GuardedStore
from .stores.base import ConditionalDeleteStore

__all__ = ["promote_checked"]


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
