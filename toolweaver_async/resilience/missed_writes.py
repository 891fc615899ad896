"""What one store missed: keys (or whole namespaces, or everything) whose last write, delete,
invalidation or clear may not have reached it.

A store that missed a write of a key still holds the value before it, or a value deleted since.
Serving that would bring an older value back (and promotion would copy it into the faster
stores, and a restart would serve it from the file store). So reads of what a store missed are
misses in that store until a later write of the same scope reaches it. Stores with an outage
journal (Redis) get the same guarantee from their journal and do not need this record.

A write that did not answer (failed, timed out, cancelled, skipped by an open breaker) marks
its keys with a digest of the bytes it tried to write (a delete marks with none). A read of a
marked key then trusts the store only if it holds exactly those bytes: a write that timed out
but landed later in its thread is served (and the mark lifted), an older value never is. A
later answered write or delete of the key lifts the mark. Bounded: past ``max_keys`` marked
keys, the namespace holding most of them is marked as a whole (one entry instead of
thousands), which lifts only when an ``invalidate`` of it (or a ``clear``) reaches the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from ..errors import ConfigError

__all__ = ["MissedWrites", "WriteScope", "digest"]

# (namespace, [(key, bytes written or None for a delete)]): the entries None means the whole
# namespace; namespace None means everything.
WriteScope = tuple[str | None, Sequence[tuple[str, bytes | None]] | None]


def digest(data: bytes) -> bytes:
    """A short fingerprint of entry bytes (entries carry their creation time, so two writes
    of the same value differ)."""
    return hashlib.blake2b(data, digest_size=16).digest()


DEFAULT_MAX_KEYS = 10_000


class MissedWrites:
    """The scopes one store may hold outdated entries for; see the module docstring."""

    __slots__ = ("_count", "_everything", "_keys", "_namespaces", "max_keys")

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ConfigError(f"max_keys must be >= 1, got {max_keys!r}")
        self.max_keys = max_keys
        # namespace -> key -> digest of the bytes the missed write carried (None: a delete)
        self._keys: dict[str, dict[str, bytes | None]] = {}
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
        """True when nothing the store holds for ``key`` can be trusted: skip the read."""
        if self._everything or namespace in self._namespaces:
            return True
        keys = self._keys.get(namespace)
        return keys is not None and key in keys and keys[key] is None

    def trusts(self, namespace: str, key: str, data: bytes) -> bool:
        """Whether ``data``, read from the store under ``key``, may be served: the key is not
        marked, or ``data`` is exactly what the missed write carried (it landed after all;
        the mark is lifted)."""
        if self._everything or namespace in self._namespaces:
            return False
        keys = self._keys.get(namespace)
        if keys is None or key not in keys:
            return True
        expected = keys[key]
        if expected is None or expected != digest(data):
            return False
        self.lift((namespace, ((key, None),)))
        return True

    def mark(self, scope: WriteScope) -> None:
        """A write of ``scope`` is on its way, or did not arrive."""
        namespace, entries = scope
        if namespace is None:
            self._everything = True
        elif entries is None:
            self._namespaces.add(namespace)
            self._count -= len(self._keys.pop(namespace, ()))
        elif namespace not in self._namespaces and not self._everything:
            marked = self._keys.setdefault(namespace, {})
            before = len(marked)
            for key, data in entries:
                marked[key] = None if data is None else digest(data)
            self._count += len(marked) - before
            if self._count > self.max_keys:
                self._collapse()

    def lift(self, scope: WriteScope) -> None:
        """A write of ``scope`` reached the store: what it holds there is current again."""
        namespace, entries = scope
        if namespace is None:
            self._keys.clear()
            self._namespaces.clear()
            self._everything = False
            self._count = 0
        elif entries is None:
            self._namespaces.discard(namespace)
            self._count -= len(self._keys.pop(namespace, ()))
        else:
            marked = self._keys.get(namespace)
            if marked is None:
                return
            before = len(marked)
            for key, _data in entries:
                marked.pop(key, None)
            self._count -= before - len(marked)
            if not marked:
                del self._keys[namespace]

    def _collapse(self) -> None:
        """Mark the namespace with most marked keys as a whole, forgetting its keys."""
        largest = max(self._keys, key=lambda name: len(self._keys[name]))
        self.mark((largest, None))
