"""FileStore against real files in a temporary folder."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest
from blockbuster import blockbuster_ctx
from hypothesis import given
from hypothesis import strategies as st

from toolweaver_async.config import CacheConfig
from toolweaver_async.errors import ConfigError, StoreError
from toolweaver_async.stores import file as file_module
from toolweaver_async.stores import file_entries, file_format, file_writes
from toolweaver_async.stores.base import Store
from toolweaver_async.stores.file import FileStore
from toolweaver_async.testing import FakeClock

from .polling import eventually

NS = "default"
PREFIX = "tw"
# The store's own I/O is still checked for blocking calls; only the test's may block.
LOOKS_AT_FILES = pytest.mark.allow_blocking(reason="reads or damages the store's files directly")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(tmp_path: Path, clock: FakeClock) -> FileStore:
    return FileStore(root=tmp_path, key_prefix=PREFIX, clock=clock)


def entry_path(root: Path, key: str, *, namespace: str = NS, prefix: str = PREFIX) -> Path:
    digest = hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
    return root / prefix / namespace / digest[:2] / digest


def all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def temp_files(root: Path) -> list[Path]:
    return [p for p in all_files(root) if p.name.endswith(".tmp")]


# --- basics ---------------------------------------------------------------------------------


@LOOKS_AT_FILES
async def test_constructing_does_no_io_and_satisfies_the_store_protocol(tmp_path: Path) -> None:
    store = FileStore(root=tmp_path / "not-yet", key_prefix=PREFIX)
    assert isinstance(store, Store)
    assert store.name == "file"
    assert not (tmp_path / "not-yet").exists()
    assert store.approx_bytes is None


@LOOKS_AT_FILES
async def test_from_config_uses_cache_dir_prefix_and_size_bound(tmp_path: Path) -> None:
    config = CacheConfig(cache_dir=tmp_path, key_prefix="proj", file_max_bytes=12345)
    store = FileStore.from_config(config)
    assert (store.root, store.key_prefix, store.max_bytes) == (tmp_path, "proj", 12345)
    await store.set(NS, "k", b"v", None)
    assert entry_path(tmp_path, "k", prefix="proj").is_file()


async def test_invalid_namespace_is_refused_before_touching_disk(store: FileStore) -> None:
    for namespace in ("../up", "a/b", "", "~trash", ".."):
        with pytest.raises(ConfigError):
            await store.get(namespace, "k")


async def test_invalid_constructor_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        FileStore(root=tmp_path, key_prefix="../x")
    with pytest.raises(ConfigError):
        FileStore(root=tmp_path, key_prefix=PREFIX, max_bytes=0)


# --- add (promotion never overwrites) -------------------------------------------------------


@LOOKS_AT_FILES
async def test_add_writes_only_where_no_fresh_entry_is(
    store: FileStore, clock: FakeClock, tmp_path: Path
) -> None:
    assert await store.add(NS, "k", b"first", 10.0) is True
    assert await store.add(NS, "k", b"second", 10.0) is False
    assert await store.get(NS, "k") == b"first"
    clock.now += 10
    assert await store.add(NS, "k", b"after expiry", None) is True
    assert store.expired_removed == 1
    assert await store.get(NS, "k") == b"after expiry"
    entry_path(tmp_path, "k").write_bytes(b"garbage")
    assert await store.add(NS, "k", b"over garbage", None) is True
    assert await store.get(NS, "k") == b"over garbage"
    assert temp_files(tmp_path) == []


@LOOKS_AT_FILES
async def test_concurrent_adds_of_one_key_store_exactly_one(
    store: FileStore, tmp_path: Path
) -> None:
    values = [f"v{i}".encode() for i in range(30)]
    added = await asyncio.gather(*(store.add(NS, "k", value, None) for value in values))
    assert added.count(True) == 1
    assert await store.get(NS, "k") == values[added.index(True)]
    assert temp_files(tmp_path) == []


@LOOKS_AT_FILES
async def test_add_works_on_a_filesystem_without_hard_links(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_links(src: str, dst: str, **_: object) -> None:
        raise OSError(errno.EPERM, os.strerror(errno.EPERM), src)

    monkeypatch.setattr(os, "link", no_links)
    assert await store.add(NS, "k", b"v", None) is True
    assert await store.add(NS, "k", b"w", None) is False
    assert await store.get(NS, "k") == b"v"
    assert temp_files(tmp_path) == []


# --- expiry ---------------------------------------------------------------------------------


@LOOKS_AT_FILES
async def test_expired_entry_reads_as_none_and_its_file_is_removed(
    store: FileStore, clock: FakeClock, tmp_path: Path
) -> None:
    await store.set(NS, "k", b"v", 10.0)
    await store.set(NS, "forever", b"v", None)
    clock.now += 9.99
    assert await store.get(NS, "k") == b"v"
    clock.now += 0.01
    assert await store.get(NS, "k") is None
    assert not entry_path(tmp_path, "k").exists()
    assert store.expired_removed == 1
    clock.now += 10 * 365 * 86400
    assert await store.get(NS, "forever") == b"v"


@LOOKS_AT_FILES
async def test_get_many_removes_expired_entries_in_the_same_hop(
    store: FileStore, clock: FakeClock, tmp_path: Path
) -> None:
    await store.set_many(NS, [("short", b"s", 1.0), ("long", b"l", 100.0)])
    clock.now += 5
    assert await store.get_many(NS, ["short", "long"]) == [None, b"l"]
    assert not entry_path(tmp_path, "short").exists()
    assert store.expired_removed == 1


# --- keys and paths -------------------------------------------------------------------------

ODD_KEYS = [
    "a/b/c",
    "..",
    "../../../etc/passwd",
    "/absolute",
    "~trash",
    "ключ-键-🔑",
    "line\nbreak\ttab",
    "x" * 10_000,
    "",
]


@LOOKS_AT_FILES
async def test_odd_and_long_keys_round_trip_and_stay_inside_the_prefix_folder(
    store: FileStore, tmp_path: Path
) -> None:
    await store.set_many(NS, [(key, key.encode() + b"!", None) for key in ODD_KEYS])
    assert await store.get_many(NS, ODD_KEYS) == [key.encode() + b"!" for key in ODD_KEYS]
    files = all_files(tmp_path)
    assert len(files) == len(ODD_KEYS)
    inside = (tmp_path / PREFIX / NS).resolve()
    for path in files:
        assert path.resolve().is_relative_to(inside)
        assert len(path.name) == 40


@given(st.text())
def test_entry_path_is_always_two_levels_under_the_namespace_folder(key: str) -> None:
    path, key_bytes = file_entries.entry_path("/base/ns", key)
    folder, name = os.path.split(path)
    assert folder == "/base/ns/" + name[:2]
    assert len(name) == 40
    assert set(name) <= set("0123456789abcdef")
    assert key_bytes.decode("utf-8", "surrogatepass") == key


# --- the store's own header -----------------------------------------------------------------


@LOOKS_AT_FILES
async def test_file_recording_another_key_reads_as_none_and_is_removed(
    store: FileStore, tmp_path: Path
) -> None:
    await store.set(NS, "key-b", b"value of b", None)
    forged = entry_path(tmp_path, "key-a")
    forged.parent.mkdir(parents=True, exist_ok=True)
    entry_path(tmp_path, "key-b").rename(forged)  # B's entry sitting where A's belongs
    assert await store.get(NS, "key-a") is None
    assert not forged.exists()
    assert store.corrupt_removed == 1


def _cut_header(blob: bytes) -> bytes:
    return blob[:7]


def _cut_key(blob: bytes) -> bytes:
    return blob[: file_format.HEADER.size + 1]


def _cut_data(blob: bytes) -> bytes:
    return blob[:-1]


def _extra_data(blob: bytes) -> bytes:
    return blob + b"junk"


def _wrong_magic(blob: bytes) -> bytes:
    return b"XXXX" + blob[4:]


def _random(blob: bytes) -> bytes:
    return os.urandom(len(blob))


def _empty(blob: bytes) -> bytes:
    return b""


@pytest.mark.parametrize(
    "damage", [_cut_header, _cut_key, _cut_data, _extra_data, _wrong_magic, _random, _empty]
)
@LOOKS_AT_FILES
async def test_damaged_file_reads_as_none_is_removed_and_counted(
    store: FileStore, tmp_path: Path, damage: object
) -> None:
    assert callable(damage)
    await store.set(NS, "k", b"some payload bytes", None)
    path = entry_path(tmp_path, "k")
    path.write_bytes(damage(path.read_bytes()))
    assert await store.get(NS, "k") is None
    assert not path.exists()
    assert store.corrupt_removed == 1
    await store.set(NS, "k", b"fresh", None)
    assert await store.get(NS, "k") == b"fresh"


# --- atomic writes --------------------------------------------------------------------------


@LOOKS_AT_FILES
async def test_concurrent_writers_of_one_key_leave_one_whole_entry_and_no_temp_files(
    store: FileStore, tmp_path: Path
) -> None:
    values = [f"value-{i}-".encode() * (i + 1) for i in range(50)]
    await asyncio.gather(*(store.set(NS, "shared", value, None) for value in values))
    assert await store.get(NS, "shared") in values
    assert temp_files(tmp_path) == []
    assert all_files(tmp_path) == [entry_path(tmp_path, "shared")]


@LOOKS_AT_FILES
async def test_disk_full_raises_store_error_leaves_no_temp_file_and_withdraws_the_old_entry(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The old entry is what the failed write was replacing: left on disk, any process
    sharing the folder would serve it (this one's missed-writes mark protects only itself)."""
    await store.set(NS, "k", b"old", None)
    real = file_writes.write_new_file

    def disk_fills_after_the_first_part(path: str, parts: Sequence[bytes], folder: int) -> None:
        real(
            path, parts[:1], folder
        )  # the temp file exists, partly written, when the kernel says no
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)

    monkeypatch.setattr(file_writes, "write_new_file", disk_fills_after_the_first_part)
    with pytest.raises(StoreError) as raised:
        await store.set(NS, "k", b"new", None)
    assert raised.value.store == "file"
    assert isinstance(raised.value.__cause__, OSError)
    assert raised.value.__cause__.errno == errno.ENOSPC
    assert temp_files(tmp_path) == []
    assert all_files(tmp_path) == []
    assert await store.get(NS, "k") is None


