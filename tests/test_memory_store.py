"""MemoryStore: LRU bounds by entries and bytes, expiry on an injected clock."""

from __future__ import annotations

from toolweaver_async import MemoryStore
from toolweaver_async.testing import FakeClock


async def test_entry_expires_on_the_injected_clock() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.set("ns", "k", b"v", 10)
    clock.now += 9.9
    assert await store.get("ns", "k") == b"v"
    clock.now += 0.2
    assert await store.get("ns", "k") is None
    assert len(store) == 0


async def test_least_recently_used_entry_is_evicted_first() -> None:
    store = MemoryStore(max_entries=2)
    await store.set("ns", "a", b"1", None)
    await store.set("ns", "b", b"2", None)
    assert await store.get("ns", "a") == b"1"  # a is now the most recent
    await store.set("ns", "c", b"3", None)
    assert await store.get("ns", "b") is None
    assert await store.get("ns", "a") == b"1"
    assert store.evictions == 1


async def test_byte_bound_holds_and_oversized_value_is_not_kept() -> None:
    store = MemoryStore(max_bytes=4096)
    for i in range(100):
        await store.set("ns", f"k{i}", b"x" * 500, None)
        assert store.size_bytes <= 4096
    assert await store.get("ns", "k99") == b"x" * 500
    await store.set("ns", "huge", b"x" * 10_000, None)
    assert await store.get("ns", "huge") is None


async def test_replacing_an_entry_keeps_byte_count_exact() -> None:
    store = MemoryStore()
    await store.set("ns", "k", b"x" * 100, None)
    before = store.size_bytes
    await store.set("ns", "k", b"x" * 100, None)
    assert store.size_bytes == before
    await store.delete("ns", "k")
    assert store.size_bytes == 0


async def test_add_never_overwrites_a_live_entry() -> None:
    store = MemoryStore()
    assert await store.add("ns", "k", b"new", None) is True
    assert await store.add("ns", "k", b"old", None) is False
    assert await store.get("ns", "k") == b"new"


async def test_invalidate_removes_only_that_namespace() -> None:
    store = MemoryStore()
    await store.set_many("a", [("k1", b"1", None), ("k2", b"2", None)])
    await store.set("b", "k1", b"3", None)
    await store.invalidate("a")
    assert await store.get_many("a", ["k1", "k2"]) == [None, None]
    assert await store.get("b", "k1") == b"3"
    await store.clear()
    assert len(store) == 0
