"""What one store missed: keys (or whole namespaces, or everything) whose last write, delete,
invalidation or clear may not have reached it.

A store that missed a write of a key still holds the value before it, or a value deleted since.
Serving that would bring an older value back (and promotion would copy it into the faster
stores, and a restart would serve it from the file store). So reads of what a store missed are
misses in that store until a later write of the same scope reaches it. Stores with an outage
journal (Redis) get the same guarantee from their journal and do not need this record.

The record is pessimistic: a write marks its scope *before* it is sent, and only an answered
success lifts the mark. A caller cancelled mid-write, a write still running when its caller
gave up (a hung disk), a write the breaker skipped: all stay marked, so the worst case is a
miss in that store, never an older value. Bounded: past ``max_keys`` marked keys, the namespace
holding most of them is marked as a whole (one entry instead of thousands), which lifts only
when an ``invalidate`` of it (or a ``clear``) reaches the store.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["MissedWrites", "WriteScope"]

# (namespace, keys): keys None means the whole namespace; namespace None means everything.
WriteScope = tuple[str | None, Sequence[str] | None]

DEFAULT_MAX_KEYS = 10_000


class MissedWrites:
    """The scopes one store may hold outdated entries for; see the module docstring."""

    __slots__ = ("_count", "_everything", "_keys", "_namespaces", "max_keys")

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be >= 1, got {max_keys!r}")
        self.max_keys = max_keys
        self._keys: dict[str, set[str]] = {}
        self._namespaces: set[str] = set()
        self._everything = False
        self._count = 0

    def __bool__(self) -> bool:
        """Whether anything is marked: the read path asks nothing more while this is False."""
        return self._everything or bool(self._keys) or bool(self._namespaces)

    def __len__(self) -> int:
        """Marked keys (namespaces marked as a whole count once each)."""
        return self._count + len(self._namespaces) + int(self._everything)

    def holds_back(self, namespace: str, key: str) -> bool:
        """True when the store may hold an outdated entry of ``key``: read it as a miss."""
        if self._everything or namespace in self._namespaces:
            return True
        keys = self._keys.get(namespace)
        return keys is not None and key in keys

    def mark(self, scope: WriteScope) -> None:
        """A write of ``scope`` is on its way, or did not arrive."""
        namespace, keys = scope
        if namespace is None:
            self._everything = True
        elif keys is None:
            self._namespaces.add(namespace)
            self._count -= len(self._keys.pop(namespace, ()))
        elif namespace not in self._namespaces and not self._everything:
            marked = self._keys.setdefault(namespace, set())
            before = len(marked)
            marked.update(keys)
            self._count += len(marked) - before
            if self._count > self.max_keys:
                self._collapse()

    def lift(self, scope: WriteScope) -> None:
        """A write of ``scope`` reached the store: what it holds there is current again."""
        namespace, keys = scope
        if namespace is None:
            self._keys.clear()
            self._namespaces.clear()
            self._everything = False
            self._count = 0
        elif keys is None:
            self._namespaces.discard(namespace)
            self._count -= len(self._keys.pop(namespace, ()))
        else:
            marked = self._keys.get(namespace)
            if marked is None:
                return
            before = len(marked)
            marked.difference_update(keys)
            self._count -= before - len(marked)
            if not marked:
                del self._keys[namespace]

    def _collapse(self) -> None:
        """Mark the namespace with most marked keys as a whole, forgetting its keys."""
        largest = max(self._keys, key=lambda name: len(self._keys[name]))
        self.mark((largest, None))
