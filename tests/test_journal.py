"""OutageJournal: latest wins, order kept, bounded without ever exposing an older value, on disk."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolweaver_async.resilience.journal import (
    JournalClear,
    JournalDelete,
    JournalInvalidate,
    JournalOp,
    JournalSet,
    OutageJournal,
)
from toolweaver_async.testing import FakeClock


def journal(max_entries: int = 100, folder: Path | None = None, **kw: Any) -> OutageJournal:
    return OutageJournal(max_entries=max_entries, clock=kw.pop("clock", FakeClock()), folder=folder)


def ops(j: OutageJournal) -> list[tuple[Any, ...]]:
    """The journal's operations in replay order, as plain tuples."""
    shown: list[tuple[Any, ...]] = []
    while batch := j.next_batch(max_ops=1):
        op = batch[0]
        if isinstance(op, JournalSet):
            shown.append(("set", op.namespace, op.key, op.data))
        elif isinstance(op, JournalDelete):
            shown.append(("delete", op.namespace, op.key))
        elif isinstance(op, JournalInvalidate):
            shown.append(("invalidate", op.namespace))
        else:
            shown.append(("clear",))
        j.landed(batch)
    return shown


def test_latest_write_of_a_key_wins_and_moves_to_the_end() -> None:
    j = journal()
    j.record_set("ns", "a", b"1", None)
    j.record_set("ns", "b", b"2", None)
    j.record_set("ns", "a", b"3", None)
    j.record_delete("ns", "b")
    assert ops(j) == [("set", "ns", "a", b"3"), ("delete", "ns", "b")]


def test_invalidate_drops_earlier_writes_of_its_namespace_only_and_keeps_later_ones() -> None:
    j = journal()
    j.record_set("ns", "a", b"1", None)
    j.record_set("other", "a", b"2", None)
    j.record_invalidate("ns")
    j.record_set("ns", "b", b"3", None)
    assert j.covers("ns", "never-written")  # Redis holds pre-invalidation values of ns
    assert not j.covers("other", "never-written")
    assert ops(j) == [
        ("set", "other", "a", b"2"),
        ("invalidate", "ns"),
        ("set", "ns", "b", b"3"),
    ]


def test_clear_drops_everything_before_it_and_covers_every_key() -> None:
    j = journal()
    j.record_set("ns", "a", b"1", None)
    j.record_invalidate("x")
    j.record_clear()
    j.record_set("ns", "b", b"2", None)
    assert j.covers("anything", "at-all")
    assert ops(j) == [("clear",), ("set", "ns", "b", b"2")]
    assert not j.covers("anything", "at-all")


def test_empty_journal_covers_nothing_and_is_falsy() -> None:
    j = journal()
    assert not j
    assert not j.covers("ns", "k")
    assert not j.touches("ns")


def test_landed_keeps_a_write_that_replaced_the_replayed_one_in_flight() -> None:
    j = journal()
    j.record_set("ns", "k", b"old", None)
    in_flight = j.next_batch()
    j.record_set("ns", "k", b"new", None)  # written while the replay of "old" was on the wire
    j.landed(in_flight)
    assert j.covers("ns", "k")
    assert ops(j) == [("set", "ns", "k", b"new")]


def test_batches_stop_at_a_namespace_invalidation() -> None:
    j = journal()
    j.record_set("a", "1", b"x", None)
    j.record_set("a", "2", b"x", None)
    j.record_invalidate("b")
    j.record_set("a", "3", b"x", None)
    first = j.next_batch()
    assert [type(op) for op in first] == [JournalSet, JournalSet]
    j.landed(first)
    assert [type(op) for op in j.next_batch()] == [JournalInvalidate]


def test_expiry_is_absolute_and_remaining_ttl_runs_down_on_the_clock() -> None:
    clock = FakeClock()
    j = journal(clock=clock)
    j.record_set("ns", "k", b"x", 10.0)
    j.record_set("ns", "forever", b"x", None)
    short, forever = j.next_batch()
    assert isinstance(short, JournalSet)
    assert isinstance(forever, JournalSet)
    clock.now += 4
    assert j.remaining_ttl(short) == pytest.approx(6.0)
    assert j.remaining_ttl(forever) is None
    clock.now += 7
    assert j.remaining_ttl(short) == pytest.approx(-1.0)


