"""The journal's ledger: which operations a store still has to receive, with no I/O at all.

Latest wins: one operation per key (a newer write replaces an older one), an invalidation of a
namespace drops that namespace's earlier operations, a clear drops everything. Operations are
kept in the order they happened and handed back in that order for replay.

Bounded twice. Past ``max_bytes`` of journaled values, the oldest journaled sets become deletes
of their keys (a few dozen bytes each): the store forgets its older value instead of receiving
the newer one, which the file store still holds. Past ``max_entries`` operations, the namespace
with the most journaled keys gives way to one invalidation of it, and invalidations to one clear.

"Newer" means the order in which callers wrote, not the order in which failures were noticed:
each write takes its sequence number when the caller makes it (:meth:`JournalLedger.begin_set`
and friends) and is settled when its outcome is known. A write that fails after a newer write
of its key was made journals that newer write instead (the late one may still land in the
store after it), and an operation older than a journaled one of its key, or than an
invalidation or clear of its namespace, is dropped. When full, a
namespace's writes give way to one invalidation of it, and invalidations to one clear: a miss is
always safe, a stale hit is not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from ...errors import ConfigError
from .records import (
    CLEAR_SLOT,
    JournalClear,
    JournalDelete,
    JournalInvalidate,
    JournalOp,
    JournalSet,
    Landed,
    Origin,
    Record,
    Slot,
    size_of,
    slot_of,
)

__all__ = ["JournalLedger", "live_operations"]

logger = logging.getLogger("toolweaver_async.journal")

UNBOUNDED = 1 << 62
_NO_FLOOR = -UNBOUNDED  # operations loaded from disk have negative sequence numbers


def _storable(key: str) -> bool:
    """Keys with lone surrogates never reach Redis at all, so it can hold no old value of them."""
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


class JournalLedger:
    """Operations one store missed, latest per key, in order, bounded; in memory only.

    ``clock`` is the wall clock the cache stamps entries with. ``on_pending`` is called when the
    ledger goes from empty to non-empty, so the owner can start replaying. Subclasses that keep
    a log override :meth:`_persist`. Not thread-safe: one event loop owns it.
    """

    def __init__(
        self,
        *,
        max_entries: int,
        clock: Callable[[], float],
        max_bytes: int = UNBOUNDED,
        name: str = "redis",
    ) -> None:
        for what, bound in (("max_entries", max_entries), ("max_bytes", max_bytes)):
            if not isinstance(bound, int) or bound < 1:
                raise ConfigError(f"{what} must be a positive integer, got {bound!r}")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.name = name
        self.on_pending: Callable[[], None] | None = None
        self._clock = clock
        self._ops: dict[Slot, JournalOp] = {}  # insertion order is journal order
        self._keys_by_namespace: dict[str, set[str]] = {}
        self._marked: set[str] = set()  # namespaces with a pending invalidation
        self._cleared = False
        self._seq = 0
        self._live_bytes = 0
        # Writes made but not settled: per key, the newest one made and how many are open.
        self._open_writes: dict[Slot, list[Any]] = {}
        self._unsettled = 0
        # Sequence numbers of the newest invalidation per namespace and the newest clear made
        # while writes were open: an open write older than them is void when it fails.
        self._floors: dict[str, int] = {}
        self._clear_floor = _NO_FLOOR
        # counters for health_check
        self.recorded = 0
        self.replayed = 0
        self.overflows = 0  # times a full journal gave up writes for an invalidation or clear
        self.sets_dropped = 0  # journaled sets that became deletes to stay under max_bytes

    # -- questions, asked on the hot path ------------------------------------------------------

    def __len__(self) -> int:
        return len(self._ops)

    def __bool__(self) -> bool:
        return bool(self._ops)

    def covers(self, namespace: str, key: str) -> bool:
        """Does the store possibly hold an older value of ``key`` than the newest write?"""
        if not self._ops:
            return False
        return self._cleared or namespace in self._marked or (namespace, key) in self._ops

    def touches(self, namespace: str) -> bool:
        """Is any operation of ``namespace`` (or a clear) still to be replayed?"""
        if not self._ops:
            return False
        return self._cleared or namespace in self._marked or namespace in self._keys_by_namespace

    # -- recording -----------------------------------------------------------------------------

    def begin_set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> JournalSet:
        """A caller writes ``data`` under ``key`` now; :meth:`settle` it with the outcome."""
        # Every write through the guard comes here (~1 us): kept to the bare steps.
        self._seq = seq = self._seq + 1
        op = JournalSet(seq, namespace, key, data, None if ttl is None else self._clock() + ttl)
        self._open(op)
        return op

    def begin_delete(self, namespace: str, key: str) -> JournalDelete:
        op = JournalDelete(self._next_seq(), namespace, key)
        self._open(op)
        return op

    def begin_invalidate(self, namespace: str) -> JournalInvalidate:
        self._unsettled += 1
        return JournalInvalidate(self._next_seq(), namespace)

    def begin_clear(self) -> JournalClear:
        self._unsettled += 1
        return JournalClear(self._next_seq())

    def _open(self, op: JournalSet | JournalDelete) -> None:
        self._unsettled += 1
        entry = self._open_writes.get((op.namespace, op.key))
        if entry is None:
            self._open_writes[(op.namespace, op.key)] = [op, 1]
        else:
            entry[0] = op
            entry[1] += 1

    def settle(self, op: JournalOp, *, failed: bool) -> None:
        """``op`` (from a ``begin_*``) reached the store, or ``failed`` (or was cancelled: it
        may land later). Journals what the store must still receive."""
        self._unsettled -= 1
        kind = type(op)
        if kind is JournalSet or kind is JournalDelete:
            assert isinstance(op, JournalSet | JournalDelete)
            slot = (op.namespace, op.key)
            entry = self._open_writes[slot]
            newest: JournalOp = entry[0]
            entry[1] -= 1
            if not entry[1]:
                del self._open_writes[slot]
            # Overtaken: this write may land after the newer one, so the newer one is replayed.
            if failed or newest is not op:
                self._record(newest)
        else:
            if isinstance(op, JournalInvalidate):
                self._floors[op.namespace] = max(self._floors.get(op.namespace, _NO_FLOOR), op.seq)
            else:
                self._clear_floor = max(self._clear_floor, op.seq)
            if failed:
                self._record(op)
        if not self._unsettled and (self._floors or self._clear_floor != _NO_FLOOR):
            self._floors.clear()  # no open write can be older than them any more
            self._clear_floor = _NO_FLOOR

    def record_set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        """``data`` could not be written under ``key``; ``ttl`` as given to the store."""
        self.settle(self.begin_set(namespace, key, data, ttl), failed=True)

    def record_delete(self, namespace: str, key: str) -> None:
        self.settle(self.begin_delete(namespace, key), failed=True)

    def record_invalidate(self, namespace: str) -> None:
        self.settle(self.begin_invalidate(namespace), failed=True)

    def record_clear(self) -> None:
        self.settle(self.begin_clear(), failed=True)

    def _next_seq(self) -> int:
        self._seq += 1
        return self._seq

    def _record(self, op: JournalOp) -> None:
        if isinstance(op, JournalSet | JournalDelete) and not _storable(op.key):
            return
        was_empty = not self._ops
        if self._apply(op):
            self.recorded += 1
            self._persist(op)
        if was_empty and self._ops and self.on_pending is not None:
            self.on_pending()

    def _persist(self, record: Record) -> None:
        """Hand ``record`` to the log; the ledger alone keeps none."""

    def _apply(self, op: JournalOp) -> bool:
        """Put ``op`` into the journal with every supersession rule; False when it was not
        needed (a pending clear already covers it and there is no room)."""
        slot = slot_of(op)
        current = self._ops.get(slot)
        if current is not None and current.seq >= op.seq:
            return False  # a newer operation of the same slot is journaled already
        if not isinstance(op, JournalClear):
            floor = self._clear_floor
            if not isinstance(op, JournalInvalidate):
                floor = max(floor, self._floors.get(op.namespace, _NO_FLOOR))
            if op.seq < floor:
                return False  # an invalidation or clear made after it voids it
        later: list[JournalOp] = []  # made after ``op`` but journaled before it: they stay
        if isinstance(op, JournalClear):
            later = [o for o in self._ops.values() if o.seq > op.seq]
            self._reset()
        elif isinstance(op, JournalInvalidate):
            later = [o for o in self._namespace_ops(op.namespace) if o.seq > op.seq]
            self._drop_namespace(op.namespace)
        else:
            self._remove(slot)
        if len(self._ops) >= self.max_entries and not self._make_room():
            return False
        self._put(op)
        for kept in later:
            self._put(kept)
        if self._live_bytes > self.max_bytes:
            self._shed_bytes()
        return True

    def _shed_bytes(self) -> None:
        """Turn the oldest journaled sets into deletes of their keys until a quarter of
        ``max_bytes`` is free again (so a journal at its bound does not scan on every write).
        A delete never lets the store serve an older value; the newer one is in the file
        store, and reads copy it back."""
        goal = self.max_bytes - self.max_bytes // 4
        dropped = 0
        for slot, op in list(self._ops.items()):
            if self._live_bytes <= goal:
                break
            if isinstance(op, JournalSet):
                # Same slot and seq: it keeps its place in the replay order.
                delete = JournalDelete(op.seq, op.namespace, op.key)
                self._ops[slot] = delete
                self._live_bytes += size_of(delete) - size_of(op)
                dropped += 1
        if dropped:
            if not self.sets_dropped:
                logger.warning(
                    "outage journal for %s holds more than %d bytes: its oldest writes will be "
                    "replayed as deletes (their keys are read from the next store meanwhile)",
                    self.name,
                    self.max_bytes,
                )
            self.sets_dropped += dropped
            self._persist_shed()

    def _persist_shed(self) -> None:
        """The log must learn of sets turned into deletes; the ledger keeps no log."""

    def _namespace_ops(self, namespace: str) -> list[JournalOp]:
        return [self._ops[(namespace, key)] for key in self._keys_by_namespace.get(namespace, ())]

    def _put(self, op: JournalOp) -> None:
        self._ops[slot_of(op)] = op
        self._live_bytes += size_of(op)
        if isinstance(op, JournalSet | JournalDelete):
            self._keys_by_namespace.setdefault(op.namespace, set()).add(op.key)
        elif isinstance(op, JournalInvalidate):
            self._marked.add(op.namespace)
        else:
            self._cleared = True

    def _make_room(self) -> bool:
        """Free a slot without ever letting Redis serve a value older than a journaled write."""
        while len(self._ops) >= self.max_entries:
            if self._keys_by_namespace:
                namespace = max(
                    self._keys_by_namespace, key=lambda n: len(self._keys_by_namespace[n])
                )
                dropped = len(self._keys_by_namespace[namespace])
                self.overflows += 1
                logger.warning(
                    "outage journal for %s is full (%d entries): namespace %r (%d writes) will be "
                    "invalidated there on replay instead",
                    self.name,
                    self.max_entries,
                    namespace,
                    dropped,
                )
                self._drop_namespace(namespace)
                marker = JournalInvalidate(self._next_seq(), namespace)
                self._ops[(namespace, None)] = marker
                self._live_bytes += size_of(marker)
                self._marked.add(namespace)
                self._persist(marker)
            elif not self._cleared:
                logger.warning(
                    "outage journal for %s is full of namespace invalidations: it will clear "
                    "the whole key prefix there on replay instead",
                    self.name,
                )
                self.overflows += 1
                self._reset()
                marker_clear = JournalClear(self._next_seq())
                self._ops[CLEAR_SLOT] = marker_clear
                self._live_bytes += size_of(marker_clear)
                self._cleared = True
                self._persist(marker_clear)
            else:
                self.overflows += 1
                return False  # only the clear is left: it already covers anything newer
        return True

    def _remove(self, slot: Slot) -> JournalOp | None:
        op = self._ops.pop(slot, None)
        if op is None:
            return None
        self._live_bytes -= size_of(op)
        if isinstance(op, JournalSet | JournalDelete):
            keys = self._keys_by_namespace[op.namespace]
            keys.discard(op.key)
            if not keys:
                del self._keys_by_namespace[op.namespace]
        elif isinstance(op, JournalInvalidate):
            self._marked.discard(op.namespace)
        else:
            self._cleared = False
        return op

    def _drop_namespace(self, namespace: str) -> None:
        for key in list(self._keys_by_namespace.get(namespace, ())):
            self._remove((namespace, key))
        self._remove((namespace, None))

    def _reset(self) -> None:
        self._ops.clear()
        self._keys_by_namespace.clear()
        self._marked.clear()
        self._cleared = False
        self._live_bytes = 0


def live_operations(
    records: Iterable[Record], *, clock: Callable[[], float], name: str
) -> list[JournalOp]:
    """The operations of a log still to be replayed, in order, as its writer had them."""
    ledger = JournalLedger(max_entries=UNBOUNDED, clock=clock, name=name)
    slot_by_seq: dict[int, Slot] = {}
    for record in records:
        if isinstance(record, Origin):
            continue
        if isinstance(record, Landed):
            slot = slot_by_seq.pop(record.seq, None)
            op = None if slot is None else ledger._ops.get(slot)
            if slot is not None and op is not None and op.seq == record.seq:
                ledger._remove(slot)
        elif ledger._apply(record):
            slot_by_seq[record.seq] = slot_of(record)
    return list(ledger._ops.values())
