"""Per-namespace bookkeeping is bounded: an agent minting a namespace per task must not grow
the process for ever (200 000 namespaces cost +160 MB before). Past MAX_TRACKED_NAMESPACES,
stats of new namespaces are summed under OTHER_NAMESPACES and memos are rebuilt on demand."""

from __future__ import annotations

import gc
import tracemalloc
from pathlib import Path

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async.config import MAX_TRACKED_NAMESPACES, OTHER_NAMESPACES
from toolweaver_async.stores.file import FileStore, _Ledger


async def _use(cache: AsyncToolCache, namespaces: range) -> None:
    for n in namespaces:
        name = f"task-{n}"
        await cache.set("k", n, namespace=name)
        assert await cache.get("k", namespace=name) == n
        await cache.get_many(["k", "x"], namespace=name)
        await cache.delete("k", namespace=name)


async def test_bookkeeping_stays_bounded_however_many_namespaces_are_used() -> None:
    cache = AsyncToolCache(CacheConfig(stores=("memory",)))
    many = 3 * MAX_TRACKED_NAMESPACES
    await _use(cache, range(many))
    assert len(cache._known_namespaces) <= MAX_TRACKED_NAMESPACES
    assert len(cache._reader.namespaces) <= MAX_TRACKED_NAMESPACES
    stats = cache.stats()
    assert len(stats.namespaces) <= MAX_TRACKED_NAMESPACES + 1
    assert OTHER_NAMESPACES in stats.namespaces
    assert stats.overall.sets == many  # nothing lost: the rest is summed under ~other
    assert stats.overall.deletes == many
    assert stats.namespaces["task-0"].sets == 1  # the first ones keep their own counters
    await cache.aclose()


@pytest.mark.slow
async def test_memory_does_not_grow_with_the_number_of_namespaces() -> None:
    cache = AsyncToolCache(CacheConfig(stores=("memory",)))
    await _use(cache, range(2 * MAX_TRACKED_NAMESPACES))  # past every bound
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        await _use(cache, range(2 * MAX_TRACKED_NAMESPACES, 6 * MAX_TRACKED_NAMESPACES))
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # 4096 more namespaces: before the bound, ~800 bytes each (3.2 MB); now memos are cleared
    # and rebuilt, so what is left is at most one memo table's worth.
    assert grown < 400_000, grown
    await cache.aclose()


async def test_the_file_stores_per_namespace_memos_are_bounded(tmp_path: Path) -> None:
    store = FileStore(root=tmp_path, key_prefix="tw")
    for n in range(2 * MAX_TRACKED_NAMESPACES):
        store._folder(f"task-{n}")
    assert len(store._folders) <= MAX_TRACKED_NAMESPACES
    ledger = _Ledger()
    with ledger.lock:
        for n in range(2 * MAX_TRACKED_NAMESPACES):
            ledger.count_corrupt_read(f"task-{n}")
    assert len(ledger.corrupt_read) == MAX_TRACKED_NAMESPACES + 1
    assert sum(ledger.corrupt_read.values()) == 2 * MAX_TRACKED_NAMESPACES
