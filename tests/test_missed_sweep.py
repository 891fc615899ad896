"""What the file store missed while its breaker was open is withdrawn for every process once it
answers again.

A write or delete skipped by the open breaker never touched the disk, so the entry it replaced
stays there; this process holds it back (its missed-writes mark), but another process sharing
the folder has no such mark. When the breaker closes (and once at open, for marks an earlier
run left) a sweep withdraws each marked key's entry unless it is the missed write's own bytes
or newer than the mark, then lifts the mark. Real separate processes (spawned): the writer "A"
is driven by commands, the test process reads the folder as "B" with no marks of its own.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Queue
from typing import Any

import pytest

from toolweaver_async import AsyncToolCache, CacheConfig
from toolweaver_async.resilience.breaker import CircuitBreaker
from toolweaver_async.resilience.guard import GuardedStore
from toolweaver_async.resilience.missed_sweep import MissedSweep
from toolweaver_async.resilience.missed_writes import MissedWrites
from toolweaver_async.stores.file import FileStore
from toolweaver_async.stores.file_sweep import Swept

from ._folder_clients import read, serve_commands, write
from .polling import eventually

NS = "default"

# -- the writer "A": a separate process driven by commands ------------------------------------


def writer(
    cache_dir: Path, key_prefix: str, write_behind: bool, commands: Queue[Any], answers: Queue[Any]
) -> None:
    """A memory + file cache on ``cache_dir`` doing what ``commands`` say, one answer each."""
    asyncio.run(_serve(cache_dir, key_prefix, write_behind, commands, answers))


async def _serve(
    cache_dir: Path, key_prefix: str, write_behind: bool, commands: Queue[Any], answers: Queue[Any]
) -> None:
    config = CacheConfig(
        stores=("memory", "file"),
        cache_dir=cache_dir,
        key_prefix=key_prefix,
        file_write_behind=write_behind,
    )
    async with AsyncToolCache(config) as cache:
        sweep = cache._chain.sweeps["file"]
        file = cache.breakers()["file"]

        async def handle(command: str, args: list[Any]) -> Any:
            if command == "trip":
                file.trip()
            elif command == "reset":  # the store answers again: the sweep starts
                file.reset()
            elif command == "set":
                await cache.set(args[0], args[1])
            elif command == "set_many":
                await cache.set_many(args[0])
            elif command == "delete":
                await cache.delete(args[0])
            elif command == "invalidate":
                await cache.invalidate(NS)
            elif command == "get":  # (not waiting for a sweep; "swept" does)
                return await cache.get_many(args[0])
            # "swept" and every change: until the sweep running now (if any) has ended
            await _landed(cache)
            await sweep.idle()
            return (await cache.health_check())["stores"]["file"]

        await serve_commands(commands, answers, handle)


async def _landed(cache: AsyncToolCache) -> None:
    """Write-behind: until nothing is queued or being written."""
    store: Any = next(s for s in cache._chain.stores if s.name == "file")
    while getattr(store, "_queued", None) or getattr(store, "_landing", None):
        await asyncio.sleep(0.002)


class Writer:
    """The test's handle on process A."""

    def __init__(self, cache_dir: Path, key_prefix: str, write_behind: bool) -> None:
        spawn = multiprocessing.get_context("spawn")
        self.commands: Queue[Any] = spawn.Queue()
        self.answers: Queue[Any] = spawn.Queue()
        self.process = spawn.Process(
            target=writer,
            args=(cache_dir, key_prefix, write_behind, self.commands, self.answers),
        )
        self.process.start()

    def do(self, *command: Any) -> Any:
        self.commands.put(command)
        answer = self.answers.get(timeout=60)
        if isinstance(answer, tuple) and answer[:1] == ("error",):
            raise AssertionError(f"the writer failed: {answer[1]}")
        return answer

    def stop(self) -> None:
        if self.process.is_alive():
            self.commands.put(("stop",))
            self.process.join(30)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(10)


@pytest.fixture
def start_writer(cache_dir: Path, key_prefix: str) -> Iterator[Callable[[bool], Writer]]:
    writers: list[Writer] = []

    def start(write_behind: bool) -> Writer:
        writers.append(Writer(cache_dir, key_prefix, write_behind))
        return writers[-1]

    yield start
    for each in writers:
        each.stop()


WAYS = [pytest.param(False, id="write_through"), pytest.param(True, id="write_behind")]

