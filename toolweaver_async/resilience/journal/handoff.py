"""Handing the journal back to the store: replay batches, what landed, and newer writes that
go straight to the store instead of queueing behind the replay.

Once the store is back, a new write of a journaled key need not wait for the replay to reach
that key: it *overtakes* the journaled operation. It goes straight to the store while the
journaled one is held back (the replay skips it; reads of the key still skip the store), and
once it has landed the journaled one is forgotten; if it fails, it replaces the journaled one
as usual. Without this, agents that keep rewriting the same keys keep journaling them, and
the journal drains only as fast as keys happen to be left alone for one replay round trip.

A write may overtake only what cannot land after it: never a pending invalidation or clear of
its namespace (only the replay delivers those, in order), and never a key whose older value
may still be on its way to the store (its replay batch is on the wire, or it was sent by a
call that failed without saying whether it landed) until a replay of that key has landed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from .ledger import UNBOUNDED, JournalLedger
from .records import (
    JournalClear,
    JournalDelete,
    JournalInvalidate,
    JournalOp,
    JournalSet,
    Landed,
    Slot,
    size_of,
    slot_of,
)

__all__ = ["ReplayLedger"]


class ReplayLedger(JournalLedger):
    """A :class:`JournalLedger` that hands its operations to a replayer, batch by batch, and
    lets newer writes overtake them (module doc). No I/O."""

    def __init__(
        self,
        *,
        max_entries: int,
        clock: Callable[[], float],
        max_bytes: int = UNBOUNDED,
        name: str = "redis",
    ) -> None:
        super().__init__(max_entries=max_entries, clock=clock, max_bytes=max_bytes, name=name)
        # Keys whose older value may still reach the store: their replay batch is on the wire,
        # or a write of them was sent and failed without saying whether it landed.
        self._in_doubt: set[Slot] = set()
        self._on_wire: frozenset[Slot] = frozenset()
        # Keys the store refused in part of a batch (their cluster node is down): later batches
        # skip them until :meth:`unpark`, so they never hold back the other nodes' keys.
        self._parked: set[Slot] = set()
        # Called when a write that overtook a journaled operation has settled (the replayer
        # may have been waiting for it, with nothing else to send).
        self.on_overtaken: Callable[[], None] | None = None
        self.overtaken = 0  # journaled operations a newer write delivered instead

    # -- writes that overtake the journal ------------------------------------------------------

    def on_wire(self, namespace: str, key: str) -> bool:
        """Is a replay of ``key`` on its way to the store right now?"""
        return (namespace, key) in self._on_wire

    def may_overtake(self, namespace: str, key: str) -> bool:
        """May a new write of the journaled ``key`` go straight to the store (module doc)?"""
        if self._cleared or namespace in self._marked:
            return False
        return (namespace, key) not in self._in_doubt

    def settle(self, op: JournalOp, *, failed: bool, sent: bool = False) -> None:
        """As :meth:`JournalLedger.settle`; ``sent``: the write went out, so when it failed it
        may still land later. A write that landed as the newest of its key delivers whatever
        older operation of that key the journal held."""
        if not isinstance(op, JournalSet | JournalDelete):
            super().settle(op, failed=failed)
            return
        slot = (op.namespace, op.key)
        newest = self._open_writes[slot][0]
        super().settle(op, failed=failed)
        if failed:
            if sent:
                self._in_doubt.add(slot)
            return
        held = self._ops.get(slot)
        if newest is op and held is not None and held.seq < op.seq:
            self._forget(slot, held)
            self.overtaken += 1
            if self.on_overtaken is not None:
                self.on_overtaken()

    def _held_back(self, op: JournalOp) -> bool:
        """Is a newer write of ``op``'s key on its way to the store (the replay skips ``op``)?"""
        if not isinstance(op, JournalSet | JournalDelete):
            return False
        entry = self._open_writes.get((op.namespace, op.key))
        return entry is not None and entry[0].seq > op.seq

    # -- replay --------------------------------------------------------------------------------

    def next_batch(
        self, *, max_ops: int = 64, max_deletes: int = 16, max_bytes: int = 256 * 1024
    ) -> list[JournalOp]:
        """The oldest operations to replay next, in order: one invalidation or clear on its own,
        or a run of key operations (they touch distinct keys, so any order among them is fine).
        Operations a newer write is overtaking, and parked ones, are left out (key operations
        of distinct keys commute); empty when only those are left.

        Small batches: building a pipeline runs on the event loop (~5 us a command), so a
        replay of thousands of writes must not hold the loop for milliseconds at a time."""
        batch: list[JournalOp] = []
        size = deletes = 0
        for op in self._ops.values():
            if isinstance(op, JournalInvalidate | JournalClear):
                # Key operations held back before it are of other namespaces (an invalidation
                # drops its namespace's older ones; a clear, all): they commute with it.
                if not batch:
                    batch.append(op)
                break
            if self._open_writes and self._held_back(op):
                continue
            if self._parked and slot_of(op) in self._parked:
                continue
            if isinstance(op, JournalDelete) or (
                op.expires_at is not None and op.expires_at <= self._clock()
            ):
                deletes += 1
            size += size_of(op)
            batch.append(op)
            if len(batch) >= max_ops or deletes >= max_deletes or size >= max_bytes:
                break
        return batch

    def remaining_ttl(self, op: JournalSet) -> float | None:
        """Seconds ``op``'s value may still live; <= 0 means it expired while journaled, and
        must be replayed as a delete (the store may still hold an older, longer-lived value)."""
        return None if op.expires_at is None else op.expires_at - self._clock()

    def sending(self, batch: Sequence[JournalOp]) -> None:
        """``batch`` goes on the wire now: until :meth:`delivered`, its keys may not be
        overtaken (the replayed value could land after the newer one)."""
        self._on_wire = frozenset(slot_of(op) for op in batch)
        self._in_doubt.update(self._on_wire)

    def delivered(
        self,
        batch: Sequence[JournalOp],
        landed: Sequence[JournalOp],
        *,
        sent: bool = True,
        parked: Sequence[JournalOp] = (),
    ) -> None:
        """The replay of ``batch`` ended: ``landed`` (all of it, part of it on a store that
        answers per node, or none) reached the store; ``sent`` False: nothing went out;
        ``parked``: refused by the part of the store that is down (see ``_parked``)."""
        self._on_wire = frozenset()
        if not sent:
            self._in_doubt.difference_update(slot_of(op) for op in batch)
        for op in landed:
            slot = slot_of(op)
            self._in_doubt.discard(slot)
            self._parked.discard(slot)
            if self._ops.get(slot) is op:
                self._forget(slot, op)
                self.replayed += 1
        self._parked.update(slot_of(op) for op in parked if self._ops.get(slot_of(op)) is op)
        if not self._ops:
            self._in_doubt.clear()  # nothing is journaled: every write goes straight out
            self._parked.clear()

    def unpark(self) -> bool:
        """Let parked operations be replayed again; whether there were any."""
        if not self._parked:
            return False
        self._parked.clear()
        return True

    def landed(self, ops: list[JournalOp]) -> None:
        """``ops`` reached the store: forget each one unless a newer write replaced it meanwhile."""
        self.delivered(ops, ops)

    def _forget(self, slot: Slot, op: JournalOp) -> None:
        self._remove(slot)
        self._persist(Landed(op.seq))
        if not self._ops:
            self._in_doubt.clear()
            self._parked.clear()
