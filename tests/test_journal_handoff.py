"""The journal's handoff rules (journal/handoff.py), with no I/O: newer writes that overtake
journaled ones, replay batches on the wire, batches that landed in part.

The property test plays the guard's routing against a dict standing in for Redis: writes made
while the store is away, writes that overtake the journal once it is back, replay batches that
land, fail or land in part, direct writes that land or fail in any order, and failed writes that
land late (before the store answers anything sent after them). Whatever the interleaving, Redis
ends with the newest write of every key, and never serves an older one meanwhile.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolweaver_async.resilience.journal import (
    JournalDelete,
    JournalInvalidate,
    JournalOp,
    JournalSet,
    OutageJournal,
)
from toolweaver_async.testing import FakeClock

Slot = tuple[str, str]


def journal() -> OutageJournal:
    return OutageJournal(max_entries=1000, clock=FakeClock())


def test_a_write_that_overtook_a_journaled_one_delivers_it_once_landed() -> None:
    j = journal()
    j.record_set("ns", "a", b"old", None)
    j.record_set("ns", "b", b"old", None)
    assert j.may_overtake("ns", "a")
    newer = j.begin_set("ns", "a", b"new", None)
    assert [op.key for op in j.next_batch() if isinstance(op, JournalSet)] == ["b"]  # held back
    assert j.covers("ns", "a")  # reads still skip the store until it lands
    j.settle(newer, failed=False)
    assert not j.covers("ns", "a")
    assert j.overtaken == 1


def test_a_write_that_overtook_and_failed_replaces_the_journaled_one() -> None:
    j = journal()
    j.record_set("ns", "a", b"old", None)
    newer = j.begin_set("ns", "a", b"new", None)
    j.settle(newer, failed=True, sent=True)
    [op] = j.next_batch()
    assert isinstance(op, JournalSet)
    assert op.data == b"new"
    assert not j.may_overtake("ns", "a")  # it may still land late: only the replay goes next


def test_nothing_overtakes_a_pending_invalidation_or_clear_or_a_key_on_the_wire() -> None:
    j = journal()
    j.record_set("a", "k", b"1", None)
    j.record_set("b", "k", b"1", None)
    j.record_invalidate("b")
    assert j.may_overtake("a", "k")
    assert not j.may_overtake("b", "k")
    batch = j.next_batch()
    j.sending(batch)
    assert j.on_wire("a", "k")
    assert not j.may_overtake("a", "k")
    j.delivered(batch, [], sent=True)  # failed: it may land late
    assert not j.on_wire("a", "k")
    assert not j.may_overtake("a", "k")
    batch = j.next_batch()
    j.sending(batch)
    j.delivered(batch, batch)
    j.record_set("a", "k", b"2", None)
    assert j.may_overtake("a", "k")  # its replay landed: nothing older can arrive any more
    j.record_clear()
    assert not j.may_overtake("a", "k")


def test_a_batch_that_landed_in_part_keeps_only_what_failed() -> None:
    j = journal()
    for key in "abc":
        j.record_set("ns", key, b"v", None)
    batch = j.next_batch()
    j.sending(batch)
    j.delivered(batch, [op for op in batch if isinstance(op, JournalSet) and op.key != "b"])
    assert [op.key for op in j.next_batch() if isinstance(op, JournalSet)] == ["b"]
    assert not j.covers("ns", "a")
    assert j.covers("ns", "b")


KEYS = [(ns, key) for ns in "xy" for key in ("k1", "k2", "k3")]
slots = st.sampled_from(KEYS)
actions = st.lists(
    st.one_of(
        st.tuples(st.just("away"), slots),  # a write while the store is away: journaled
        st.tuples(st.just("write"), slots),  # a write once it is back: the guard's routing
        st.tuples(st.just("delete"), slots),
        st.tuples(st.just("invalidate"), st.sampled_from("xy")),
        st.tuples(st.just("take")),  # the replayer puts the next batch on the wire
        # it lands: all, part or none of it; the rest refused by a node that is down (parked)
        st.tuples(st.just("land"), st.integers(0, 2), st.booleans()),
        st.tuples(st.just("unpark")),
        st.tuples(st.just("settle"), st.integers(0, 9), st.booleans()),  # a direct write ends
        st.tuples(st.just("late")),  # a failed write lands after all
    ),
    max_size=80,
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(actions=actions)
def test_overtaking_writes_never_leave_redis_older_than_the_newest_write(
    actions: list[tuple[Any, ...]],
) -> None:
    redis: dict[Slot, bytes] = dict.fromkeys(KEYS, b"old")
    truth: dict[Slot, bytes | None] = dict.fromkeys(KEYS, b"old")
    j = journal()
    on_wire: list[JournalOp] = []
    direct: list[JournalOp] = []  # direct writes sent, not yet answered
    late: list[JournalOp] = []  # failed writes that may still land
    # A write still on the wire when an invalidation of its namespace is made overlaps it:
    # it may land before or after it, so either outcome is right (until the key is written).
    either: dict[Slot, set[bytes]] = {}

    def right(slot: Slot) -> bool:
        return redis.get(slot) == truth[slot] or redis.get(slot) in either.get(slot, ())

    def apply(op: JournalOp) -> None:
        if isinstance(op, JournalSet):
            redis[(op.namespace, op.key)] = op.data
        elif isinstance(op, JournalDelete):
            redis.pop((op.namespace, op.key), None)
        else:
            assert isinstance(op, JournalInvalidate)
            for slot in [s for s in redis if s[0] == op.namespace]:
                del redis[slot]

    def answered() -> None:
        # A late write lands before the store answers anything sent after it (one server
        # takes commands in the order they reach it): the assumption the journal makes.
        while late:
            apply(late.pop(0))

    for n, action in enumerate(actions):
        kind = action[0]
        if kind in ("away", "write", "delete"):
            namespace, key = action[1]
            value = None if kind == "delete" else f"v{n}".encode()
            truth[(namespace, key)] = value
            either.pop((namespace, key), None)
            route_journal = kind == "away" or (
                j.covers(namespace, key)
                and (j.on_wire(namespace, key) or not j.may_overtake(namespace, key))
            )
            if route_journal:  # (the guard waits out a batch on the wire; journaling is safer)
                if value is None:
                    j.record_delete(namespace, key)
                else:
                    j.record_set(namespace, key, value, None)
            elif value is None:
                direct.append(j.begin_delete(namespace, key))
            else:
                direct.append(j.begin_set(namespace, key, value, None))
        elif kind == "invalidate":
            for op in direct:
                if isinstance(op, JournalSet) and op.namespace == action[1]:
                    either.setdefault((op.namespace, op.key), set()).add(op.data)
            j.record_invalidate(action[1])
            truth.update({slot: None for slot in KEYS if slot[0] == action[1]})
        elif kind == "take" and not on_wire:
            on_wire = j.next_batch(max_ops=3)
            j.sending(on_wire)
        elif kind == "land" and on_wire:
            share = action[1]
            landed = on_wire if share == 2 else on_wire[:1] if share == 1 else []
            if landed:
                answered()
            for op in landed:
                apply(op)
            late += [op for op in on_wire if op not in landed]
            refused = [op for op in on_wire if op not in landed] if action[2] else []
            j.delivered(on_wire, landed, sent=True, parked=refused)
            on_wire = []
        elif kind == "unpark":
            j.unpark()
        elif kind == "settle" and direct:
            op = direct.pop(action[1] % len(direct))
            if action[2]:
                answered()
                apply(op)
                j.settle(op, failed=False)
            else:
                late.append(op)
                j.settle(op, failed=True, sent=True)
        elif kind == "late" and late:
            apply(late.pop(0))
        for slot in KEYS:  # what Redis may serve is the newest write already
            sent = any(
                isinstance(op, JournalSet | JournalDelete) and (op.namespace, op.key) == slot
                for op in direct
            )
            if not j.covers(*slot) and not sent:
                assert right(slot), (slot, n)
    # Everything in flight ends, then the replay drains the journal.
    answered()
    for op in direct:
        apply(op)
        j.settle(op, failed=False)
    for op in on_wire:
        apply(op)
    j.delivered(on_wire, on_wire)
    while (batch := j.next_batch()) or (j.unpark() and (batch := j.next_batch())):
        j.sending(batch)
        for op in batch:
            apply(op)
        j.delivered(batch, batch)
    assert not j
    for slot in KEYS:
        assert right(slot), slot
