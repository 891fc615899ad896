"""Per-namespace bookkeeping is bounded: an agent minting a namespace per task must not grow
the process for ever (200 000 namespaces cost +160 MB before). Past MAX_TRACKED_NAMESPACES,
stats of new namespaces are summed under OTHER_NAMESPACES and memos are rebuilt on demand."""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async.config import MAX_TRACKED_NAMESPACES, OTHER_NAMESPACES
from toolweaver_async.stores.file import FileStore, _Ledger
from toolweaver_async.stores.redis.cluster import ClusterEngine
from toolweaver_async.stores.redis.store import RedisStore


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


async def test_redis_namespace_memos_stay_bounded_over_200_000_namespaces(
    redis_store: RedisStore,
) -> None:
    for n in range(200_000):
        redis_store._namespace(f"task-{n}")
    assert len(redis_store._namespaces) <= MAX_TRACKED_NAMESPACES
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(20_000):
            redis_store._namespace(f"many-{n}")
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    # Unbounded, each memo costs ~700 bytes: 20 000 more were +14 MB (200 000: +140 MB).
    assert grown < 1_500_000, grown  # about one memo table churned
    engine = ClusterEngine(
        object(),  # type: ignore[arg-type]  # the memo never touches the client
        prefix="tw",
        secrets=(),
        url="redis://127.0.0.1:1",
        command_timeout=0.1,
        connections=1,
    )
    for n in range(3 * MAX_TRACKED_NAMESPACES):
        engine._namespace(f"task-{n}")
    assert len(engine._namespaces) <= MAX_TRACKED_NAMESPACES


async def test_a_redis_namespace_forgotten_by_the_memo_still_reads_its_live_generation(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    cache = make_cache(use_redis=True, stores=("redis",))
    await cache.set("k", "before", namespace="first")
    await cache.invalidate("first")  # generation 1 now
    await cache.set("k", "current", namespace="first")
    for n in range(MAX_TRACKED_NAMESPACES + 5):  # pushes "first" out of the memo
        await cache.get("k", namespace=f"task-{n}")
    assert await cache.get("k", namespace="first") == "current"
    await cache.invalidate("first")
    assert await cache.get("k", namespace="first") is None
