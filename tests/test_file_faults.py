"""File store faults on real folders: disk full, read-only, permission denied, corrupt entries, a
folder deleted underneath. Each one degrades to the other stores, is counted in stats(), shows in
health_check(), and never reaches a get/set caller.

Disk full and read-only use a small tmpfs mounted for the test (skipped where mounting is not
allowed); permission denied uses chmod, or ``chattr +i`` when running as root (root ignores
permission bits).
"""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, BreakerSettings, CacheConfig
from toolweaver_async.stores import file_writes

from .polling import eventually

MakeCache = Callable[..., Awaitable[AsyncToolCache]]

BREAKER = BreakerSettings(failure_threshold=3, recovery_timeout=0.05, max_recovery_timeout=0.1)


@pytest.fixture
async def make_cache(key_prefix: str, redis_url: str) -> AsyncIterator[MakeCache]:
    made: list[AsyncToolCache] = []

    async def make(cache_dir: Path, **changes: Any) -> AsyncToolCache:
        settings: dict[str, Any] = {
            "use_redis": True,
            "cache_dir": cache_dir,
            "key_prefix": key_prefix,
            "redis_url": redis_url,
            "breaker": BREAKER,
            # each fault is seen by the set that meets it (write-behind: by its batch)
            "file_write_behind": False,
            **changes,
        }
        cache = AsyncToolCache(CacheConfig(**settings))
        made.append(cache)
        await cache.connect()
        return cache

    yield make
    for cache in made:
        await cache.aclose()


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 512 KiB tmpfs: a real file system that really fills up and can be made read-only."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    mounted = _run("mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mount_point))
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield mount_point
    finally:
        _run("umount", "-l", str(mount_point))


def _fill(folder: Path) -> Path:
    """Write zeros until the file system is full; returns the filler file."""
    filler = folder / "filler"
    with open(filler, "wb", buffering=0) as file:
        while True:
            try:
                file.write(b"\0" * 16384)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                return filler


def file_health(health: dict[str, Any]) -> dict[str, Any]:
    file: dict[str, Any] = health["stores"]["file"]
    return file


@pytest.mark.allow_blocking(reason="breaks the cache folder behind the store's back")
async def test_disk_full_degrades_to_memory_and_redis_and_recovers(
    make_cache: MakeCache, small_disk: Path
) -> None:
    cache = await make_cache(small_disk)
    await cache.set("before", "fits")
    filler = await asyncio.to_thread(_fill, small_disk)
    value = {"blob": "x" * 50_000}
    for n in range(5):
        await cache.set(f"k{n}", value)  # no exception
        assert await cache.get(f"k{n}") == value
    redis_only = await make_cache(small_disk, stores=("redis",))
    assert await redis_only.get("k0") == value
    assert cache.stats().overall.errors["file"] >= 1
    health = file_health(await cache.health_check())
    assert health["ok"] is True  # it answers and serves reads; its writes are refused
    assert "No space left" in health["last_error"]
    assert health["failures"] >= 1
    assert health["errors"] >= 1
    assert health["state"] == "closed"  # refused writes do not open the breaker

    filler.unlink()  # space again: the file store comes back by itself
    deadline = asyncio.get_running_loop().time() + 5
    file_only = await make_cache(small_disk, stores=("file",))
    while await file_only.get("after") is None:
        assert asyncio.get_running_loop().time() < deadline, "file store did not recover"
        await cache.set("after", "stored")
        await asyncio.sleep(0.01)
    assert file_health(await cache.health_check())["ok"] is True


async def test_disk_full_keeps_the_outage_journal_in_memory(
    make_cache: MakeCache, small_disk: Path
) -> None:
    cache = await make_cache(small_disk)
    redis = next(g for g in cache._layers if g.name == "redis")
    redis.breaker.trip()
    await asyncio.to_thread(_fill, small_disk)
    await cache.set("k", "during both outages")  # no exception
    assert await cache.get("k") == "during both outages"
    journal = (await cache.health_check())["stores"]["redis"]["journal"]
    assert journal["entries"] == 1
    deadline = asyncio.get_running_loop().time() + 5
    while journal["last_error"] is None:  # the write to disk runs in the background
        assert asyncio.get_running_loop().time() < deadline, "journal disk error not reported"
        await asyncio.sleep(0.01)
        journal = (await cache.health_check())["stores"]["redis"]["journal"]
    assert "No space left" in journal["last_error"]