def test_overflow_poisons_the_namespace_with_most_writes() -> None:
    j = journal(max_entries=4)
    for key in "abc":
        j.record_set("big", key, b"x", None)
    j.record_set("small", "a", b"x", None)
    j.record_set("small", "b", b"x", None)  # no room: "big" is replaced by one invalidation
    assert len(j) <= 4
    assert j.overflows == 1
    assert all(j.covers("big", key) for key in "abcz")
    assert ops(j) == [
        ("set", "small", "a", b"x"),
        ("invalidate", "big"),
        ("set", "small", "b", b"x"),
    ]


def test_overflow_of_invalidations_collapses_into_one_clear() -> None:
    j = journal(max_entries=2)
    j.record_invalidate("a")
    j.record_invalidate("b")
    j.record_invalidate("c")
    assert len(j) <= 2
    assert j.covers("zzz", "k")
    assert ops(j)[0] == ("clear",)


def test_keys_that_can_never_reach_redis_are_not_journaled() -> None:
    j = journal()
    j.record_set("ns", "bad\udc80", b"x", None)
    assert not j


# -- the promise, for any sequence ----------------------------------------------------------

namespaces = st.sampled_from(["a", "b", "c"])
keys = st.sampled_from(["k1", "k2", "k3", "k4", "k5"])
actions = st.lists(
    st.one_of(
        st.tuples(st.just("set"), namespaces, keys),
        st.tuples(st.just("delete"), namespaces, keys),
        st.tuples(st.just("invalidate"), namespaces),
        st.tuples(st.just("clear")),
        st.tuples(st.just("take")),  # the replayer takes the next batch onto the wire
        st.tuples(st.just("land")),  # ... and it lands
    ),
    max_size=60,
)


def apply_to_store(
    store: dict[tuple[str, str], bytes], op: JournalOp, journal_: OutageJournal
) -> None:
    if isinstance(op, JournalSet):
        store[(op.namespace, op.key)] = op.data
    elif isinstance(op, JournalDelete):
        store.pop((op.namespace, op.key), None)
    elif isinstance(op, JournalInvalidate):
        for slot in [s for s in store if s[0] == op.namespace]:
            del store[slot]
    else:
        store.clear()


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(actions=actions, max_entries=st.integers(min_value=1, max_value=8))
def test_replay_never_leaves_redis_with_a_value_older_than_the_newest_write(
    actions: list[tuple[str, ...]], max_entries: int
) -> None:
    """Redis starts with an "old" value under every key and misses every write; the journal is
    replayed onto it, batches landing while new writes arrive. Afterwards every key reads as
    the newest write, or a miss (only allowed once the journal overflowed) -- never older."""
    all_keys = [(ns, k) for ns in "abc" for k in ("k1", "k2", "k3", "k4", "k5")]
    redis = dict.fromkeys(all_keys, b"old")
    truth: dict[tuple[str, str], bytes | None] = dict.fromkeys(all_keys, b"old")
    j = journal(max_entries=max_entries)
    on_wire: list[JournalOp] = []
    for n, action in enumerate(actions):
        kind = action[0]
        if kind == "set":
            value = f"v{n}".encode()
            j.record_set(action[1], action[2], value, None)
            truth[(action[1], action[2])] = value
        elif kind == "delete":
            j.record_delete(action[1], action[2])
            truth[(action[1], action[2])] = None
        elif kind == "invalidate":
            j.record_invalidate(action[1])
            truth.update({slot: None for slot in all_keys if slot[0] == action[1]})
        elif kind == "clear":
            j.record_clear()
            truth = dict.fromkeys(all_keys, None)
        elif kind == "take" and not on_wire:
            on_wire = j.next_batch(max_ops=2)
        elif kind == "land" and on_wire:
            for op in on_wire:
                apply_to_store(redis, op, j)
            j.landed(on_wire)
            on_wire = []
        assert len(j) <= max_entries
        for slot in all_keys:  # a key Redis may serve must hold the newest value already
            if not j.covers(*slot):
                assert redis.get(slot) in (truth[slot], None)
    for op in on_wire:
        apply_to_store(redis, op, j)
    j.landed(on_wire)
    while batch := j.next_batch():
        for op in batch:
            apply_to_store(redis, op, j)
        j.landed(batch)
    for slot in all_keys:
        assert redis.get(slot) in (truth[slot], None), slot
        if j.overflows == 0:
            assert redis.get(slot) == truth[slot], slot


# -- on disk ---------------------------------------------------------------------------------


