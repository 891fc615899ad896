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

Each mark also keeps when it was made (wall clock, the clock file times are stamped with) and
a generation that every later mark of its scope renews: the sweep that withdraws what the store
holds once it answers again (:mod:`.missed_sweep`) judges entries against that time and lifts
the mark only if no newer missed write renewed it meanwhile.

A store on disk outlives the process, so its record must too: with a log attached
(:mod:`.missed_writes_log`) every change is kept as a :class:`Change`, written before the write
that caused it is acknowledged, and loaded again by the next process. Until that load is done,
nothing the store holds is trusted (reads there are misses), so a restart never serves what an
earlier run missed, even before ``connect()``.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Coroutine, Iterable, Sequence
from typing import Any, NamedTuple, Protocol

import msgspec

from ..errors import ConfigError

__all__ = ["Change", "KeyMark", "MissedWrites", "Pending", "Stamp", "WriteScope", "digest"]


class MissedWritesLog(Protocol):
    """Where the marks are kept across restarts (``missed_writes_log.MissedWritesLog`` on disk):
    declared here so this module needs nothing of the log's."""

    loaded: bool

    async def load(self) -> list[Change]: ...

    async def save(self, missed: MissedWrites) -> None: ...

    def spawn(self, work: Coroutine[Any, Any, None]) -> None: ...

    async def aclose(self, missed: MissedWrites) -> None: ...


# (namespace, [(key, bytes written or None for a delete)]): the entries None means the whole
# namespace; namespace None means everything.
WriteScope = tuple[str | None, Sequence[tuple[str, bytes | None]] | None]


def digest(data: bytes) -> bytes:
    """A short fingerprint of entry bytes (entries carry their creation time, so two writes
    of the same value differ)."""
    return hashlib.blake2b(data, digest_size=16).digest()


DEFAULT_MAX_KEYS = 10_000


class Change(msgspec.Struct, tag="w", array_like=True, frozen=True):
    """One change to the record as it is logged: ``marked`` (else lifted) ``key`` of
    ``namespace`` (key None: the whole namespace; namespace None: everything), with the
    digest of the bytes a missed write carried (None: nothing there can be trusted)."""

    marked: bool
    namespace: str | None
    key: str | None = None
    digest: bytes | None = None


class Stamp(NamedTuple):
    """When a mark was last made (``at_ns``: wall clock, ns) and its ``generation``, which
    every mark of its scope renews (a mark covered by a whole-namespace one renews that)."""

    generation: int
    at_ns: int


class KeyMark(NamedTuple):
    """One marked key: the digest of the bytes its missed write carried (None: a delete)."""

    key: str
    digest: bytes | None
    stamp: Stamp


class Pending(NamedTuple):
    """What is marked, as the sweep goes through it: everything, whole namespaces, keys."""

    everything: Stamp | None
    namespaces: list[tuple[str, Stamp]]
    keys: list[tuple[str, list[KeyMark]]]