async def test_read_only_file_system_degrades_and_still_serves_what_it_has(
    make_cache: MakeCache, small_disk: Path
) -> None:
    writer = await make_cache(small_disk, stores=("memory", "file"))
    reader = await make_cache(small_disk, stores=("file",))
    await writer.set("old", "readable")
    remounted = await asyncio.to_thread(_run, "mount", "-o", "remount,ro", str(small_disk))
    assert remounted.returncode == 0, remounted.stderr
    try:
        await writer.set("new", "value")  # no exception
        assert await writer.get("new") == "value"
        assert writer.stats().overall.errors["file"] >= 1
        health = file_health(await writer.health_check())
        assert "Read-only file system" in health["last_error"]
        assert health["ok"] is True  # it answers, and serves reads
        assert await reader.get("old") == "readable"  # reads still work
    finally:
        await asyncio.to_thread(_run, "mount", "-o", "remount,rw", str(small_disk))


@pytest.fixture
def deny_writes() -> Iterator[Callable[[Path], None]]:
    """Makes a folder unwritable: chmod for ordinary users, the immutable flag for root."""
    undo: list[Callable[[], object]] = []

    def deny(folder: Path) -> None:
        if os.geteuid() != 0:
            folder.chmod(0o500)
            undo.append(lambda: folder.chmod(0o700))
            return
        made = _run("chattr", "+i", str(folder))
        if made.returncode != 0:
            pytest.skip(f"running as root and chattr +i is unavailable: {made.stderr.strip()}")
        undo.append(lambda: _run("chattr", "-i", str(folder)))

    yield deny
    for step in undo:
        step()


@pytest.mark.allow_blocking(reason="breaks the cache folder behind the store's back")
async def test_permission_denied_degrades_to_memory_and_redis(
    make_cache: MakeCache, cache_dir: Path, key_prefix: str, deny_writes: Callable[[Path], None]
) -> None:
    cache = await make_cache(cache_dir)
    folder = cache_dir / key_prefix
    folder.mkdir(parents=True, exist_ok=True)  # nothing written yet: made at the first write
    deny_writes(folder)  # say an operator changed the folder's owner
    await cache.set("k", {"v": 1})  # no exception
    assert await cache.get("k") == {"v": 1}
    redis_only = await make_cache(cache_dir, stores=("redis",))
    assert await redis_only.get("k") == {"v": 1}
    assert cache.stats().overall.errors["file"] >= 1
    health = file_health(await cache.health_check())
    assert health["ok"] is True  # it answers (reads work); its writes are refused
    assert "Errno 1" in health["last_error"] or "Errno 13" in health["last_error"]


