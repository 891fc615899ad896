"""Symbolic links planted inside the file store's tree are never followed: clear(),
invalidate(), set(), delete() and eviction never delete or write outside ``cache_dir/<prefix>``.

Each test puts a link where the store keeps a folder or a file, pointing at a "victim" folder
outside the cache, and checks that the victim is untouched afterwards."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from pathlib import Path

import pytest

from toolweaver_async.errors import StoreError
from toolweaver_async.stores import file_eviction
from toolweaver_async.stores.file import FileStore
from toolweaver_async.stores.file_ledger import Ledger
from toolweaver_async.testing import FakeClock

NS = "default"
PREFIX = "tw"
# The store's own I/O is still checked for blocking calls; only the test's may block.
PLANTS_LINKS = pytest.mark.allow_blocking(reason="plants links and files behind the store's back")


@pytest.fixture
def victim(tmp_path: Path) -> Path:
    """A folder outside the cache with files the cache must never touch."""
    folder = tmp_path / "victim"
    (folder / "sub").mkdir(parents=True)
    (folder / "precious.txt").write_text("keep me")
    (folder / "sub" / "deeper.txt").write_text("me too")
    return folder


def victim_intact(victim: Path) -> bool:
    found = sorted(str(p.relative_to(victim)) for p in victim.rglob("*"))
    return (
        found == ["precious.txt", "sub", "sub/deeper.txt"]
        and (victim / "precious.txt").read_text() == "keep me"
    )


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    return FileStore(root=tmp_path / "cache", key_prefix=PREFIX, clock=FakeClock())


def base(tmp_path: Path) -> Path:
    return tmp_path / "cache" / PREFIX


def digest_of(key: str) -> str:
    return hashlib.blake2b(key.encode(), digest_size=20).hexdigest()


@PLANTS_LINKS
async def test_a_namespace_folder_that_is_a_link_is_never_followed(
    store: FileStore, tmp_path: Path, victim: Path
) -> None:
    await store.set("other", "k", b"v", None)  # the prefix folder exists
    (base(tmp_path) / NS).symlink_to(victim, target_is_directory=True)
    assert await store.get(NS, "k") is None
    await store.set(NS, "k", b"v", None)  # lands inside the cache, the link replaced
    assert await store.get(NS, "k") == b"v"
    assert (base(tmp_path) / NS).is_dir()
    assert not (base(tmp_path) / NS).is_symlink()
    assert victim_intact(victim)
    (base(tmp_path) / "linked").symlink_to(victim, target_is_directory=True)
    await store.invalidate("linked")
    assert not (base(tmp_path) / "linked").exists()
    assert victim_intact(victim)
    (base(tmp_path) / "linked").symlink_to(victim, target_is_directory=True)
    await store.clear()
    assert victim_intact(victim)
    assert await store.get("other", "k") is None


@PLANTS_LINKS
async def test_a_trash_folder_that_is_a_link_is_never_emptied_or_written_into(
    store: FileStore, tmp_path: Path, victim: Path
) -> None:
    await store.set(NS, "k", b"v", None)
    (base(tmp_path) / "~trash").symlink_to(victim, target_is_directory=True)
    await store.clear()
    assert victim_intact(victim)
    assert await store.get(NS, "k") is None
    await store.set(NS, "k", b"v", None)
    trash = base(tmp_path) / "~trash"
    assert trash.is_dir()  # the link was replaced by a real trash folder
    assert not trash.is_symlink()
    shutil.rmtree(trash)
    trash.symlink_to(victim, target_is_directory=True)
    await store.invalidate(NS)
    assert victim_intact(victim)


@PLANTS_LINKS
async def test_a_two_hex_folder_that_is_a_link_is_never_written_through(
    store: FileStore, tmp_path: Path, victim: Path
) -> None:
    digest = digest_of("k")
    (base(tmp_path) / NS).mkdir(parents=True)
    (base(tmp_path) / NS / digest[:2]).symlink_to(victim, target_is_directory=True)
    await store.set(NS, "k", b"v", None)
    assert await store.get(NS, "k") == b"v"
    assert victim_intact(victim)
    assert not (base(tmp_path) / NS / digest[:2]).is_symlink()
    (base(tmp_path) / NS / "zz").symlink_to(victim, target_is_directory=True)
    await store.invalidate(NS)
    assert victim_intact(victim)


@PLANTS_LINKS
async def test_an_entry_file_that_is_a_link_is_never_read_through_or_its_target_removed(
    store: FileStore, tmp_path: Path, victim: Path
) -> None:
    await store.set(NS, "k", b"v", None)
    entry = base(tmp_path) / NS / digest_of("k")[:2] / digest_of("k")
    entry.unlink()
    entry.symlink_to(victim / "precious.txt")
    assert await store.get(NS, "k") is None  # a link is foreign: a broken entry
    assert not entry.is_symlink()  # removed, as a link
    assert store.corrupt_removed == 1
    entry.symlink_to(victim / "precious.txt")
    assert await store.delete(NS, "k") is True  # the link goes, never its target
    entry.symlink_to(victim / "precious.txt")
    await store.set(NS, "k", b"new", None)  # replaces the link itself
    assert await store.get(NS, "k") == b"new"
    assert victim_intact(victim)


@PLANTS_LINKS
async def test_eviction_never_walks_into_a_linked_folder(tmp_path: Path, victim: Path) -> None:
    store = FileStore(root=tmp_path / "cache", key_prefix=PREFIX, max_bytes=2_000)
    await store.set(NS, "k0", b"x" * 500, None)
    (base(tmp_path) / "linked").symlink_to(victim, target_is_directory=True)
    for n in range(10):
        await store.set(NS, f"k{n}", b"x" * 500, None)  # crosses max_bytes: evicts
    assert victim_intact(victim)


@PLANTS_LINKS
async def test_a_prefix_folder_that_is_a_link_is_an_error_never_followed(
    store: FileStore, tmp_path: Path, victim: Path
) -> None:
    (tmp_path / "cache").mkdir()
    base(tmp_path).symlink_to(victim, target_is_directory=True)
    for call in (
        store.set(NS, "k", b"v", None),
        store.clear(),
        store.invalidate("sub"),
        store.ping(),
    ):
        with pytest.raises(StoreError, match="symbolic link"):
            await call
    assert await store.get(NS, "k") is None
    assert base(tmp_path).is_symlink()  # the user's link: reported, not removed
    assert victim_intact(victim)
    assert sorted(os.listdir(victim)) == ["precious.txt", "sub"]


@PLANTS_LINKS
async def test_an_entry_link_to_a_fifo_outside_is_not_opened(tmp_path: Path) -> None:
    """Opening the link's target would block on the FIFO (and read outside the tree): with
    O_NOFOLLOW the read sees a link, a broken entry, at once."""
    store = FileStore(root=tmp_path / "cache", key_prefix=PREFIX, step_timeout=0.5)
    await store.set(NS, "k", b"v", None)
    fifo = tmp_path / "outside.fifo"
    os.mkfifo(fifo)
    entry = base(tmp_path) / NS / digest_of("k")[:2] / digest_of("k")
    entry.unlink()
    entry.symlink_to(fifo)
    try:
        assert await store.get(NS, "k") is None
        assert store.corrupt_removed == 1
        assert not entry.is_symlink()
        assert fifo.exists()
    finally:
        with contextlib.suppress(OSError):  # a reader blocked on the FIFO (the bug) is released
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        await store.aclose()


@PLANTS_LINKS
def test_eviction_never_deletes_through_a_folder_swapped_for_a_link_after_its_scan(
    tmp_path: Path,
) -> None:
    """The scan saw real folders; before eviction removes the entries it found, the namespace
    folder is swapped for a link to a copy outside the cache holding the same file names."""
    folder = base(tmp_path) / NS
    sub = folder / "ab"
    sub.mkdir(parents=True)
    for n in range(3):
        (sub / f"{n:040x}").write_bytes(b"not an entry: removed first")
    entries, total = file_eviction.scan(str(base(tmp_path)))
    assert len(entries) == 3
    outside = tmp_path / "outside"
    shutil.copytree(folder, outside)
    shutil.rmtree(folder)
    folder.symlink_to(outside, target_is_directory=True)

    file_eviction.evict(Ledger(), str(base(tmp_path)), entries, total, target=0, now=0.0)

    assert sorted(p.name for p in (outside / "ab").iterdir()) == [f"{n:040x}" for n in range(3)]
    assert folder.is_symlink()


@PLANTS_LINKS
@pytest.mark.parametrize("swapped", ["namespace", "two-hex"])
async def test_a_folder_swapped_for_a_link_to_another_tree_is_never_read_through(
    store: FileStore, tmp_path: Path, swapped: str
) -> None:
    """Another cache's tree holds a whole, valid entry of the very key: a read (or a listing)
    through the link would serve it. Opening every folder on the way with O_NOFOLLOW makes it
    a miss."""
    other = FileStore(root=tmp_path / "other", key_prefix=PREFIX, clock=FakeClock())
    await other.set(NS, "k", b"foreign", None)
    await store.set(NS, "k", b"mine", None)
    hex2 = digest_of("k")[:2]
    if swapped == "namespace":
        ours, theirs = base(tmp_path) / NS, tmp_path / "other" / PREFIX / NS
    else:
        ours, theirs = base(tmp_path) / NS / hex2, tmp_path / "other" / PREFIX / NS / hex2
    shutil.rmtree(ours)
    ours.symlink_to(theirs, target_is_directory=True)

    assert await store.get(NS, "k") is None
    assert await store.get_many(NS, ["k"]) == [None]
    assert [page async for page in store.list_entries(NS, "")] == []
    assert await other.get(NS, "k") == b"foreign"  # the other tree is untouched
