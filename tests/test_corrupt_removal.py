"""Removing a corrupt entry is conditional on the bytes found: a write that lands between the
read that judged the entry and its removal survives, in every store that removes entries
(the file store's own removal, and the coordinator's removal in file, Redis and memory)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache
from toolweaver_async.stores import file as file_module
from toolweaver_async.stores.file import FileStore
from toolweaver_async.stores.memory import MemoryStore

from .polling import eventually

MakeCache = Callable[..., AsyncToolCache]
NS = "default"


def _digest(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=20).hexdigest()


@pytest.mark.allow_blocking(reason="rewrites the entry file behind the store's back")
async def test_the_file_stores_own_removal_spares_an_entry_written_after_the_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader judges a torn file broken; another process replaces it right after the
    removal's last check. The fresh entry must survive (a check-then-unlink deleted it)."""
    store = FileStore(root=tmp_path, key_prefix="tw")
    await store.set(NS, "k", b"old", None)
    path = tmp_path / "tw" / NS / _digest("k")[:2] / _digest("k")
    path.write_bytes(path.read_bytes()[:-2])  # torn
    real_stat = os.stat
    injected = False

    def stat_then_a_writer_lands(target: Any, *args: Any, **kwargs: Any) -> os.stat_result:
        nonlocal injected
        found = real_stat(target, *args, **kwargs)
        if not injected and str(target).endswith(_digest("k")):
            injected = True  # another process's write lands just after this check
            fresh = FileStore(root=tmp_path, key_prefix="tw")
            folder = os.path.join(tmp_path, "tw", NS)
            monkeypatch.setattr(os, "stat", real_stat)
            file_module._write_entries(fresh._ledger, folder, [("k", b"fresh", float("nan"))])
            monkeypatch.setattr(os, "stat", stat_then_a_writer_lands)
        return found

    monkeypatch.setattr(os, "stat", stat_then_a_writer_lands)
    assert await store.get(NS, "k") is None  # the torn entry: a miss
    monkeypatch.setattr(os, "stat", real_stat)
    assert injected
    assert await store.get(NS, "k") == b"fresh"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # nothing left aside


async def test_a_corrupt_file_entry_removed_by_the_cache_spares_a_set_landing_first(
    make_cache: MakeCache, cache_dir: Path, key_prefix: str
) -> None:
    raw = FileStore(root=cache_dir, key_prefix=key_prefix)
    await raw.set(NS, "k", b"store header fine, envelope garbage", None)
    cache = make_cache(stores=("memory", "file"))
    assert await cache.get("k") is None  # corrupt: counted, its removal scheduled
    assert cache.stats().overall.corrupt == 1
    await cache.set("k", "fresh")  # lands before the scheduled removal runs
    await eventually(lambda: not cache._background, what="the removal to run")
    reader = make_cache(stores=("file",))
    assert await reader.get("k") == "fresh"


async def test_a_corrupt_redis_entry_removed_by_the_cache_spares_a_set_landing_first(
    make_cache: MakeCache, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    cache = make_cache(use_redis=True, stores=("redis",))
    await cache.set("k", "ours")
    [redis_key] = [k async for k in raw_redis.scan_iter(match=f"{key_prefix}:default:*")]
    await raw_redis.set(redis_key, b"garbage")
    assert await cache.get("k") is None
    await cache.set("k", "fresh")
    await eventually(lambda: not cache._background, what="the removal to run")
    assert await make_cache(use_redis=True, stores=("redis",)).get("k") == "fresh"
    # and with nothing landing first, the corrupt entry is removed
    await raw_redis.set(redis_key, b"garbage")
    assert await cache.get("k") is None
    await eventually(lambda: not cache._background, what="the removal to run")
    assert not await raw_redis.exists(redis_key)


async def test_a_memory_layer_removes_a_corrupt_entry_only_while_it_holds_it() -> None:
    memory = MemoryStore()
    memory.put(NS, "k", b"garbage", None)
    assert await memory.delete_if(NS, "k", b"something else") is False
    assert memory.lookup(NS, "k") == b"garbage"
    memory.put(NS, "k", b"fresh", None)
    assert await memory.delete_if(NS, "k", b"garbage") is False
    assert memory.lookup(NS, "k") == b"fresh"
    assert await memory.delete_if(NS, "k", b"fresh") is True
    assert memory.lookup(NS, "k") is None


async def test_a_corrupt_entry_in_a_second_memory_layer_spares_a_set_landing_first() -> None:
    second = MemoryStore()
    cache = AsyncToolCache(stores=[MemoryStore(), second])
    second.put(NS, "k", b"garbage", None)
    try:
        assert await cache.get("k") is None
        await cache.set("k", "fresh")
        await eventually(lambda: not cache._background, what="the removal to run")
        assert second.lookup(NS, "k") is not None
    finally:
        await cache.aclose()
