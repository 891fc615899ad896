"""File-store reads of entries larger than one read: whole, or a miss when damaged."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from toolweaver_async.stores.file import FileStore

NS = "default"


def entry_path(root: Path, key: str) -> Path:
    digest = hashlib.blake2b(key.encode(), digest_size=20).hexdigest()
    return root / "tw" / NS / digest[:2] / digest


@pytest.mark.parametrize("size", [64 * 1024 - 60, 64 * 1024, 200_000, 3 * 1024 * 1024 + 7])
async def test_entries_of_any_size_read_back_whole(tmp_path: Path, size: int) -> None:
    store = FileStore(root=tmp_path, key_prefix="tw")
    data = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    await store.set(NS, "k", data, None)
    assert await store.get(NS, "k") == data
    assert await store.get_many(NS, ["k", "missing"]) == [data, None]


@pytest.mark.parametrize("change", ["truncate", "extend"])
@pytest.mark.allow_blocking(reason="damages the entry file behind the store's back")
async def test_a_large_entry_torn_or_grown_reads_as_a_miss(tmp_path: Path, change: str) -> None:
    store = FileStore(root=tmp_path, key_prefix="tw")
    await store.set(NS, "k", b"v" * 300_000, None)
    path = entry_path(tmp_path, "k")
    raw = path.read_bytes()
    path.write_bytes(raw[:-1000] if change == "truncate" else raw + b"junk")
    assert await store.get(NS, "k") is None
    assert not path.exists()
    assert store.corrupt_removed == 1
