"""The Store contract: every store (memory, Redis, file) keeps each promise of ``Store``.

One suite, parametrized over :data:`STORE_KINDS`. A new store joins by adding one builder to
:data:`BUILDERS`: it says how to open a store under a key prefix (stores opened with the same
prefix share their entries, as two processes of one cache do) and which clock expires its
entries (``None``: the server expires them by itself, in real time). What only one store does
(file layout, Redis generations, LRU bounds) stays in that store's own test file.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from toolweaver_async import FileStore, MemoryStore, RedisStore
from toolweaver_async.stores.base import Store
from toolweaver_async.testing import FakeClock

from .polling import eventually

NS = "contract"
OTHER_NS = "contract-other"
# Keys a caller may use: unicode, separators the stores use themselves, path and glob syntax.
ODD_KEYS = [
    "ключ",
    "emoji 🔑 key",
    "a:b:c",
    "with space",
    "../../escape",
    "*?[glob]",
    "back\\slash",
    "x" * 1000,
]


# The contract is about what a store keeps, not how fast: timeouts no loaded CI machine misses.
PATIENT = {"connect_timeout": 2.0, "command_timeout": 2.0}


@dataclass
class StoreKind:
    """One kind of store under test, and the stores the test opened (closed afterwards)."""

    name: str
    opener: Callable[[str], Store]
    clock: FakeClock | None  # None: the server expires entries itself, in real time
    opened: list[Store] = field(default_factory=list)

    def open(self, prefix: str = "main") -> Store:
        """A store under ``prefix``: stores of one prefix share their entries."""
        store = self.opener(prefix)
        if store not in self.opened:
            self.opened.append(store)
        return store

    async def outlive(self, store: Store, key: str, ttl: float) -> None:
        """Let ``ttl`` seconds pass for ``store`` and check that ``key`` expired."""
        if self.clock is not None:
            self.clock.advance(ttl + 0.001)
            assert await store.get(NS, key) is None
            return

        async def gone() -> bool:
            return await store.get(NS, key) is None

        await eventually(gone, within=3.0, what=f"{key!r} expired after {ttl} s")


def _memory(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKind:
    # One process's memory is one cache: the same prefix gives the same store.
    clock = FakeClock()
    stores: dict[str, MemoryStore] = {}

    def opener(prefix: str) -> Store:
        return stores.setdefault(prefix, MemoryStore(clock=clock))

    return StoreKind("memory", opener, clock)


def _redis(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKind:
    url: str = request.getfixturevalue("redis_url")
    base: str = request.getfixturevalue("key_prefix")
    return StoreKind(
        "redis",
        lambda prefix: RedisStore(url=url, key_prefix=f"{base}-{prefix}", **PATIENT),
        None,
    )


def _file(request: pytest.FixtureRequest, tmp_path: Path) -> StoreKind:
    clock = FakeClock()
    root = tmp_path / "cache"
    return StoreKind(
        "file", lambda prefix: FileStore(root=root, key_prefix=prefix, clock=clock), clock
    )


BUILDERS: dict[str, Callable[[pytest.FixtureRequest, Path], StoreKind]] = {
    "memory": _memory,
    "redis": _redis,
    "file": _file,
}
STORE_KINDS = list(BUILDERS)


class TestStoreContract:
    """The promises of ``Store``, for every kind in :data:`STORE_KINDS`. A suite for stores
    that need fixtures of their own (a Redis Cluster) subclasses this and overrides ``kind``."""

    @pytest.fixture(params=STORE_KINDS)
    def kind(self, request: pytest.FixtureRequest, tmp_path: Path) -> StoreKind:
        # Built outside the event loop: the Redis builder may start the session's server.
        return BUILDERS[request.param](request, tmp_path)

    @pytest.fixture(autouse=True)
    async def close_opened_stores(self, kind: StoreKind) -> AsyncIterator[None]:
        yield
        for store in kind.opened:
            await store.aclose()

    @pytest.fixture
    def store(self, kind: StoreKind) -> Store:
        return kind.open()

    # -- shape -------------------------------------------------------------------------------------

    def test_every_store_satisfies_the_protocol_and_names_itself(
        self, kind: StoreKind, store: Store
    ) -> None:
        assert isinstance(store, Store)
        assert store.name == kind.name

    async def test_ping_answers(self, store: Store) -> None:
        await store.ping()

    async def test_aclose_is_idempotent(self, kind: StoreKind) -> None:
        store = kind.open("closing")
        await store.set(NS, "k", b"v", None)
        await store.aclose()
        await store.aclose()

    # -- get and set -------------------------------------------------------------------------------

    async def test_a_missing_key_reads_as_none(self, store: Store) -> None:
        assert await store.get(NS, "never-written") is None

    async def test_set_then_get_returns_the_exact_bytes(self, store: Store) -> None:
        blob = bytes(range(256)) * 256  # every byte value, 64 KiB
        await store.set(NS, "small", b"\x00v\xff", 60)
        await store.set(NS, "blob", blob, None)
        await store.set(NS, "empty", b"", None)
        assert await store.get(NS, "small") == b"\x00v\xff"
        assert await store.get(NS, "blob") == blob
        assert await store.get(NS, "empty") == b""

    async def test_set_overwrites_the_previous_entry(self, store: Store) -> None:
        await store.set(NS, "k", b"old", None)
        await store.set(NS, "k", b"new", None)
        assert await store.get(NS, "k") == b"new"

    async def test_one_key_in_two_namespaces_is_two_entries(self, store: Store) -> None:
        await store.set(NS, "k", b"here", None)
        await store.set(OTHER_NS, "k", b"there", None)
        assert await store.get(NS, "k") == b"here"
        assert await store.get(OTHER_NS, "k") == b"there"

    @pytest.mark.parametrize("key", ODD_KEYS, ids=range(len(ODD_KEYS)))
    async def test_unicode_and_odd_keys_round_trip_and_stay_apart(
        self, store: Store, key: str
    ) -> None:
        await store.set(NS, key, key.encode(), None)
        await store.set(NS, key + "-2", b"neighbour", None)
        assert await store.get(NS, key) == key.encode()
        assert await store.get_many(NS, [key]) == [key.encode()]
        assert await store.delete(NS, key) is True
        assert await store.get(NS, key) is None
        assert await store.get(NS, key + "-2") == b"neighbour"

    async def test_entries_are_shared_by_every_store_on_the_same_prefix(
        self, kind: StoreKind
    ) -> None:
        writer, reader = kind.open(), kind.open()
        await writer.set(NS, "shared", b"v", None)
        assert await reader.get(NS, "shared") == b"v"

    # -- batches -----------------------------------------------------------------------------------

    async def test_get_many_answers_in_order_with_none_where_absent(self, store: Store) -> None:
        await store.set(NS, "a", b"1", None)
        await store.set(NS, "c", b"3", None)
        assert await store.get_many(NS, ["c", "missing", "a", "c"]) == [b"3", None, b"1", b"3"]

    async def test_empty_batches_do_nothing(self, store: Store) -> None:
        assert await store.get_many(NS, []) == []
        await store.set_many(NS, [])
        assert await store.get(NS, "anything") is None

    async def test_set_many_stores_every_item_with_its_own_ttl(
        self, kind: StoreKind, store: Store
    ) -> None:
        await store.set_many(NS, [("short", b"s", 0.2), ("kept", b"k", None), ("long", b"l", 3600)])
        assert await store.get_many(NS, ["short", "kept", "long"]) == [b"s", b"k", b"l"]
        await kind.outlive(store, "short", 0.2)
        assert await store.get_many(NS, ["kept", "long"]) == [b"k", b"l"]

    # -- expiry ------------------------------------------------------------------------------------

    async def test_an_entry_expires_after_its_ttl_and_none_never_does(
        self, kind: StoreKind, store: Store
    ) -> None:
        await store.set(NS, "short", b"s", 0.2)
        await store.set(NS, "kept", b"k", None)
        assert await store.get(NS, "short") == b"s"
        await kind.outlive(store, "short", 0.2)
        assert await store.get(NS, "kept") == b"k"

    # -- add ---------------------------------------------------------------------------------------

    async def test_add_stores_only_where_no_entry_is_and_never_overwrites(
        self, store: Store
    ) -> None:
        assert await store.add(NS, "k", b"first", None) is True
        assert await store.add(NS, "k", b"second", None) is False
        assert await store.get(NS, "k") == b"first"
        await store.set(NS, "k", b"set wins", None)
        assert await store.get(NS, "k") == b"set wins"

    async def test_add_where_the_entry_expired_stores_the_new_one(
        self, kind: StoreKind, store: Store
    ) -> None:
        await store.set(NS, "k", b"old", 0.2)
        await kind.outlive(store, "k", 0.2)
        assert await store.add(NS, "k", b"new", None) is True
        assert await store.get(NS, "k") == b"new"

    async def test_concurrent_adds_of_one_key_store_exactly_one(self, store: Store) -> None:
        won = await asyncio.gather(*(store.add(NS, "k", b"%d" % n, None) for n in range(8)))
        assert won.count(True) == 1
        assert await store.get(NS, "k") == b"%d" % won.index(True)

    # -- delete, invalidate, clear -----------------------------------------------------------------

    async def test_delete_says_whether_something_was_removed(self, store: Store) -> None:
        await store.set(NS, "k", b"v", None)
        assert await store.delete(NS, "k") is True
        assert await store.get(NS, "k") is None
        assert await store.delete(NS, "k") is False
        assert await store.delete(NS, "never-written") is False
        assert await store.delete("never-used", "k") is False

    async def test_invalidate_hides_every_entry_of_that_namespace_only(self, store: Store) -> None:
        await store.set_many(NS, [(f"k{n}", b"old", None) for n in range(20)])
        await store.set(OTHER_NS, "k0", b"other", None)
        await store.invalidate(NS)
        assert await store.get_many(NS, [f"k{n}" for n in range(20)]) == [None] * 20
        assert await store.get(OTHER_NS, "k0") == b"other"
        await store.set(NS, "k0", b"new", None)  # the namespace works on after it
        assert await store.get(NS, "k0") == b"new"
        assert await store.add(NS, "k1", b"added", None) is True

    async def test_invalidate_of_an_unused_namespace_is_fine(self, store: Store) -> None:
        await store.invalidate("never-used")

    async def test_invalidate_is_seen_by_every_store_on_the_same_prefix(
        self, kind: StoreKind
    ) -> None:
        writer, other = kind.open(), kind.open()
        await writer.set(NS, "k", b"old", None)
        assert await other.get(NS, "k") == b"old"
        await writer.invalidate(NS)
        assert await other.get(NS, "k") is None

    async def test_clear_removes_this_prefix_and_leaves_other_prefixes(
        self, kind: StoreKind
    ) -> None:
        mine, foreign = kind.open("mine"), kind.open("foreign")
        await mine.set(NS, "k", b"mine", None)
        await mine.set(OTHER_NS, "k", b"mine too", None)
        await foreign.set(NS, "k", b"foreign", None)
        await mine.clear()
        assert await mine.get(NS, "k") is None
        assert await mine.get(OTHER_NS, "k") is None
        assert await foreign.get(NS, "k") == b"foreign"
        await mine.set(NS, "k", b"after", None)  # usable after a clear
        assert await mine.get(NS, "k") == b"after"

    async def test_clear_of_an_empty_store_is_fine(self, store: Store) -> None:
        await store.clear()
        await store.clear()
