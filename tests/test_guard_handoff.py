"""Writes of journaled keys once the store is back: they overtake the replay instead of queueing
behind it, never reorder against it, and a replay batch the store took in part keeps only what
failed. A scripted fake store; test_replay_under_writes.py proves the same on a real server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from toolweaver_async import BreakerState, StoreError
from toolweaver_async.resilience.guard import FAILED, SKIPPED, GuardedStore
from toolweaver_async.resilience.journal import OutageJournal
from toolweaver_async.stores.base import StoreItem

from .polling import eventually
from .test_guard import FakeStore, drained, guarded


class PartialStore(FakeStore):
    """A fake store whose ``set_many`` fails for the keys in ``down`` (a dead cluster node)
    but writes the others, saying so in ``StoreError.written``; ``failing_sets`` fails ``set``."""

    def __init__(self) -> None:
        super().__init__()
        self.down: set[str] = set()
        self.failing_sets = False
        self.set_gate: asyncio.Event | None = None  # holds ``set`` calls

    async def set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        await self._enter("set", namespace, key, data)
        if self.set_gate is not None:
            await self.set_gate.wait()
        if self.failing_sets:
            raise StoreError("down", store=self.name)
        self.data[(namespace, key)] = data

    async def set_many(self, namespace: str, items: Sequence[StoreItem]) -> None:
        await self._enter("set_many", namespace, tuple(k for k, _, _ in items))
        for key, data, _ in items:
            if key not in self.down:
                self.data[(namespace, key)] = data
        if any(key in self.down for key, _, _ in items):
            error = StoreError("one node is down", store=self.name, refused=True)
            error.written = frozenset(key for key, _, _ in items if key not in self.down)
            raise error


@pytest.fixture
async def store() -> PartialStore:
    return PartialStore()


def journal_of(guard: GuardedStore) -> OutageJournal:
    assert guard.journal is not None
    return guard.journal


async def replay_held(store: FakeStore, guard: GuardedStore, keys: int) -> None:
    """``keys`` writes journaled while the store was away, the store back (breaker closed) and
    the replay's first batch (the first 64 keys) on the wire, held."""
    store.gate, store.gated = asyncio.Event(), {"set_many"}
    for n in range(keys):
        journal_of(guard).record_set("ns", f"k{n}", b"old", None)
    await eventually(lambda: any(call[0] == "set_many" for call in store.calls))
    assert guard.breaker.state is BreakerState.CLOSED


async def test_a_write_of_a_journaled_key_goes_straight_to_the_recovered_store(
    store: PartialStore,
) -> None:
    guard = guarded(store)
    await replay_held(store, guard, keys=100)
    journal = journal_of(guard)
    assert await guard.set("ns", "k90", b"new", None) is None  # not queued behind the replay
    assert store.data[("ns", "k90")] == b"new"
    assert not journal.covers("ns", "k90")  # its journaled value is forgotten, never replayed
    assert await guard.get("ns", "k90") == b"new"
    assert journal.overtaken == 1
    assert store.gate is not None
    store.gate.set()
    await drained(guard)
    assert store.data[("ns", "k90")] == b"new"
    assert all("k90" not in call[2] for call in store.calls if call[0] == "set_many")


async def test_a_write_of_a_key_whose_replay_is_on_the_wire_goes_out_after_it(
    store: PartialStore,
) -> None:
    guard = guarded(store)
    await replay_held(store, guard, keys=100)
    write = asyncio.ensure_future(guard.set("ns", "k1", b"new", None))  # k1 is on the wire
    await eventually(lambda: journal_of(guard).on_wire("ns", "k1"))
    assert not write.done()
    assert store.gate is not None
    store.gate.set()
    assert await write is None
    replayed = next(i for i, call in enumerate(store.calls) if call[0] == "set_many")
    sent = store.calls.index(("set", "ns", "k1", b"new"))
    assert sent > replayed  # the older replayed value cannot land after the newer one
    await drained(guard)
    assert store.data[("ns", "k1")] == b"new"


async def test_a_write_cancelled_while_waiting_for_its_keys_batch_is_still_delivered(
    store: PartialStore,
) -> None:
    guard = guarded(store)
    await replay_held(store, guard, keys=100)
    write = asyncio.ensure_future(guard.set("ns", "k1", b"new", None))  # k1 is on the wire
    await asyncio.sleep(0)  # one loop turn: the write is now waiting for the batch
    write.cancel()
    with pytest.raises(asyncio.CancelledError):
        await write
    assert store.gate is not None
    store.gate.set()
    await drained(guard)
    assert store.data[("ns", "k1")] == b"new"  # made all the same, never the older value