@pytest.mark.allow_blocking(reason="breaks the cache folder behind the store's back")
async def test_corrupt_and_truncated_entries_fall_through_to_redis(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    writer = await make_cache(cache_dir)
    await writer.set_many({"torn": "from redis", "garbled": "from redis"})
    files = [
        Path(folder, name)
        for folder, _, names in os.walk(cache_dir)
        for name in names
        if "~" not in folder
    ]
    assert len(files) == 2
    for path in files:
        content = path.read_bytes()
        path.write_bytes(content[: len(content) // 2])  # torn by a crash, say
    reader = await make_cache(cache_dir, stores=("file", "redis"))  # the file store first
    assert await reader.get("torn") == "from redis"
    assert await reader.get("garbled") == "from redis"
    assert reader.stats().overall.corrupt == 2  # counted in stats() ...
    assert reader.stats().namespaces["default"].corrupt == 2
    health = file_health(await reader.health_check())
    assert health["corrupt_removed"] == 2  # ... and shown by health_check()
    assert health["ok"] is True  # broken entries are not a broken store


async def test_folder_deleted_underneath_is_a_miss_then_heals(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    cache = await make_cache(cache_dir, stores=("memory", "file"))
    await cache.set_many({f"k{n}": n for n in range(20)})

    async def delete_while_writing() -> None:
        await asyncio.to_thread(shutil.rmtree, cache_dir, True)

    writes = [cache.set(f"w{n}", n) for n in range(50)]
    await asyncio.gather(delete_while_writing(), *writes)  # nothing raises
    await asyncio.to_thread(shutil.rmtree, cache_dir)  # whatever the writes made again
    reader = await make_cache(cache_dir, stores=("file",))
    assert await reader.get("k0") is None  # gone with its folder: a miss
    assert reader.stats().overall.misses == 1
    assert await cache.get("k0") == 0  # memory still has it
    await cache.set("again", "written")  # the folders are made again
    assert await reader.get("again") == "written"
    assert file_health(await cache.health_check())["ok"] is True


@pytest.mark.allow_blocking(reason="breaks the cache folder behind the store's back")
async def test_a_hung_file_read_costs_at_most_file_timeout_and_falls_through_to_redis(
    make_cache: MakeCache, cache_dir: Path
) -> None:
    """A FIFO in place of an entry file blocks its reader's thread in open(), like a dead
    network mount. The caller is released after file_timeout and is served by Redis; while the
    step hangs, file calls fail at once instead of queueing behind it."""
    writer = await make_cache(cache_dir)
    await writer.set("hung", "from redis")
    (entry,) = [
        Path(folder, name)
        for folder, _, names in os.walk(cache_dir)
        for name in names
        if "~" not in folder
    ]
    entry.unlink()
    os.mkfifo(entry)
    reader = await make_cache(cache_dir, stores=("file", "redis"), file_timeout=0.1)
    try:
        async with asyncio.timeout(5):  # a hang fails here, not at pytest-timeout
            assert await reader.get("hung") == "from redis"
            await reader.set("meanwhile", "kept")  # the file write fails at once; no exception
        assert await writer.get("meanwhile") == "kept"  # Redis took it
        health = file_health(await reader.health_check())
        assert "deadline 0.1 s" in health["last_error"]
        assert health["failures"] >= 2
        assert reader.stats().overall.errors["file"] >= 2
    finally:
        await eventually(
            lambda: _release_fifo_reader(entry) or not entry.exists(),
            what="the released read to drop the FIFO as a broken entry",
        )
    file_only = await make_cache(cache_dir, stores=("file",), file_timeout=0.1)

    async def file_store_works_again() -> bool:
        await reader.set("after", "on disk")
        return await file_only.get("after") == "on disk"

    await eventually(file_store_works_again, what="the file store to serve again")


def _release_fifo_reader(fifo: Path) -> None:
    """Open the FIFO's write end and close it: the blocked reader sees an empty file."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:  # no reader waiting (ENXIO): nothing is blocked
        return
    os.close(fd)


async def test_a_backlog_on_a_slow_but_working_disk_does_not_open_the_file_breaker(
    make_cache: MakeCache, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every write takes 30 ms (a loaded machine, a slow disk) and none hangs: twenty agents'
    writes queue behind each other for longer than file_timeout. Each finished in time on the
    disk, so none is a failure: the breaker stays closed and every value is on disk. (Timing
    whole calls, queue wait included, counted the late ones and opened it; with Redis down
    that is the only durable copy, and its keys then read as misses.)"""
    write_entry = file_writes.write_entry

    def slow_write(*args: Any) -> Any:
        time.sleep(0.03)
        return write_entry(*args)

    monkeypatch.setattr(file_writes, "write_entry", slow_write)
    cache = await make_cache(cache_dir, stores=("file",), file_timeout=0.1)
    written = {f"agent{n}": n for n in range(20)}
    await asyncio.gather(*(cache.set(key, value) for key, value in written.items()))
    health = file_health(await cache.health_check())
    assert health["state"] == "closed", health
    assert health["failures"] == 0
    assert cache.stats().overall.errors["file"] == 0
    assert await cache.get_many(list(written)) == written