@pytest.mark.allow_blocking(reason="reads and damages the journal file behind its back")
async def test_journal_survives_a_restart_and_loaded_sets_replay_as_deletes(tmp_path: Path) -> None:
    first = journal(folder=tmp_path)
    await first.open()
    first.record_set("ns", "a", b"1", 60.0)
    first.record_set("ns", "landed", b"2", None)
    first.record_delete("ns", "b")
    first.record_invalidate("other")
    first.landed([op for op in first.next_batch() if getattr(op, "key", None) == "landed"])
    await first.aclose()
    assert first.path is not None
    assert first.path.stat().st_size > 0

    second = journal(folder=tmp_path)
    await second.open()
    try:
        assert second.path == first.path  # the slot is free again: adopted
        assert ops(second) == [
            ("delete", "ns", "a"),
            ("delete", "ns", "b"),
            ("invalidate", "other"),
        ]
    finally:
        await second.aclose()


@pytest.mark.allow_blocking(reason="reads and damages the journal file behind its back")
async def test_torn_tail_is_ignored_on_load(tmp_path: Path) -> None:
    first = journal(folder=tmp_path)
    await first.open()
    first.record_delete("ns", "a")
    first.record_delete("ns", "b")
    await first.aclose()
    assert first.path is not None
    content = first.path.read_bytes()
    first.path.write_bytes(content[:-3])  # the process died in the middle of a write
    second = journal(folder=tmp_path)
    await second.open()
    try:
        assert ops(second) == [("delete", "ns", "a")]
    finally:
        await second.aclose()


async def test_two_live_journals_in_one_folder_claim_different_files(tmp_path: Path) -> None:
    one, two = journal(folder=tmp_path), journal(folder=tmp_path)
    await one.open()
    await two.open()
    try:
        assert one.path is not None
        assert one.path != two.path
    finally:
        await one.aclose()
        await two.aclose()


@pytest.mark.allow_blocking(reason="reads and damages the journal file behind its back")
async def test_drained_journal_empties_its_file(tmp_path: Path) -> None:
    j = journal(folder=tmp_path)
    await j.open()
    j.record_set("ns", "a", b"x" * 1000, None)
    ops(j)  # replays and lands everything
    await j.aclose()
    assert j.path is not None
    assert j.path.stat().st_size == 0


