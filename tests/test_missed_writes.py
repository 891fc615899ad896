"""A store that missed a write or delete never serves what it holds for that key afterwards,
and a read-only ``cache_dir`` is still read.

The record itself (:class:`MissedWrites`) is tested on its own first; then the cache, with real
files made unwritable (chmod, or the immutable flag when running as root), and a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, BreakerSettings, CacheConfig
from toolweaver_async.resilience.breaker import BreakerState
from toolweaver_async.resilience.missed_writes import MissedWrites
from toolweaver_async.resilience.missed_writes_log import MissedWritesLog

from . import _processes

MakeCache = Callable[..., AsyncToolCache]
NS = "default"
BREAKER = BreakerSettings(failure_threshold=3, recovery_timeout=30.0, max_recovery_timeout=60.0)

# -- the record ------------------------------------------------------------------------------


def test_a_missed_delete_holds_the_key_back_until_a_write_of_it_lands() -> None:
    missed = MissedWrites()
    assert not missed
    missed.mark(("ns", [("a", None), ("b", None)]))
    assert missed.holds_back("ns", "a")
    assert missed.holds_back("ns", "b")
    assert not missed.trusts("ns", "a", b"anything")
    assert not missed.holds_back("ns", "c")
    assert missed.trusts("ns", "c", b"anything")
    assert not missed.holds_back("other", "a")
    missed.lift(("ns", [("a", b"new")]))
    assert not missed.holds_back("ns", "a")
    assert missed.holds_back("ns", "b")
    assert len(missed) == 1


def test_a_missed_set_trusts_only_the_bytes_it_carried() -> None:
    """A write that timed out may still land in its thread: then the store holds exactly its
    bytes, which are served (and the mark lifted); anything else there is older."""
    missed = MissedWrites()
    missed.mark(("ns", [("k", b"v2 bytes")]))
    assert not missed.holds_back("ns", "k")  # worth reading ...
    assert not missed.trusts("ns", "k", b"v1 bytes")  # ... but the older value is a miss
    assert missed.trusts("ns", "k", b"v2 bytes")  # the missed write landed after all
    assert not missed


def test_a_missed_invalidate_or_clear_holds_back_the_namespace_or_everything() -> None:
    missed = MissedWrites()
    missed.mark(("ns", None))
    assert missed.holds_back("ns", "anything")
    missed.lift(("ns", [("anything", b"x")]))  # one key written does not vouch for the rest
    assert missed.holds_back("ns", "other")
    missed.lift(("ns", None))
    assert not missed
    missed.mark((None, None))
    assert missed.holds_back("any", "key")
    missed.lift(("any", None))
    assert missed.holds_back("any", "key")
    missed.lift((None, None))
    assert not missed


def test_the_record_is_bounded_by_marking_the_largest_namespace_whole() -> None:
    missed = MissedWrites(max_keys=100)
    missed.mark(("small", [(f"s{n}", None) for n in range(10)]))
    for n in range(500):
        missed.mark(("big", [(f"b{n}", None)]))
    assert len(missed) <= 101
    assert missed.holds_back("big", "b0")
    assert missed.holds_back("big", "never-written-either")  # whole namespace: conservative
    assert missed.holds_back("small", "s3")
    assert not missed.holds_back("small", "s99")


# -- the cache -------------------------------------------------------------------------------


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, check=False)


@pytest.fixture
def read_only() -> Iterator[Callable[[Path], None]]:
    """Makes every folder under a path unwritable (chmod, or chattr +i as root); undone after."""
    undo: list[Callable[[], object]] = []

    def deny(top: Path) -> None:
        folders = [top] + [Path(d) / n for d, names, _ in os.walk(top) for n in names]
        for folder in folders:
            if os.geteuid() != 0:
                folder.chmod(0o500)
                undo.append(lambda f=folder: f.chmod(0o700))  # type: ignore[misc]
                continue
            made = _run("chattr", "+i", str(folder))
            if made.returncode != 0:
                pytest.skip(f"running as root and chattr +i is unavailable: {made.stderr}")
            undo.append(lambda f=folder: _run("chattr", "-i", str(f)))  # type: ignore[misc]

    yield deny
    for step in reversed(undo):
        step()


def _entry_folder(cache_dir: Path, key_prefix: str, key: str) -> Path:
    digest = hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
    return cache_dir / key_prefix / NS / digest[:2]


def _layer(cache: AsyncToolCache, name: str) -> Any:
    return next(g for g in cache._chain.layers if g.name == name)


@pytest.mark.allow_blocking(reason="takes write permission away from the cache folder")
async def test_a_delete_the_file_store_missed_never_brings_the_old_value_back(
    make_cache: MakeCache,
    cache_dir: Path,
    key_prefix: str,
    read_only: Callable[[Path], None],
) -> None:
    cache = make_cache(use_redis=True, breaker=BREAKER)
    await cache.connect()
    await cache.set("k", "v1")
    await cache.set("other", "kept")
    read_only(_entry_folder(cache_dir, key_prefix, "k"))
    assert await cache.delete("k") is True
    assert cache.stats().overall.errors["file"] == 1  # counted ...
    assert await cache.get("k") is None  # ... and the file's v1 is not served
    redis_only = make_cache(use_redis=True, stores=("redis",))
    assert await redis_only.get("k") is None  # nor promoted back into Redis
    await cache.set("k", "v2")  # refused by the file store again: still held back there
    assert await cache.get("k") == "v2"
    _layer(cache, "redis").breaker.trip()  # Redis away: reads fall through to the file store
    cache._chain.memory.discard_all()
    assert await cache.get("k") is None  # never v1
    assert await cache.get("other") == "kept"  # what the file store did not miss is served


async def test_keys_whose_writes_the_open_file_breaker_skipped_all_agree(
    make_cache: MakeCache,
) -> None:
    """A storm that opens the file breaker: every write skipped there is held back, so with
    Redis away afterwards none of the 40 keys reads an older value from the file store."""
    cache = make_cache(use_redis=True, stores=("redis", "file"), breaker=BREAKER)
    keys = [f"k{n}" for n in range(40)]
    await cache.set_many(dict.fromkeys(keys, "v1"))
    file = _layer(cache, "file")
    file.breaker.trip()
    for key in keys[:20]:
        await cache.set(key, "v2")
    await cache.set_many(dict.fromkeys(keys[20:], "v2"))
    file.breaker.reset()
    _layer(cache, "redis").breaker.trip()
    found = {key: await cache.get(key) for key in keys}
    assert set(found.values()) <= {"v2", None}
    assert "v1" not in found.values()
    await cache.set(keys[0], "v3")  # a write that reaches the file store lifts the hold
    assert await cache.get(keys[0]) == "v3"


@pytest.mark.allow_blocking(reason="takes write permission away from the cache folder")
async def test_a_read_only_cache_dir_is_read_and_its_breaker_stays_closed(
    make_cache: MakeCache,
    cache_dir: Path,
    key_prefix: str,
    read_only: Callable[[Path], None],
) -> None:
    writer = make_cache(stores=("file",))
    await writer.set_many({"a": 1, "b": 2})
    await writer.aclose()
    read_only(cache_dir)
    cache = make_cache(stores=("memory", "file"), breaker=BREAKER)
    await cache.connect()  # looks, never writes: the breaker stays closed
    file = _layer(cache, "file")
    assert file.breaker.state is BreakerState.CLOSED
    assert await cache.get("a") == 1
    for n in range(10):
        await cache.set(f"new{n}", n)  # refused by the file system: counted, no exception
    assert cache.stats().overall.errors["file"] == 10
    assert file.breaker.state is BreakerState.CLOSED  # refusals are not an outage
    assert await make_cache(stores=("file",)).get("b") == 2
    health = (await cache.health_check())["stores"]["file"]
    assert health["ok"] is True
    assert "Errno" in health["last_error"]


# -- across restarts ----------------------------------------------------------------------------


async def _miss_a_delete(cache: AsyncToolCache) -> None:
    await cache.set("k", "v1")
    await cache.set("other", "kept")
    _layer(cache, "file").breaker.trip()  # the file store misses the delete
    assert await cache.delete("k") is True
    assert await cache.get("k") is None


async def test_a_missed_delete_is_still_honoured_by_the_next_cache_on_the_folder(
    make_cache: MakeCache,
) -> None:
    first = make_cache(stores=("memory", "file"))
    await first.connect()
    await _miss_a_delete(first)
    await first.aclose()
    async with make_cache(stores=("memory", "file")) as second:
        assert await second.get("k") is None  # v1 is still on disk, never served
        assert await second.get("other") == "kept"
        await second.set("k", "v2")  # a write that lands lifts the mark
        assert await second.get("k") == "v2"
    async with make_cache(stores=("file",)) as third:
        assert await third.get("k") == "v2"


async def test_a_cache_that_was_never_connected_honours_marks_left_by_an_earlier_run(
    make_cache: MakeCache,
) -> None:
    first = make_cache(stores=("memory", "file"))
    await _miss_a_delete(first)
    await first.aclose()
    second = make_cache(stores=("memory", "file"))  # no connect(): the first read loads them
    assert await second.get("k") is None
    assert await second.get_many(["k", "other"]) == {"other": "kept"}


@pytest.mark.slow
@pytest.mark.allow_blocking(reason="starts, feeds and kills a process")
async def test_a_missed_delete_survives_the_process_being_killed(
    cache_dir: Path, key_prefix: str
) -> None:
    spawn = multiprocessing.get_context("spawn")
    results = spawn.Queue()
    worker = spawn.Process(
        target=_processes.miss_a_delete_then_hang, args=(cache_dir, key_prefix, results)
    )
    await asyncio.to_thread(worker.start)  # spawning a process blocks
    try:
        assert await asyncio.to_thread(results.get, True, 30) == "deleted"
        os.kill(worker.pid or 0, signal.SIGKILL)  # no aclose(): only what was on disk counts
        await asyncio.to_thread(worker.join, 10)
        config = CacheConfig(cache_dir=cache_dir, key_prefix=key_prefix, stores=("file",))
        async with AsyncToolCache(config) as cache:
            assert await cache.get("k") is None
            await cache.set("k", "v2")
            assert await cache.get("k") == "v2"
    finally:
        worker.kill()
        await asyncio.to_thread(worker.join, 10)


def _logged(folder: Path) -> MissedWrites:
    missed = MissedWrites()
    missed.attach(MissedWritesLog(folder, timeout=5.0))
    return missed


@pytest.mark.allow_blocking(reason="tears the log file behind the record's back")
async def test_marks_of_a_dead_process_are_adopted_and_a_torn_tail_is_ignored(
    tmp_path: Path,
) -> None:
    dead = _logged(tmp_path)
    await dead.load()
    dead.mark(("ns", [("gone", None), ("v2", b"v2 bytes")]))
    dead.mark(("other", None))
    await dead.save()
    assert dead.log is not None
    path = dead.log._file.path
    assert path is not None
    with path.open("ab") as log:
        log.write(b"\x07\x00\x00\x00torn")  # the process died mid-append
    dead.log._file.release()  # its flock goes with the process; no aclose()

    heir = _logged(tmp_path)
    assert heir.holds_back("ns", "gone")  # not loaded yet: nothing is trusted
    await heir.load()
    assert heir.holds_back("ns", "gone")
    assert not heir.trusts("ns", "v2", b"v1 bytes")
    assert heir.holds_back("other", "anything")
    assert not heir.holds_back("ns", "never-marked")
    heir.lift(("ns", [("gone", b"new")]))
    heir.lift(("other", None))
    assert heir.trusts("ns", "v2", b"v2 bytes")  # the missed write landed after all
    assert not heir
    assert heir.log is not None
    await heir.log.aclose(heir)
    logs = [name for name in os.listdir(tmp_path) if name.endswith(".jrnl")]
    assert [os.stat(tmp_path / name).st_size for name in logs] == [0]  # adopted file gone
    again = _logged(tmp_path)
    await again.load()
    assert not again


@pytest.mark.allow_blocking(reason="looks for the log folder behind the record's back")
async def test_a_folder_without_marks_is_not_written_to(tmp_path: Path) -> None:
    missed = _logged(tmp_path / "log")
    await missed.load()
    missed.lift(("ns", [("k", b"x")]))
    await missed.save()
    assert missed.log is not None
    await missed.log.aclose(missed)
    assert "log" not in os.listdir(tmp_path)