# -- the promise -----------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("write_behind", WAYS)
def test_a_write_skipped_while_the_breaker_was_open_leaves_no_older_value_elsewhere(
    start_writer: Callable[[bool], Writer], cache_dir: Path, key_prefix: str, write_behind: bool
) -> None:
    a = start_writer(write_behind)
    a.do("set_many", {"k": "v1", "other": "kept"})
    assert read(cache_dir, key_prefix, ["k"]) == {"k": "v1"}
    a.do("trip")
    a.do("set", "k", "v2")  # skipped by the open breaker: the disk still holds v1
    assert a.do("get", ["k"]) == {"k": "v2"}
    assert read(cache_dir, key_prefix, ["k"]) == {"k": "v1"}  # the gap, until A sweeps
    health = a.do("reset")
    assert read(cache_dir, key_prefix, ["k", "other"]) == {"other": "kept"}  # never v1
    assert (health["missed_withdrawn"], health["missed_marked"]) == (1, 0)
    assert a.do("get", ["k"]) == {"k": "v2"}
    a.do("set", "k", "v3")
    assert read(cache_dir, key_prefix, ["k"]) == {"k": "v3"}


@pytest.mark.slow
@pytest.mark.parametrize("write_behind", WAYS)
def test_a_delete_skipped_while_open_is_withdrawn_and_a_newer_entry_elsewhere_is_kept(
    start_writer: Callable[[bool], Writer], cache_dir: Path, key_prefix: str, write_behind: bool
) -> None:
    """``gone`` was deleted while the breaker was open; ``k`` was written again by another
    process after A missed its write: that entry is newer than the mark and stays."""
    a = start_writer(write_behind)
    a.do("set_many", {"k": "v1", "gone": "v1"})
    a.do("trip")
    a.do("delete", "gone")
    a.do("set", "k", "v2")
    write(cache_dir, key_prefix, "k", "v3")  # another process, after the mark
    health = a.do("reset")
    assert read(cache_dir, key_prefix, ["k", "gone"]) == {"k": "v3"}
    assert (health["missed_withdrawn"], health["missed_kept"]) == (1, 1)
    assert health["missed_marked"] == 0


@pytest.mark.slow
def test_an_invalidate_skipped_while_open_withdraws_the_older_entries_of_its_namespace(
    start_writer: Callable[[bool], Writer], cache_dir: Path, key_prefix: str
) -> None:
    a = start_writer(False)
    a.do("set_many", {"a": "v1", "b": "v1"})
    a.do("trip")
    a.do("invalidate")  # the whole namespace marked
    write(cache_dir, key_prefix, "c", "new")  # another process, after the mark
    health = a.do("reset")
    assert read(cache_dir, key_prefix, ["a", "b", "c"]) == {"c": "new"}
    assert (health["missed_withdrawn"], health["missed_kept"]) == (2, 1)
    assert health["missed_marked"] == 0


@pytest.mark.slow
def test_marks_an_earlier_run_left_are_swept_when_the_next_run_opens(
    start_writer: Callable[[bool], Writer], cache_dir: Path, key_prefix: str
) -> None:
    """The first run misses a delete and ends; the next (A, alive) loads the mark and sweeps
    at open: B, which does not adopt a live process's record, no longer reads v1."""

    async def first_run() -> None:
        config = CacheConfig(
            stores=("memory", "file"),
            cache_dir=cache_dir,
            key_prefix=key_prefix,
            file_write_behind=False,
        )
        async with AsyncToolCache(config) as cache:
            await cache.set("k", "v1")
            await cache.set("other", "kept")
            cache.breakers()["file"].trip()
            await cache.delete("k")

    asyncio.run(first_run())
    a = start_writer(False)
    health = a.do("swept")
    assert read(cache_dir, key_prefix, ["k", "other"]) == {"other": "kept"}  # never v1
    assert (health["missed_withdrawn"], health["missed_marked"]) == (1, 0)
    assert a.do("get", ["k"]) == {}


# -- the sweep on its own: one store, real files -----------------------------------------------


def _layer(tmp_path: Path) -> tuple[FileStore, GuardedStore, MissedWrites, MissedSweep]:
    store = FileStore(root=tmp_path, key_prefix="p")
    layer = GuardedStore(store, CircuitBreaker(name="file"))
    missed = MissedWrites()
    return store, layer, missed, MissedSweep(missed, layer, store)