@pytest.mark.allow_blocking(reason="reads and damages the journal file behind its back")
async def test_unwritable_folder_keeps_the_journal_in_memory(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    j = journal(folder=blocker / "journal")
    await j.open()
    j.record_set("ns", "a", b"x", None)
    assert j.covers("ns", "a")
    assert j.path is None
    assert j.describe()["last_error"] is not None
    await j.aclose()


async def test_operations_recorded_before_open_come_after_the_loaded_ones(tmp_path: Path) -> None:
    first = journal(folder=tmp_path)
    await first.open()
    first.record_set("ns", "a", b"1", None)
    await first.aclose()
    second = journal(folder=tmp_path)
    second.record_set("ns", "a", b"2", None)  # written before connect()
    await second.open()
    try:
        assert ops(second) == [("set", "ns", "a", b"2")]
    finally:
        await second.aclose()


def test_clear_op_is_a_clear() -> None:
    j = journal()
    j.record_clear()
    assert isinstance(j.next_batch()[0], JournalClear)


@pytest.mark.allow_blocking(reason="reads and damages the journal file behind its back")
async def test_journal_of_a_dead_process_is_adopted_and_its_file_removed(tmp_path: Path) -> None:
    one, two = journal(folder=tmp_path), journal(folder=tmp_path)
    await one.open()
    await two.open()
    one.record_delete("ns", "from-one")
    two.record_set("ns", "from-two", b"v", None)
    two.record_invalidate("other")
    await one.aclose()
    await two.aclose()  # both processes are gone; only one comes back
    assert two.path is not None
    assert two.path.stat().st_size > 0

    back = journal(folder=tmp_path)
    await back.open()
    try:
        assert back.path == one.path
        assert set(ops(back)) == {
            ("delete", "ns", "from-one"),
            ("delete", "ns", "from-two"),
            ("invalidate", "other"),
        }
        await back.aclose()
        assert not two.path.exists()  # adopted, in back's log now, then replayed
    finally:
        await back.aclose()


# -- callers' order, whatever order failures are noticed in ------------------------------------


def test_a_write_failing_after_a_newer_one_failed_journals_the_newer_one() -> None:
    j = journal()
    older = j.begin_set("ns", "k", b"old", None)
    newer = j.begin_set("ns", "k", b"new", None)
    j.settle(newer, failed=True)
    j.settle(older, failed=True)
    assert ops(j) == [("set", "ns", "k", b"new")]


def test_a_write_failing_after_a_newer_one_landed_replays_the_newer_one() -> None:
    # The older write may still land after the newer one: the newer one is delivered again.
    j = journal()
    older = j.begin_set("ns", "k", b"old", None)
    newer = j.begin_delete("ns", "k")
    j.settle(newer, failed=False)
    j.settle(older, failed=True)
    assert ops(j) == [("delete", "ns", "k")]


def test_a_write_failing_after_an_invalidation_of_its_namespace_is_void() -> None:
    j = journal()
    older = j.begin_set("ns", "k", b"old", None)
    invalidation = j.begin_invalidate("ns")
    later = j.begin_set("ns", "after", b"new", None)
    j.settle(later, failed=True)
    j.settle(invalidation, failed=True)  # noticed late: the later write stays behind it
    j.settle(older, failed=True)
    assert ops(j) == [("invalidate", "ns"), ("set", "ns", "after", b"new")]


def test_a_write_failing_after_a_clear_that_landed_is_void() -> None:
    j = journal()
    older = j.begin_set("ns", "k", b"old", None)
    clear = j.begin_clear()
    j.settle(clear, failed=False)
    j.settle(older, failed=True)
    assert ops(j) == []


@given(
    st.lists(
        st.tuples(st.sampled_from(["set", "delete", "invalidate"]), st.sampled_from("ab")),
        min_size=1,
        max_size=8,
    ),
    st.randoms(use_true_random=False),
)
def test_replay_after_any_failure_order_leaves_the_newest_value_of_each_key(
    made: list[tuple[str, str]], rnd: Any
) -> None:
    """Writes made in order, all failing, noticed in any order: the journal replayed onto a
    store holds what the last caller wrote (or nothing older)."""
    j = journal()
    begun = []
    truth: dict[str, bytes | None] = {}
    for n, (kind, key) in enumerate(made):
        if kind == "set":
            begun.append(j.begin_set("ns", key, b"%d" % n, None))
            truth[key] = b"%d" % n
        elif kind == "delete":
            begun.append(j.begin_delete("ns", key))
            truth[key] = None
        else:
            begun.append(j.begin_invalidate("ns"))
            truth = dict.fromkeys(truth)
    rnd.shuffle(begun)
    for op in begun:
        j.settle(op, failed=True)
    store: dict[str, bytes | None] = {}
    for shown in ops(j):
        if shown[0] == "set":
            store[shown[2]] = shown[3]
        elif shown[0] == "delete":
            store[shown[2]] = None
        else:
            store = dict.fromkeys(store)
    for key, value in truth.items():
        assert store.get(key) == value, (key, made)


# -- bounded by bytes --------------------------------------------------------------------------


def test_journal_over_its_byte_bound_replays_its_oldest_sets_as_deletes_in_place() -> None:
    j = OutageJournal(max_entries=1000, max_bytes=10_000, clock=FakeClock())
    for n in range(20):
        j.record_set("ns", f"k{n:02}", bytes(1000), None)
    assert j.describe()["bytes"] <= 10_000
    assert j.sets_dropped > 0
    shown = ops(j)
    assert [op[2] for op in shown] == [f"k{n:02}" for n in range(20)]  # order kept
    kinds = [op[0] for op in shown]
    assert kinds == sorted(kinds)  # deletes (oldest) first, then the newest sets
    assert shown[-1] == ("set", "ns", "k19", bytes(1000))


async def test_journal_on_disk_stays_under_about_twice_its_byte_bound(tmp_path: Path) -> None:
    j = OutageJournal(max_entries=100_000, max_bytes=512 * 1024, clock=FakeClock(), folder=tmp_path)
    await j.open()
    for n in range(300):  # 4.2 MB of values
        j.record_set("ns", f"k{n}", bytes(14_000), None)
        if n % 50 == 0:
            await asyncio.sleep(0.02)  # let the log be written as it grows
    await j.aclose()
    assert j.path is not None
    assert (await asyncio.to_thread(j.path.stat)).st_size <= 2 * 512 * 1024
    assert len(j) == 300  # every key is still covered
