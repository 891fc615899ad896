"""The file store's read lane: a read is not held behind writes of other entries, and never
overtakes a write or delete of its own entry asked before it.

A slow disk is a gate on the temp-file write of chosen keys (the worker thread waits in it until
the test opens the gate), so "a write is in flight" is a state the tests hold, not a race.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from toolweaver_async.stores import file_writes as file_module
from toolweaver_async.stores.file import FileStore
from toolweaver_async.stores.file_behind import WriteBehindFileStore

from .polling import eventually

NS = "ns"


class SlowDisk:
    """Holds every temp-file write whose data is in ``slow`` until the test opens the gate."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, slow: set[bytes]) -> None:
        self.entered = threading.Event()
        self.opened = threading.Event()
        real = file_module.write_new_file

        def write(name: str, parts: Sequence[bytes], folder: int) -> None:
            if parts[-1] in slow:
                self.entered.set()
                if not self.opened.wait(timeout=10):
                    raise AssertionError("the slow write was never let go")
            real(name, parts, folder)

        monkeypatch.setattr(file_module, "write_new_file", write)

    async def holding_a_write(self) -> None:
        await eventually(self.entered.is_set, what="the slow write to start")


@pytest.fixture
def slow_disk(monkeypatch: pytest.MonkeyPatch) -> Iterator[SlowDisk]:
    disk = SlowDisk(monkeypatch, {b"slow", b"v1"})
    yield disk
    disk.opened.set()  # never leave a worker thread waiting


async def test_a_get_is_answered_while_a_write_of_another_entry_is_stuck_on_the_disk(
    tmp_path: Path, slow_disk: SlowDisk
) -> None:
    store = FileStore(root=tmp_path, key_prefix="p", step_timeout=30.0)
    await store.set(NS, "other", b"answer", None)
    writing = asyncio.ensure_future(store.set(NS, "held", b"slow", None))
    await slow_disk.holding_a_write()
    async with asyncio.timeout(5):
        assert await store.get(NS, "other") == b"answer"
        assert await store.get_many(NS, ["other", "missing"]) == [b"answer", None]
    assert not writing.done()  # still on the disk: the read did not wait for it
    slow_disk.opened.set()
    await writing
    assert await store.get(NS, "held") == b"slow"
    await store.aclose()


async def test_a_get_is_answered_while_a_write_behind_batch_is_on_the_disk(
    tmp_path: Path, slow_disk: SlowDisk
) -> None:
    store = WriteBehindFileStore(root=tmp_path, key_prefix="p", step_timeout=30.0)
    await store.set(NS, "other", b"answer", None)
    await store.aclose()  # on disk
    await store.set(NS, "held", b"slow", None)
    await store.set(NS, "queued behind it", b"fast", None)
    await slow_disk.holding_a_write()
    async with asyncio.timeout(5):
        assert await store.get(NS, "other") == b"answer"
    slow_disk.opened.set()
    await store.aclose()
    assert await store.get(NS, "held") == b"slow"


@pytest.mark.parametrize("many", [False, True], ids=["get", "get_many"])
async def test_a_read_after_a_delete_never_overtakes_it_to_find_an_older_value(
    tmp_path: Path, slow_disk: SlowDisk, many: bool
) -> None:
    """set(v1) returns (queued), its batch is on the disk, delete() is asked: a read asked now
    may see v1 or nothing, never v0 (on disk until the batch lands). The delete takes v1 off
    the read-from-the-queue path at once, so the read must queue behind the batch and the
    delete, as in one lane, instead of reading v0 beside them."""
    store = WriteBehindFileStore(root=tmp_path, key_prefix="p", step_timeout=30.0)
    await store.set(NS, "k", b"v0", None)
    await store.aclose()  # v0 on disk
    await store.set(NS, "k", b"v1", None)
    await slow_disk.holding_a_write()  # v1's batch is in flight
    deleting = asyncio.ensure_future(store.delete(NS, "k"))
    await asyncio.sleep(0)  # the delete is asked (and v1 no longer readable from the queue)
    if many:
        reading = asyncio.ensure_future(store.get_many(NS, ["k", "other"]))
    else:
        reading = asyncio.ensure_future(store.get(NS, "k"))
    done, _ = await asyncio.wait([reading], timeout=0.2)
    assert not done, f"the read overtook the write and the delete: {reading.result()!r}"
    slow_disk.opened.set()
    assert await deleting is True
    assert await reading in (None, [None, None])
    await store.aclose()


async def test_a_read_of_an_entry_being_written_through_waits_for_that_write(
    tmp_path: Path, slow_disk: SlowDisk
) -> None:
    store = FileStore(root=tmp_path, key_prefix="p", step_timeout=30.0)
    await store.set(NS, "k", b"v0", None)
    writing = asyncio.ensure_future(store.set(NS, "k", b"v1", None))
    await slow_disk.holding_a_write()
    reading = asyncio.ensure_future(store.get(NS, "k"))
    done, _ = await asyncio.wait([reading], timeout=0.2)
    assert not done
    slow_disk.opened.set()
    await writing
    assert await reading == b"v1"
    await store.aclose()


async def test_aclose_stops_both_lane_threads_and_a_later_call_starts_them_again(
    tmp_path: Path,
) -> None:
    def file_workers() -> set[threading.Thread]:
        return {t for t in threading.enumerate() if t.name.startswith("toolweaver-file")}

    others = file_workers()  # of stores other tests left open
    store = FileStore(root=tmp_path, key_prefix="p")
    await store.set(NS, "k", b"v", None)
    assert await store.get(NS, "k") == b"v"
    workers = file_workers() - others
    assert sorted(t.name for t in workers) == ["toolweaver-file", "toolweaver-file-read"]
    assert all(t.daemon for t in workers)  # a hung step never keeps the process alive
    await store.aclose()
    for worker in workers:
        await asyncio.to_thread(worker.join, 5)
        assert not worker.is_alive()
    assert await store.get(NS, "k") == b"v"
    await store.aclose()
