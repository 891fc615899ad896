"""An outage journal replays only onto the Redis server (and database) it was recorded for."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from toolweaver_async import AsyncToolCache
from toolweaver_async.resilience.journal import OutageJournal

from .polling import eventually


def _journal(folder: Path, server: str) -> OutageJournal:
    return OutageJournal(max_entries=100, clock=lambda: 1e9, folder=folder, server=server)


async def test_clear_journaled_for_an_unreachable_redis_is_not_replayed_onto_another(
    make_cache: Callable[..., AsyncToolCache],
    raw_redis: aioredis.Redis,
    key_prefix: str,
    free_port: Callable[[], int],
) -> None:
    keeper = make_cache(use_redis=True)
    await keeper.connect()
    await keeper.set("k", "kept")
    await keeper.aclose()
    stored = await raw_redis.keys(f"{key_prefix}:*")
    assert stored

    dead = make_cache(use_redis=True, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    await dead.connect()
    await dead.clear()  # journaled: that server is unreachable
    await dead.aclose()

    other = make_cache(use_redis=True)
    await other.connect()
    layer: Any = next(g for g in other._layers if g.name == "redis")
    await eventually(lambda: not layer.journal, what="journal drained")
    assert sorted(await raw_redis.keys(f"{key_prefix}:*")) == sorted(stored)


async def test_journal_of_another_database_is_left_for_that_database(tmp_path: Path) -> None:
    first = _journal(tmp_path, "127.0.0.1:6379/1")
    await first.open()
    first.record_clear()
    await first.aclose()

    other_db = _journal(tmp_path, "127.0.0.1:6379/0")
    await other_db.open()
    assert len(other_db) == 0
    await other_db.aclose()

    same = _journal(tmp_path, "127.0.0.1:6379/1")
    await same.open()
    assert same.describe()["clear_pending"]  # still there for the server it belongs to
    await same.aclose()


@pytest.mark.allow_blocking(reason="renames the journal file behind its back")
async def test_log_whose_origin_is_another_server_is_discarded_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    first = _journal(tmp_path, "a:1/0")
    await first.open()
    first.record_clear()
    await first.aclose()
    assert first.path is not None
    digest = hashlib.sha256(b"b:1/0").hexdigest()[:12]
    first.path.rename(first.path.with_name(f"redis-{digest}-0.jrnl"))  # a name collision

    with caplog.at_level(logging.WARNING, logger="toolweaver_async.journal"):
        other = _journal(tmp_path, "b:1/0")
        await other.open()
    assert len(other) == 0
    assert [r.message for r in caplog.records if "another server" in r.message]
    await other.aclose()
    assert other.path is not None
    assert other.path.stat().st_size == 0  # rewritten: the foreign log is gone