async def test_a_missed_write_that_landed_late_is_kept(tmp_path: Path) -> None:
    store, _guarded, missed, sweep = _layer(tmp_path)
    await store.set(NS, "k", b"v1", None)
    missed.mark((NS, [("k", b"v2")]))
    await store.set(NS, "k", b"v2", None)  # the missed write's own bytes, landed after all
    sweep.start()
    await sweep.idle()
    assert not missed
    assert await store.get(NS, "k") == b"v2"
    assert sweep.counts["kept"] == 1


async def test_a_mark_renewed_during_the_sweep_is_not_lifted(tmp_path: Path) -> None:
    store, _guarded, missed, sweep = _layer(tmp_path)
    await store.set(NS, "k", b"v1", None)
    missed.mark((NS, [("k", None)]))
    before = missed.pending().keys[0][1][0]
    judged = await store.sweep_missed(NS, [("k", None, before.stamp.at_ns)])
    assert judged == [Swept.WITHDRAWN]
    missed.mark((NS, [("k", b"v3")]))  # a newer missed write, while the sweep judged
    assert not missed.lift_swept(NS, "k", before.stamp.generation)
    assert not missed.trusts(NS, "k", b"v1")
    sweep.start()  # the next sweep judges the renewed mark: v1 is gone, so it is lifted
    await sweep.idle()
    assert not missed


async def test_a_key_whose_mark_was_lifted_by_a_write_is_left_alone(tmp_path: Path) -> None:
    """A write of the key that reached the store after the sweep took its list of marks lifts
    the mark: the sweep must not withdraw that entry (this process's own, newer)."""
    store, _guarded, missed, _sweep = _layer(tmp_path)
    await store.set(NS, "k", b"v1", None)
    missed.mark((NS, [("k", None)]))
    mark = missed.pending().keys[0][1][0]
    await store.set(NS, "k", b"v3", None)
    missed.lift((NS, [("k", b"v3")]))

    def current(key: str) -> bool:
        return missed.generation_of(NS, key) == mark.stamp.generation

    assert await store.sweep_missed(NS, [("k", None, mark.stamp.at_ns)], current) == [Swept.BUSY]
    assert await store.get(NS, "k") == b"v3"


async def test_an_open_breaker_ends_the_sweep_and_keeps_the_marks(tmp_path: Path) -> None:
    store, layer, missed, sweep = _layer(tmp_path)
    await store.set(NS, "k", b"v1", None)
    missed.mark((NS, [("k", None)]))
    layer.breaker.trip()
    sweep.start()
    await sweep.idle()
    assert sweep.counts["failed"] == 1
    assert missed.holds_back(NS, "k")
    assert await store.get(NS, "k") == b"v1"
    layer.breaker.reset()  # closes: the listener is the chain's; started here by hand
    sweep.start()
    await eventually(lambda: not missed, what="the mark lifted")
    assert await store.get(NS, "k") is None


@pytest.fixture
def frozen() -> Iterator[Callable[[Path], None]]:
    """Makes a file or folder unchangeable (chmod, or chattr +i as root); undone after."""
    undo: list[Callable[[], object]] = []

    def freeze(path: Path) -> None:
        if os.geteuid() != 0:
            mode = path.stat().st_mode & 0o777
            path.chmod(0o500 if path.is_dir() else 0o400)
            undo.append(lambda: path.chmod(mode))
            return
        made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, check=False)
        if made.returncode != 0:
            pytest.skip(f"running as root and chattr +i is unavailable: {made.stderr!r}")
        undo.append(lambda: subprocess.run(["chattr", "-i", str(path)], check=False))

    yield freeze
    for step in reversed(undo):
        step()


@pytest.mark.allow_blocking(reason="makes an entry and its folder unchangeable")
async def test_an_entry_that_can_be_neither_removed_nor_expired_keeps_its_mark(
    tmp_path: Path, frozen: Callable[[Path], None]
) -> None:
    store, _guarded, missed, sweep = _layer(tmp_path)
    await store.set(NS, "k", b"v1", None)
    missed.mark((NS, [("k", None)]))
    digest = hashlib.blake2b(b"k", digest_size=20).hexdigest()
    folder = tmp_path / "p" / NS / digest[:2]
    frozen(folder / digest)
    frozen(folder)
    sweep.start()
    await sweep.idle()
    assert sweep.counts["refused"] == 1
    assert missed.holds_back(NS, "k")  # still readable elsewhere: still held back here
