"""What a store can do is what it declares (stores/base.py protocols), never what it is called.

The chain reads the declarations once, when it is built; these tests give stores names that
would mislead a name check and declarations that contradict their names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from toolweaver_async import AsyncToolCache, CacheConfig, MemoryStore
from toolweaver_async._chain import build_chain
from toolweaver_async.resilience.guard import GuardedStore
from toolweaver_async.stores.base import KeyLock


class NamedRedis(MemoryStore):
    """Called "redis", but a plain in-process store: no journal, no deadline, no locks."""

    name = "redis"


class Shared(MemoryStore):
    """A remote, shared store under another name: it gets an outage journal and a deadline."""

    name = "shared"
    remote: Final = True
    call_timeout = 0.5
    identity = "shared://127.0.0.1:1/0"


class SelfBounded(Shared):
    name = "bounded"
    bounds_calls: Final = True


class Lock:
    ttl = 1.0

    async def acquire(self) -> bool:
        return True

    async def extend(self) -> bool:
        return True

    async def release(self) -> bool:
        return True


class Locking(MemoryStore):
    name = "locking"

    def __init__(self) -> None:
        super().__init__()
        self.asked: list[tuple[str, str, float]] = []

    def lock(self, namespace: str, key: str, *, ttl: float) -> KeyLock:
        self.asked.append((namespace, key, ttl))
        return Lock()


def chain_of(*stores: MemoryStore, tmp_path: Path) -> list[GuardedStore]:
    config = CacheConfig(use_redis=False, cache_dir=tmp_path)
    return build_chain(config, [MemoryStore(), *stores], clock=lambda: 0.0).layers


def test_a_store_called_redis_is_not_treated_as_remote(tmp_path: Path) -> None:
    [layer] = chain_of(NamedRedis(), tmp_path=tmp_path)
    assert layer.journal is None
    assert layer.deadline is None


def test_a_store_declaring_remote_gets_a_journal_and_its_own_deadline(tmp_path: Path) -> None:
    [layer] = chain_of(Shared(), tmp_path=tmp_path)
    assert layer.journal is not None
    assert layer.deadline == 0.5  # its call_timeout, not the Redis setting


def test_a_store_bounding_its_own_calls_gets_no_second_deadline(tmp_path: Path) -> None:
    [layer] = chain_of(SelfBounded(), tmp_path=tmp_path)
    assert layer.journal is not None
    assert layer.deadline is None


async def test_locks_come_from_the_first_store_that_declares_them(tmp_path: Path) -> None:
    locking = Locking()
    cache = AsyncToolCache(
        CacheConfig(use_redis=False, cache_dir=tmp_path), stores=[MemoryStore(), locking]
    )
    async with cache:
        assert await cache.get_or_set("k", _value, lock=True) == "v"
    assert locking.asked == [("default", "k", 10.0)]


async def _value() -> str:
    return "v"