class MissedWrites:
    """The scopes one store may hold outdated entries for; see the module docstring."""

    __slots__ = (
        "_count",
        "_everything",
        "_generation",
        "_keys",
        "_loading",
        "_namespaces",
        "changes",
        "log",
        "max_keys",
        "recorded",
        "unsaved_marks",
    )

    def __init__(self, *, max_keys: int = DEFAULT_MAX_KEYS) -> None:
        if max_keys < 1:
            raise ConfigError(f"max_keys must be >= 1, got {max_keys!r}")
        self.max_keys = max_keys
        # namespace -> key -> (digest of the bytes the missed write carried (None: a delete),
        # stamp); whole namespaces and everything with their stamps
        self._keys: dict[str, dict[str, tuple[bytes | None, Stamp]]] = {}
        self._namespaces: dict[str, Stamp] = {}
        self._everything: Stamp | None = None
        self._count = 0
        self._generation = 0
        # With a log: the changes not yet written to it, how many were ever recorded, and
        # the load of what earlier runs left (None once done: until then nothing is trusted).
        self.log: MissedWritesLog | None = None
        self.changes: list[Change] | None = None
        self.recorded = 0
        self.unsaved_marks = False  # a mark not on disk yet: the writer waits for it
        self._loading: asyncio.Task[None] | None = None

    def attach(self, log: MissedWritesLog) -> None:
        """Keep this record in ``log`` from now on; nothing is trusted until :meth:`load`."""
        self.log = log
        self.changes = []

    @property
    def loaded(self) -> bool:
        return self.log is None or self.log.loaded

    async def load(self) -> None:
        """Adopt what earlier runs left in the log (once; concurrent callers share it)."""
        if self.loaded:
            return
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load())
        await asyncio.shield(self._loading)

    async def _load(self) -> None:
        assert self.log is not None
        assert self.changes is not None
        left = await self.log.load()
        ours = list(self.changes)  # this run's changes are newer than anything left
        self._keys.clear()
        self._namespaces.clear()
        self._everything = None
        self._count = 0
        self.changes = []
        # Stamped now: an earlier run's own writes may have landed after its marks were made.
        for change in [*left, *ours]:
            self.apply(change)
        self.changes = ours  # still to be written, behind what the log now holds
        self.recorded = len(ours)
        self.unsaved_marks = any(change.marked for change in ours)

    async def save(self) -> None:
        """Write the changes recorded so far to the log (bounded by its timeout)."""
        if self.log is not None:
            await self.load()
            await self.log.save(self)

    def save_soon(self) -> None:
        """:meth:`save` in the background (for marks made after their caller returned)."""
        if self.log is not None and self.changes:
            self.log.spawn(self.save())

    def _record(self, change: Change) -> None:
        if self.changes is not None:
            self.changes.append(change)
            self.recorded += 1
            self.unsaved_marks = self.unsaved_marks or change.marked

    def __bool__(self) -> bool:
        """Whether anything is marked: the read path asks nothing more while this is False."""
        return (
            self._everything is not None
            or bool(self._keys)
            or bool(self._namespaces)
            or not self.loaded
        )

    def _unloaded(self) -> bool:
        """True (and the load started) while earlier runs' marks are not known yet."""
        if self.loaded:
            return False
        if self._loading is None:
            self._loading = asyncio.get_running_loop().create_task(self._load())
        return True

    def __len__(self) -> int:
        """Marked keys (namespaces marked as a whole count once each)."""
        return self._count + len(self._namespaces) + int(self._everything is not None)

    def holds_back(self, namespace: str, key: str) -> bool:
        """True when nothing the store holds for ``key`` can be trusted: skip the read."""
        if self._unloaded() or self._everything is not None or namespace in self._namespaces:
            return True
        keys = self._keys.get(namespace)
        return keys is not None and key in keys and keys[key][0] is None

    def trusts(self, namespace: str, key: str, data: bytes) -> bool:
        """Whether ``data``, read from the store under ``key``, may be served: the key is not
        marked, or ``data`` is exactly what the missed write carried (it landed after all;
        the mark is lifted)."""
        if self._unloaded() or self._everything is not None or namespace in self._namespaces:
            return False
        keys = self._keys.get(namespace)
        if keys is None or key not in keys:
            return True
        expected = keys[key][0]
        if expected is None or expected != digest(data):
            return False
        self.lift((namespace, ((key, None),)))
        return True

    def mark(self, scope: WriteScope) -> None:
        """A write of ``scope`` is on its way, or did not arrive."""
        namespace, entries = scope
        if namespace is None or entries is None:
            self.apply(Change(True, namespace))
        else:
            for key, data in entries:
                self.apply(Change(True, namespace, key, None if data is None else digest(data)))

    def lift(self, scope: WriteScope) -> None:
        """A write of ``scope`` reached the store: what it holds there is current again."""
        namespace, entries = scope
        if namespace is None or entries is None:
            self.apply(Change(False, namespace))
        else:
            for key, _data in entries:
                self.apply(Change(False, namespace, key))

    def apply(self, change: Change) -> None:
        """Make ``change`` (recorded for the log when it changes anything, or while earlier
        runs' marks are not loaded: a lift then may be one of theirs). A mark is stamped now,
        also one that a whole-namespace mark covers (it renews that one's stamp instead)."""
        namespace, key = change.namespace, change.key
        if change.marked:
            self._generation += 1
            stamp = Stamp(self._generation, time.time_ns())
            if self._everything is not None:
                self._everything = stamp  # covered: renewed, nothing new to log
                return
            if namespace is None:
                self._everything = stamp
            elif namespace in self._namespaces:
                self._namespaces[namespace] = stamp  # covered: renewed, nothing new to log
                return
            elif key is None:
                self._namespaces[namespace] = stamp
                self._count -= len(self._keys.pop(namespace, ()))
            else:
                marked = self._keys.setdefault(namespace, {})
                self._count += key not in marked
                marked[key] = (change.digest, stamp)
            self._record(change)
            if self._count > self.max_keys:
                self._collapse()
            return
        if namespace is None:
            found = bool(self)
            self._keys.clear()
            self._namespaces.clear()
            self._everything = None
            self._count = 0
        elif key is None:
            found = namespace in self._namespaces or namespace in self._keys
            self._namespaces.pop(namespace, None)
            self._count -= len(self._keys.pop(namespace, ()))
        else:
            keys = self._keys.get(namespace)
            found = keys is not None and keys.pop(key, None) is not None
            if found:
                self._count -= 1
                if not keys:
                    del self._keys[namespace]
        if found or not self.loaded:
            self._record(change)

    def pending(self) -> Pending:
        """A copy of what is marked, with each mark's stamp, for the sweep."""
        return Pending(
            self._everything,
            list(self._namespaces.items()),
            [
                (namespace, [KeyMark(key, d, stamp) for key, (d, stamp) in keys.items()])
                for namespace, keys in self._keys.items()
            ],
        )

    def generation_of(self, namespace: str, key: str) -> int | None:
        """The generation of ``key``'s own mark (None when it has none)."""
        marked = self._keys.get(namespace, {}).get(key)
        return None if marked is None else marked[1].generation

    def lift_swept(self, namespace: str | None, key: str | None, generation: int) -> bool:
        """Lift the mark of ``key`` (None: of the whole ``namespace``; namespace None: of
        everything) that the sweep judged, unless a later mark renewed it meanwhile (its
        generation moved on): that newer missed write was not judged. True when lifted.
        Lifting everything lifts every other mark too: each is older than it (a mark made
        while everything is marked only renews that) and its sweep covered all they cover."""
        if namespace is None:
            current = self._everything
        elif key is None:
            current = self._namespaces.get(namespace)
        else:
            marked = self._keys.get(namespace, {}).get(key)
            current = None if marked is None else marked[1]
        if current is None or current.generation != generation:
            return False
        self.apply(Change(False, namespace, key))
        return True

    def snapshot(self) -> Iterable[Change]:
        """The changes that rebuild this record from nothing (what a compacted log holds)."""
        if self._everything is not None:
            yield Change(True, None)
            return
        for namespace in self._namespaces:
            yield Change(True, namespace)
        for namespace, keys in self._keys.items():
            for key, (data, _stamp) in keys.items():
                yield Change(True, namespace, key, data)

    def _collapse(self) -> None:
        """Mark the namespace with most marked keys as a whole, forgetting its keys."""
        largest = max(self._keys, key=lambda name: len(self._keys[name]))
        self.mark((largest, None))