async def test_the_replay_skips_a_journaled_value_while_a_newer_write_of_it_is_on_the_wire(
    store: PartialStore,
) -> None:
    guard = guarded(store)
    await replay_held(store, guard, keys=100)
    store.set_gate = asyncio.Event()
    write = asyncio.ensure_future(guard.set("ns", "k90", b"new", None))
    await eventually(lambda: ("set", "ns", "k90", b"new") in store.calls)  # held on the wire
    assert store.gate is not None
    store.gate.set()
    journal = journal_of(guard)
    await eventually(lambda: len(journal) == 1)  # every other key replayed meanwhile
    assert journal.covers("ns", "k90")  # reads skip the store until the newer write lands
    assert await guard.get("ns", "k90") is SKIPPED
    assert all("k90" not in call[2] for call in store.calls if call[0] == "set_many")
    store.set_gate.set()
    assert await write is None
    await drained(guard)
    assert store.data[("ns", "k90")] == b"new"


async def test_a_failed_overtaking_write_replaces_the_journaled_value(
    store: PartialStore,
) -> None:
    guard = guarded(store, failure_threshold=100)
    await replay_held(store, guard, keys=100)
    store.failing_sets = True
    assert await guard.set("ns", "k90", b"new", None) is FAILED
    assert journal_of(guard).covers("ns", "k90")
    store.failing_sets = False
    assert store.gate is not None
    store.gate.set()
    await drained(guard)
    assert store.data[("ns", "k90")] == b"new"


async def test_a_pending_invalidation_keeps_writes_of_its_namespace_in_the_journal(
    store: PartialStore,
) -> None:
    guard = guarded(store)
    store.gate, store.gated = asyncio.Event(), {"invalidate"}
    journal = journal_of(guard)
    journal.record_invalidate("ns")
    journal.record_set("ns", "a", b"1", None)
    journal.record_set("other", "x", b"1", None)
    await eventually(lambda: any(call[0] == "invalidate" for call in store.calls))
    assert await guard.set("ns", "a", b"2", None) is SKIPPED  # never ahead of the invalidation
    assert await guard.set("ns", "b", b"2", None) is SKIPPED
    assert not any(call[0] == "set" for call in store.calls)
    assert await guard.set("other", "x", b"2", None) is None  # another namespace goes out
    store.gate.set()
    await drained(guard)
    assert store.data == {("ns", "a"): b"2", ("ns", "b"): b"2", ("other", "x"): b"2"}


async def test_a_replay_batch_the_store_took_in_part_keeps_only_what_failed(
    store: PartialStore,
) -> None:
    guard = guarded(store, failure_threshold=100)
    store.down = {"dead0", "dead1"}
    journal = journal_of(guard)
    for key in ("dead0", "live0", "dead1", "live1"):  # the dead node's writes at the head
        journal.record_set("ns", key, b"v", None)
    await eventually(lambda: not journal.covers("ns", "live1"), within=2)
    assert not journal.covers("ns", "live0")
    assert await guard.get("ns", "live0") == b"v"
    assert journal.covers("ns", "dead0")
    assert journal.covers("ns", "dead1")
    store.down.clear()
    await drained(guard)
    assert store.data[("ns", "dead0")] == b"v"


async def test_a_dead_nodes_writes_filling_whole_batches_never_hold_back_the_others(
    store: PartialStore,
) -> None:
    guard = guarded(store, failure_threshold=100)
    dead = [f"dead{n}" for n in range(80)]  # more than a replay batch holds (64)
    store.down = set(dead)
    journal = journal_of(guard)
    for key in [*dead, "live"]:
        journal.record_set("ns", key, b"v", None)
    await eventually(lambda: not journal.covers("ns", "live"), within=2)
    assert await guard.get("ns", "live") == b"v"
    assert all(journal.covers("ns", key) for key in dead)
    store.down.clear()
    await drained(guard)
    assert all(store.data[("ns", key)] == b"v" for key in dead)


async def test_a_set_many_the_store_took_in_part_journals_only_what_failed(
    store: PartialStore,
) -> None:
    guard = guarded(store, failure_threshold=100)
    store.down = {"dead"}
    outcome = await guard.set_many("ns", [("dead", b"v", None), ("live", b"v", None)])
    assert outcome is FAILED
    journal = journal_of(guard)
    assert journal.covers("ns", "dead")
    assert not journal.covers("ns", "live")
    assert await guard.get("ns", "live") == b"v"