@LOOKS_AT_FILES
async def test_cancelled_set_still_completes_its_write_in_the_worker(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set(NS, "k", b"old", None)
    started, release, finished = threading.Event(), threading.Event(), threading.Event()
    real = file_module.write_entries

    def held_write(*args: object) -> None:
        started.set()
        release.wait(5)
        try:
            real(*args)  # type: ignore[arg-type]
        finally:
            finished.set()

    monkeypatch.setattr(file_module, "write_entries", held_write)
    task = asyncio.create_task(store.set(NS, "k", b"new", None))
    assert await asyncio.to_thread(started.wait, 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    assert await asyncio.to_thread(finished.wait, 5)
    assert await store.get(NS, "k") == b"new"
    assert temp_files(tmp_path) == []


# --- invalidate and clear -------------------------------------------------------------------


@LOOKS_AT_FILES
async def test_invalidate_hides_the_namespace_at_once_for_every_store_on_the_root(
    store: FileStore, tmp_path: Path, clock: FakeClock
) -> None:
    other_process = FileStore(root=tmp_path, key_prefix=PREFIX, clock=clock)
    await store.set_many("search", [("q1", b"1", None), ("q2", b"2", None)])
    await store.set("results", "r", b"kept", None)
    assert await other_process.get("search", "q1") == b"1"

    await store.invalidate("search")

    assert await other_process.get_many("search", ["q1", "q2"]) == [None, None]
    assert await store.get("search", "q1") is None
    assert await other_process.get("results", "r") == b"kept"
    assert not (tmp_path / PREFIX / "search").exists()
    assert list((tmp_path / PREFIX / "~trash").iterdir()) == []
    await store.set("search", "q1", b"again", None)
    assert await other_process.get("search", "q1") == b"again"


@LOOKS_AT_FILES
async def test_invalidate_of_an_unused_namespace_or_missing_root_is_fine(
    store: FileStore, tmp_path: Path
) -> None:
    await store.invalidate("nothing-here")  # root/<prefix> does not even exist yet
    assert not (tmp_path / PREFIX).exists()
    await store.set(NS, "k", b"v", None)
    await store.invalidate("nothing-here")
    assert await store.get(NS, "k") == b"v"


@LOOKS_AT_FILES
async def test_clear_removes_only_this_prefix_and_leftover_trash(
    store: FileStore, tmp_path: Path, clock: FakeClock
) -> None:
    neighbour = FileStore(root=tmp_path, key_prefix="other", clock=clock)
    await neighbour.set(NS, "k", b"theirs", None)
    await store.set_many(NS, [("a", b"1", None), ("b", b"2", None)])
    await store.set("search", "q", b"3", None)
    unrelated = tmp_path / "notes.txt"
    unrelated.write_text("keep me")
    crashed = tmp_path / PREFIX / "~trash" / "default-deadbeef" / "ab"
    crashed.mkdir(parents=True)
    (crashed / "leftover").write_bytes(b"x" * 100)

    await store.clear()

    assert await store.get_many(NS, ["a", "b"]) == [None, None]
    assert await store.get("search", "q") is None
    assert await neighbour.get(NS, "k") == b"theirs"
    assert unrelated.read_text() == "keep me"
    assert all_files(tmp_path / PREFIX) == []
    await store.clear()  # twice is fine
    await FileStore(root=tmp_path / "absent", key_prefix=PREFIX).clear()


@LOOKS_AT_FILES
async def test_write_whose_folder_is_invalidated_mid_write_is_ordered_before_it(
    store: FileStore, tmp_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.set(NS, "k", b"old", None)
    real = file_writes.write_new_file
    moved = tmp_path / "moved-away"

    def another_process_invalidates_after_the_temp_is_written(
        path: str, parts: Sequence[bytes], folder: int
    ) -> None:
        real(path, parts, folder)
        (tmp_path / PREFIX / NS).rename(moved)

    monkeypatch.setattr(
        file_writes, "write_new_file", another_process_invalidates_after_the_temp_is_written
    )
    await store.set(NS, "k", b"new", None)  # no error: set, then invalidated
    monkeypatch.undo()
    assert await store.get(NS, "k") is None
    assert temp_files(tmp_path / PREFIX) == []  # it left with the folder, as into the trash
    await store.set(NS, "k", b"next", None)
    assert await store.get(NS, "k") == b"next"


@LOOKS_AT_FILES
async def test_writes_racing_invalidate_and_clear_never_fail_or_leave_temp_files(
    store: FileStore, tmp_path: Path, clock: FakeClock
) -> None:
    other_process = FileStore(root=tmp_path, key_prefix=PREFIX, clock=clock)
    writes = [store.set(NS, f"k{i % 7}", b"v" * i, None) for i in range(60)]
    writes += [other_process.set_many(NS, [(f"m{i}", b"m", None)]) for i in range(20)]
    wipes = [store.invalidate(NS), other_process.invalidate(NS), store.clear()] * 3
    await asyncio.gather(*writes, *wipes)
    trash = tmp_path / PREFIX / "~trash"
    assert [p for p in temp_files(tmp_path) if trash not in p.parents] == []
    # A temp file a racing writer created in a folder just moved to the trash can outlive that
    # pass (the folder was not empty yet); the next pass removes it.
    await store.clear()
    assert temp_files(tmp_path) == []
    assert not trash.exists() or list(trash.iterdir()) == []
    await store.set(NS, "after", b"ok", None)
    assert await other_process.get(NS, "after") == b"ok"


async def test_an_invalidate_whose_folder_was_moved_and_made_again_meanwhile_still_hides_it(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The race of two processes: between our rename failing (another process's clear moved
    the namespace folder away) and our look, a racing write made the folder again. The
    invalidate moves the new folder too, instead of failing."""
    await store.set(NS, "before", b"v", None)
    real_rename = os.rename
    raced: list[bool] = []

    def rename(src: str, dst: str, **fds: int) -> None:
        if src == NS and not raced:
            raced.append(True)
            real_rename(src, "moved-by-the-other", **fds)  # the other process's clear ...
            os.mkdir(NS, dir_fd=fds["src_dir_fd"])  # ... and a racing write's new folder
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", src)
        real_rename(src, dst, **fds)

    monkeypatch.setattr(os, "rename", rename)
    await store.invalidate(NS)
    assert raced == [True]
    monkeypatch.undo()
    assert await store.get(NS, "before") is None
    assert not await asyncio.to_thread((tmp_path / PREFIX / NS).exists)


# --- size bound -----------------------------------------------------------------------------


def _age(path: Path, mtime: float) -> None:
    # Kernel file times are coarse (a tick); set them explicitly so "oldest" is unambiguous.
    os.utime(path, (mtime, mtime))


@LOOKS_AT_FILES
async def test_eviction_keeps_the_total_under_max_bytes_and_removes_the_oldest_first(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = FileStore(root=tmp_path, key_prefix=PREFIX, max_bytes=10_000, clock=clock)
    payload = b"p" * 900
    for i in range(10):
        await store.set(NS, f"k{i}", payload, None)
        _age(entry_path(tmp_path, f"k{i}"), 1_000_000 + i)
    assert store.evicted == 0
    await store.set(NS, "k10", payload, None)  # about 10.3 KB now: over the bound

    total = sum(p.stat().st_size for p in all_files(tmp_path))
    assert total <= 10_000 * 0.9
    assert store.approx_bytes == total
    assert store.evicted >= 1
    present = [i for i in range(11) if entry_path(tmp_path, f"k{i}").exists()]
    assert present == list(range(11 - len(present), 11))  # the survivors are the newest
    assert 10 in present


@LOOKS_AT_FILES
async def test_eviction_removes_expired_entries_before_older_fresh_ones(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = FileStore(root=tmp_path, key_prefix=PREFIX, max_bytes=5_000, clock=clock)
    payload = b"p" * 900
    for i in range(4):
        await store.set(NS, f"old{i}", payload, None)
        _age(entry_path(tmp_path, f"old{i}"), 1_000_000 + i)
    await store.set(NS, "newest-but-expired", payload, 1.0)
    clock.now += 2
    await store.set(NS, "trigger", payload, None)

    assert not entry_path(tmp_path, "newest-but-expired").exists()
    assert store.expired_removed == 1
    assert sum(p.stat().st_size for p in all_files(tmp_path)) <= 5_000 * 0.9
    assert entry_path(tmp_path, "trigger").exists()
    assert entry_path(tmp_path, "old3").exists()


@LOOKS_AT_FILES
async def test_first_write_counts_files_other_processes_wrote_and_drops_stale_temp_files(
    tmp_path: Path, clock: FakeClock
) -> None:
    earlier = FileStore(root=tmp_path, key_prefix=PREFIX, clock=clock)
    await earlier.set_many(NS, [(f"k{i}", b"x" * 500, None) for i in range(5)])
    stale = entry_path(tmp_path, "k0").parent / ".abandoned.0123.tmp"
    stale.write_bytes(b"half")
    _age(stale, 1_000)

    store = FileStore(root=tmp_path, key_prefix=PREFIX, clock=clock)
    assert store.approx_bytes is None
    await store.set(NS, "mine", b"y" * 500, None)

    assert not stale.exists()
    assert store.approx_bytes == sum(p.stat().st_size for p in all_files(tmp_path))
    await store.delete(NS, "mine")
    assert store.approx_bytes == sum(p.stat().st_size for p in all_files(tmp_path))


# --- failures -------------------------------------------------------------------------------


@LOOKS_AT_FILES
async def test_a_stray_file_where_the_namespace_folder_belongs_is_replaced_by_the_folder(
    store: FileStore, tmp_path: Path
) -> None:
    (tmp_path / PREFIX).mkdir()
    (tmp_path / PREFIX / NS).write_bytes(b"not a folder")
    assert await store.get(NS, "k") is None  # nothing of ours is there
    assert await store.get_many(NS, ["k"]) == [None]
    await store.set(NS, "k", b"v", None)  # the tree is the store's own: the stray file goes
    assert await store.get(NS, "k") == b"v"
    assert (tmp_path / PREFIX / NS).is_dir()


@LOOKS_AT_FILES
async def test_a_file_where_the_prefix_folder_belongs_gives_store_error(
    store: FileStore, tmp_path: Path
) -> None:
    (tmp_path / PREFIX).write_bytes(b"not a folder")  # not the store's to remove
    with pytest.raises(StoreError) as raised:
        await store.set(NS, "k", b"v", None)
    assert raised.value.store == "file"
    with pytest.raises(StoreError):
        await store.ping()
    assert (tmp_path / PREFIX).read_bytes() == b"not a folder"


@pytest.mark.skipif(
    hasattr(os, "geteuid") and os.geteuid() == 0,
    reason="root ignores permission bits; ENOTDIR test above covers the error path",
)
async def test_permission_denied_gives_store_error(store: FileStore, tmp_path: Path) -> None:
    await store.set(NS, "k", b"v", None)
    folder = entry_path(tmp_path, "k").parent
    folder.chmod(0o500)
    try:
        with pytest.raises(StoreError) as raised:
            await store.set(NS, "k", b"new", None)
        assert isinstance(raised.value.__cause__, PermissionError)
    finally:
        folder.chmod(0o700)


@LOOKS_AT_FILES
async def test_root_deleted_underneath_reads_as_miss_and_next_write_works(
    store: FileStore, tmp_path: Path
) -> None:
    await store.set(NS, "k", b"v", None)
    shutil.rmtree(tmp_path / PREFIX)
    assert await store.get(NS, "k") is None
    assert await store.delete(NS, "k") is False
    await store.set(NS, "k", b"again", None)
    assert await store.get(NS, "k") == b"again"


@LOOKS_AT_FILES
async def test_ping_only_looks_and_leaves_nothing_behind(store: FileStore, tmp_path: Path) -> None:
    await store.ping()  # a folder not made yet is fine: the first write makes it
    assert all_files(tmp_path) == []
    assert not (tmp_path / PREFIX).exists()
    await store.set(NS, "k", b"v", None)
    before = all_files(tmp_path)
    await store.ping()
    assert all_files(tmp_path) == before
    await store.aclose()
    await store.aclose()


@LOOKS_AT_FILES
async def test_ping_raises_store_error_when_the_folder_cannot_be_written(tmp_path: Path) -> None:
    blocker = tmp_path / "file-not-folder"
    blocker.write_bytes(b"")
    store = FileStore(root=blocker, key_prefix=PREFIX)
    with pytest.raises(StoreError):
        await store.ping()


# --- the event loop -------------------------------------------------------------------------


@pytest.fixture
def no_blocking_calls() -> Iterator[None]:
    with blockbuster_ctx():
        yield


async def test_no_operation_blocks_the_event_loop(
    tmp_path: Path, clock: FakeClock, no_blocking_calls: None
) -> None:
    store = FileStore(root=tmp_path, key_prefix=PREFIX, max_bytes=3_000, clock=clock)
    await store.ping()
    await store.set(NS, "k", b"v" * 1000, 5.0)
    assert await store.add(NS, "a", b"a", None) is True
    await store.set_many(NS, [(f"m{i}", b"m" * 1000, None) for i in range(5)])  # evicts
    assert await store.get(NS, "m4") == b"m" * 1000
    await store.get_many(NS, ["k", "m4", "missing"])
    clock.now += 10
    assert await store.get(NS, "k") is None
    await store.delete(NS, "m4")
    await store.invalidate(NS)
    await store.clear()
    await store.aclose()


def test_one_store_serves_one_event_loop_after_another(tmp_path: Path) -> None:
    """Tests and scripts often call asyncio.run more than once with one long-lived store."""
    store = FileStore(root=tmp_path, key_prefix="p")
    asyncio.run(store.set("ns", "k", b"first loop", None))
    assert asyncio.run(store.get("ns", "k")) == b"first loop"


async def test_concurrent_reads_and_writes_each_get_their_own_answer(tmp_path: Path) -> None:
    """Steps share worker hops (WorkerLane); every caller still gets its own key's answer."""
    store = FileStore(root=tmp_path, key_prefix="p")
    await asyncio.gather(*(store.set("ns", f"k{n}", b"v%d" % n, None) for n in range(200)))
    reads = await asyncio.gather(*(store.get("ns", f"k{n}") for n in range(220)))
    assert reads == [b"v%d" % n for n in range(200)] + [None] * 20


def test_step_timeout_must_be_positive_or_none(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="step_timeout"):
        FileStore(root=tmp_path, key_prefix="p", step_timeout=0)
    assert FileStore(root=tmp_path, key_prefix="p", step_timeout=None).step_timeout is None


async def test_bulk_calls_larger_than_one_step_keep_every_entry_in_order(tmp_path: Path) -> None:
    """set_many/get_many of hundreds of entries go to the lane in steps of 64."""
    store = FileStore(root=tmp_path, key_prefix="p")
    items = [(f"k{n}", b"v%d" % n, None) for n in range(300)]
    await store.set_many("ns", items)
    keys = [f"k{n}" for n in range(299, -1, -1)] + ["missing"]
    assert await store.get_many("ns", keys) == [b"v%d" % n for n in range(299, -1, -1)] + [None]


@LOOKS_AT_FILES
async def test_a_bulk_write_does_not_hold_up_other_callers_until_it_is_done(
    tmp_path: Path,
) -> None:
    """A set_many of 2 000 entries goes step by step, so a get asked while it runs is answered
    after the step in flight, not after all 2 000 writes (the lane is first come, first served)."""
    store = FileStore(root=tmp_path, key_prefix="p")
    await store.set("ns", "other", b"answer", None)
    folder = store._folder("ns")
    paths = [file_entries.entry_path(folder, f"bulk{n}")[0] for n in range(2000)]
    bulk = asyncio.ensure_future(
        store.set_many("ns", [(f"bulk{n}", b"x" * 100, None) for n in range(2000)])
    )
    await eventually(lambda: os.path.exists(paths[0]), what="the first bulk step")
    assert await store.get("ns", "other") == b"answer"
    assert _existing(paths) < len(paths), "the get waited for the whole bulk write"
    await bulk
    assert _existing(paths) == len(paths)


def _existing(paths: Sequence[str]) -> int:
    """How many of ``paths`` exist; synchronous on purpose: the loop (and so the bulk write)
    stands still while it counts."""
    return sum(os.path.exists(path) for path in paths)
