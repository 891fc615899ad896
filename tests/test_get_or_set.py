"""get_or_set: one loader per key in a process and across caches sharing Redis; stale-while-
revalidate, early refresh, TTL jitter and negative caching, over a real redis-server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
import redis.asyncio as aioredis

from toolweaver_async import (
    AsyncToolCache,
    CacheConfig,
    CacheError,
    ConfigError,
    InvalidTTLError,
    NamespacePolicy,
)
from toolweaver_async.stores.file import FileStore
from toolweaver_async.stores.memory import MemoryStore
from toolweaver_async.stores.redis import RedisStore
from toolweaver_async.testing import FakeClock

from .polling import eventually

MakeCache = Callable[..., AsyncToolCache]
T = TypeVar("T")


class Draws:
    """An injectable ``random()`` whose next values the test chooses."""

    def __init__(self, value: float = 0.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


class GatedLoader:
    """A loader that counts its calls and returns only when the test opens the gate."""

    def __init__(self, value: Any = "value", error: Exception | None = None) -> None:
        self.value = value
        self.error = error
        self.calls = 0
        self.started = asyncio.Event()
        self.gate = asyncio.Event()
        self.cancelled = asyncio.Event()

    async def __call__(self) -> Any:
        self.calls += 1
        self.started.set()
        try:
            await self.gate.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        if self.error is not None:
            raise self.error
        return self.value


def holds(
    cache: AsyncToolCache, key: str, value: Any, namespace: str
) -> Callable[[], Awaitable[bool]]:
    """A check for :func:`eventually`: ``key`` reads as ``value``."""

    async def check() -> bool:
        return bool(await cache.get(key, namespace=namespace) == value)

    return check


async def within(awaitable: Awaitable[T], seconds: float = 5.0) -> T:
    """``await awaitable``, failing the test instead of hanging the suite on a bug."""
    return await asyncio.wait_for(awaitable, seconds)


async def let_tasks_start() -> None:
    """A few loop turns: every task created so far has run up to its first real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


CHAINS = {
    "memory-only": {"stores": ("memory",)},
    "embedded": {"use_redis": False},
    "full": {"use_redis": True},
    "redis-only": {"use_redis": True, "stores": ("redis",)},
}

# -- one loader per key in one process -----------------------------------------------------------


@pytest.mark.parametrize("chain", CHAINS)
async def test_thousand_concurrent_callers_run_the_loader_once(
    make_cache: MakeCache, chain: str
) -> None:
    cache = make_cache(**CHAINS[chain])
    loader = GatedLoader({"embedding": [0.5, 0.25]})
    callers = [asyncio.create_task(cache.get_or_set("q", loader)) for _ in range(1000)]
    await within(loader.started.wait())
    await let_tasks_start()
    loader.gate.set()
    results = await within(asyncio.gather(*callers))
    assert loader.calls == 1
    assert all(r == {"embedding": [0.5, 0.25]} for r in results)
    stats = cache.stats().overall
    assert (stats.loader_calls, stats.misses, stats.coalesced) == (1, 1, 999)
    assert await cache.get_or_set("q", loader) == {"embedding": [0.5, 0.25]}
    assert loader.calls == 1


async def test_loader_exception_reaches_every_waiter_and_the_next_call_retries(
    make_cache: MakeCache,
) -> None:
    cache = make_cache(use_redis=True)
    failing = GatedLoader(error=RuntimeError("search API down"))
    callers = [asyncio.create_task(cache.get_or_set("q", failing)) for _ in range(50)]
    await within(failing.started.wait())
    await let_tasks_start()
    failing.gate.set()
    outcomes = await within(asyncio.gather(*callers, return_exceptions=True))
    assert failing.calls == 1
    assert all(isinstance(o, RuntimeError) and str(o) == "search API down" for o in outcomes)
    assert len({id(o) for o in outcomes}) == 1  # the same exception, not fifty
    assert cache.stats().overall.loader_errors == 1
    # not cached: the next call runs a loader again
    working = GatedLoader("ok")
    working.gate.set()
    assert await cache.get_or_set("q", working) == "ok"
    assert working.calls == 1


async def test_cancelling_the_first_caller_leaves_the_loader_running_for_the_others(
    make_cache: MakeCache,
) -> None:
    cache = make_cache(stores=("memory",))
    loader = GatedLoader("v")
    first = asyncio.create_task(cache.get_or_set("k", loader))
    await within(loader.started.wait())
    others = [asyncio.create_task(cache.get_or_set("k", loader)) for _ in range(3)]
    await let_tasks_start()
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(first)
    assert not loader.cancelled.is_set()
    loader.gate.set()
    assert await within(asyncio.gather(*others)) == ["v", "v", "v"]
    assert loader.calls == 1
    assert await cache.get("k") == "v"


async def test_loader_is_cancelled_once_no_caller_waits_and_a_new_call_starts_afresh(
    make_cache: MakeCache,
) -> None:
    cache = make_cache(stores=("memory",))
    loader = GatedLoader("v")
    callers = [asyncio.create_task(cache.get_or_set("k", loader)) for _ in range(3)]
    await within(loader.started.wait())
    for caller in callers:
        caller.cancel()
    await within(asyncio.gather(*callers, return_exceptions=True))
    await asyncio.wait_for(loader.cancelled.wait(), 1.0)
    fresh = GatedLoader("w")
    fresh.gate.set()
    assert await cache.get_or_set("k", fresh) == "w"
    assert (loader.calls, fresh.calls) == (1, 1)


async def test_closing_the_cache_cancels_a_load_and_tells_its_callers(
    make_cache: MakeCache,
) -> None:
    cache = make_cache(stores=("memory",))
    loader = GatedLoader("v")
    caller = asyncio.create_task(cache.get_or_set("k", loader))
    await within(loader.started.wait())
    await cache.aclose()
    with pytest.raises(CacheError, match="cancelled"):
        await within(caller)
    assert loader.cancelled.is_set()


async def test_bad_options_are_refused_before_the_loader_runs(make_cache: MakeCache) -> None:
    cache = make_cache(stores=("memory",))
    loader = GatedLoader()
    with pytest.raises(InvalidTTLError):
        await cache.get_or_set("k", loader, ttl=0)
    with pytest.raises(ConfigError):
        await cache.get_or_set("k", loader, lock_ttl=0)
    with pytest.raises(ConfigError):
        await cache.get_or_set("k", loader, lock_timeout=-1)
    assert loader.calls == 0


# -- stale-while-revalidate, early refresh, jitter, negative caching ------------------------------

SWR = {"swr": NamespacePolicy(ttl=10, stale_ttl=60)}


@pytest.mark.parametrize("chain", ["memory-only", "full", "redis-only"])
async def test_stale_entry_is_served_while_exactly_one_refresh_runs(
    make_cache: MakeCache, clock: FakeClock, chain: str
) -> None:
    cache = make_cache(namespaces=SWR, **CHAINS[chain])
    first = GatedLoader("old")
    first.gate.set()
    assert await cache.get_or_set("k", first, namespace="swr") == "old"
    clock.advance(11)  # past the TTL, inside the grace period
    refresh = GatedLoader("new")
    served = await asyncio.wait_for(
        asyncio.gather(*(cache.get_or_set("k", refresh, namespace="swr") for _ in range(20))),
        1.0,
    )
    assert served == ["old"] * 20
    await within(refresh.started.wait())
    assert refresh.calls == 1
    assert cache.stats().overall.stale_served == 20
    refresh.gate.set()
    await eventually(holds(cache, "k", "new", "swr"))
    assert await cache.get_or_set("k", refresh, namespace="swr") == "new"
    assert refresh.calls == 1


async def test_a_fresh_value_from_redis_replaces_a_stale_copy_in_memory(
    make_cache: MakeCache, clock: FakeClock
) -> None:
    # coherence off: this is about the refresh; with it on, "old" would live 1 s in memory
    ours = make_cache(
        namespaces=SWR, use_redis=True, stores=("memory", "redis"), coherence_window=None
    )
    theirs = make_cache(namespaces=SWR, use_redis=True, stores=("memory", "redis"))
    old = GatedLoader("old")
    old.gate.set()
    await ours.get_or_set("k", old, namespace="swr")
    clock.advance(11)
    await theirs.set("k", "new", namespace="swr")  # another process refreshed it
    never = GatedLoader("never")
    assert await ours.get_or_set("k", never, namespace="swr") == "old"  # stale, from memory

    async def serves_theirs() -> bool:
        return bool(await ours.get_or_set("k", never, namespace="swr") == "new")

    # our refresh finds their value under the lock and must not leave the stale copy in front
    await eventually(serves_theirs)
    assert never.calls == 0


async def test_entry_past_its_grace_period_is_loaded_in_the_foreground(
    make_cache: MakeCache, clock: FakeClock
) -> None:
    cache = make_cache(namespaces=SWR, use_redis=True)
    old = GatedLoader("old")
    old.gate.set()
    await cache.get_or_set("k", old, namespace="swr")
    clock.advance(71)
    new = GatedLoader("new")
    new.gate.set()
    assert await cache.get_or_set("k", new, namespace="swr") == "new"
    assert cache.stats().overall.stale_served == 0


async def test_failed_refresh_is_counted_logged_once_and_never_raised(
    make_cache: MakeCache, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(namespaces=SWR, stores=("memory",))
    first = GatedLoader("old")
    first.gate.set()
    await cache.get_or_set("k", first, namespace="swr")
    clock.advance(11)
    broken = GatedLoader(error=RuntimeError("upstream 503"))
    broken.gate.set()
    caplog.set_level(logging.WARNING, logger="toolweaver_async.cache")
    for attempt in range(1, 4):
        assert await cache.get_or_set("k", broken, namespace="swr") == "old"
        await eventually(lambda n=attempt: cache.stats().overall.loader_errors == n)
    refresh_logs = [r for r in caplog.records if "background refresh" in r.getMessage()]
    assert len(refresh_logs) == 1
    assert "upstream 503" in refresh_logs[0].getMessage()


async def test_early_refresh_renews_a_hot_key_shortly_before_it_expires(
    make_cache: MakeCache, clock: FakeClock
) -> None:
    draws = Draws()
    cache = make_cache(
        namespaces={"hot": NamespacePolicy(ttl=100, early_refresh_beta=1.0)},
        stores=("memory",),
        random=draws,
    )

    async def slow_load() -> str:
        await asyncio.sleep(0.05)  # XFetch scales its window with the loader's duration
        return "v1"

    await cache.get_or_set("k", slow_load, namespace="hot")
    refresh = GatedLoader("v2")
    refresh.gate.set()
    draws.value = 1 - 1e-9  # the most eager draw: a window of ~20 loader durations
    clock.advance(50)
    assert await cache.get_or_set("k", refresh, namespace="hot") == "v1"
    clock.advance(49.5)  # half a second before expiry
    draws.value = 0.0  # the laziest draw never refreshes early
    assert await cache.get_or_set("k", refresh, namespace="hot") == "v1"
    await let_tasks_start()
    assert refresh.calls == 0
    draws.value = 1 - 1e-9
    assert await cache.get_or_set("k", refresh, namespace="hot") == "v1"  # served at once
    await eventually(lambda: refresh.calls == 1)
    await eventually(holds(cache, "k", "v2", "hot"))


async def test_ttl_jitter_shortens_the_ttl_by_a_random_fraction(
    make_cache: MakeCache, clock: FakeClock
) -> None:
    cache = make_cache(
        namespaces={"jit": NamespacePolicy(ttl=100, ttl_jitter=0.2)},
        use_redis=True,
        random=Draws(0.5),
    )
    await cache.set("k", "v", namespace="jit")  # fresh for 100 * (1 - 0.2 * 0.5) = 90 s
    await cache.set("k", "v")  # the default namespace has no jitter
    clock.advance(89)
    assert await cache.get("k", namespace="jit") == "v"
    clock.advance(2)
    assert await cache.get("k", namespace="jit") is None
    assert await cache.get("k") == "v"


async def test_negative_ttl_remembers_a_failure_for_that_long_only(
    make_cache: MakeCache, clock: FakeClock
) -> None:
    cache = make_cache(namespaces={"neg": NamespacePolicy(negative_ttl=5)}, use_redis=True)
    failing = GatedLoader(error=LookupError("no such tool"))
    failing.gate.set()
    for _ in range(3):
        with pytest.raises(LookupError, match="no such tool"):
            await cache.get_or_set("k", failing, namespace="neg")
    assert failing.calls == 1
    clock.advance(6)
    with pytest.raises(LookupError):
        await cache.get_or_set("k", failing, namespace="neg")
    assert failing.calls == 2


@pytest.mark.parametrize("how", ["delete", "invalidate", "clear"])
async def test_delete_invalidate_and_clear_forget_a_remembered_failure(
    make_cache: MakeCache, how: str
) -> None:
    cache = make_cache(namespaces={"neg": NamespacePolicy(negative_ttl=60)})
    failing = GatedLoader(error=LookupError("no such tool"))
    failing.gate.set()
    with pytest.raises(LookupError):
        await cache.get_or_set("k", failing, namespace="neg")
    with pytest.raises(LookupError):
        await cache.get_or_set("k", failing, namespace="neg")
    assert failing.calls == 1
    if how == "delete":
        await cache.delete("k", namespace="neg")
    elif how == "invalidate":
        await cache.invalidate("neg")
    else:
        await cache.clear()

    async def works() -> str:
        return "found"

    assert await cache.get_or_set("k", works, namespace="neg") == "found"


async def test_loaded_value_is_in_every_store_once_the_cache_is_closed(
    make_cache: MakeCache,
) -> None:
    cache = make_cache(use_redis=True)

    async def load() -> dict[str, int]:
        return {"v": 1}

    assert await cache.get_or_set("k", load) == {"v": 1}
    assert await cache.get("k") == {"v": 1}  # memory has it at once
    await cache.aclose()  # the writes to Redis and files land before the stores close
    assert await make_cache(use_redis=True, stores=("redis",)).get("k") == {"v": 1}
    assert await make_cache(stores=("file",)).get("k") == {"v": 1}


class FirstWriteWaits(FileStore):
    """A real file store whose first write waits for the test's go-ahead."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.go_ahead = asyncio.Event()
        self.first_write_started = asyncio.Event()

    async def set(self, namespace: str, key: str, data: bytes, ttl: float | None) -> None:
        if not self.first_write_started.is_set():
            self.first_write_started.set()
            await self.go_ahead.wait()
        await super().set(namespace, key, data, ttl)


@pytest.mark.parametrize("then", ["set", "delete", "clear"])
async def test_a_later_write_is_never_overtaken_by_a_loaded_value_still_landing(
    cache_dir: Path, key_prefix: str, then: str
) -> None:
    files = FirstWriteWaits(root=cache_dir, key_prefix=key_prefix)
    cache = AsyncToolCache(stores=[MemoryStore(), files])

    async def load() -> str:
        return "loaded"

    try:
        assert await cache.get_or_set("k", load) == "loaded"  # its file write is held
        await files.first_write_started.wait()
        if then == "set":
            later = asyncio.create_task(cache.set("k", "newer"))
        elif then == "delete":
            later = asyncio.create_task(cache.delete("k"))
        else:
            later = asyncio.create_task(cache.clear())
        # Were the later call not ordered behind the landing write, it would be done well
        # within this bounded wait, and the held "loaded" write would then land over it.
        await asyncio.wait({later}, timeout=0.3)
        files.go_ahead.set()
        await later
    finally:
        files.go_ahead.set()
        await cache.aclose()  # every write has landed once it returns
    expected = {"set": "newer", "delete": None, "clear": None}[then]
    reader = AsyncToolCache(stores=[FileStore(root=cache_dir, key_prefix=key_prefix)])
    assert await reader.get("k") == expected
    await reader.aclose()


# -- across processes: the Redis lock ------------------------------------------------------------


def lock_key(prefix: str, key: str, namespace: str = "default") -> str:
    return f"{prefix}:!lock:{namespace}:{key}"


async def test_loader_runs_under_a_redis_lock_unless_lock_is_false(
    make_cache: MakeCache, raw_redis: aioredis.Redis, key_prefix: str
) -> None:
    cache = make_cache(use_redis=True)
    seen: dict[str, int] = {}

    def loader_for(key: str) -> Callable[[], Awaitable[str]]:
        async def load() -> str:
            seen[key] = await raw_redis.exists(lock_key(key_prefix, key))
            return key

        return load

    await cache.get_or_set("locked", loader_for("locked"))
    await cache.get_or_set("unlocked", loader_for("unlocked"), lock=False)
    assert seen == {"locked": 1, "unlocked": 0}

    async def released() -> bool:
        return await raw_redis.exists(lock_key(key_prefix, "locked")) == 0

    await eventually(released)


async def test_second_cache_waits_for_the_lock_holders_value_instead_of_loading(
    make_cache: MakeCache,
) -> None:
    holder = make_cache(use_redis=True, stores=("memory", "redis"))
    waiter = make_cache(use_redis=True, stores=("memory", "redis"))
    slow = GatedLoader("from the holder")
    holding = asyncio.create_task(holder.get_or_set("k", slow))
    await within(slow.started.wait())
    other = GatedLoader("from the waiter")
    other.gate.set()
    waiting = asyncio.create_task(waiter.get_or_set("k", other))
    await asyncio.sleep(0.03)  # the waiter polls a few times while the holder loads
    assert not waiting.done()
    slow.gate.set()
    assert await within(holding) == "from the holder"
    assert await asyncio.wait_for(waiting, 1.0) == "from the holder"
    assert other.calls == 0


async def test_a_long_loader_keeps_its_lock_past_lock_ttl(make_cache: MakeCache) -> None:
    holder = make_cache(use_redis=True, stores=("memory", "redis"))
    waiter = make_cache(use_redis=True, stores=("memory", "redis"))
    slow = GatedLoader("held")
    holding = asyncio.create_task(holder.get_or_set("k", slow, lock_ttl=0.1))
    await within(slow.started.wait())
    other = GatedLoader("duplicate")
    other.gate.set()
    waiting = asyncio.create_task(waiter.get_or_set("k", other))
    await asyncio.sleep(0.4)  # four lock lifetimes: only extensions keep it
    slow.gate.set()
    assert await within(holding) == "held"
    assert await asyncio.wait_for(waiting, 1.0) == "held"
    assert other.calls == 0


async def test_lock_left_by_a_dead_holder_is_taken_over_after_its_ttl(
    make_cache: MakeCache, redis_url: str, key_prefix: str
) -> None:
    dead = RedisStore(url=redis_url, key_prefix=key_prefix)
    try:
        assert await dead.lock("default", "k", ttl=0.3).acquire()  # never released
    finally:
        await dead.aclose()
    cache = make_cache(use_redis=True)
    loader = GatedLoader("loaded here")
    loader.gate.set()
    started = time.monotonic()
    assert await cache.get_or_set("k", loader) == "loaded here"
    elapsed = time.monotonic() - started
    assert loader.calls == 1
    assert 0.25 <= elapsed < 1.0


async def test_waiter_loads_itself_after_lock_timeout_when_the_holder_is_stuck(
    make_cache: MakeCache, redis_url: str, key_prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    stuck = RedisStore(url=redis_url, key_prefix=key_prefix)
    try:
        assert await stuck.lock("default", "k", ttl=30).acquire()
        cache = make_cache(use_redis=True)
        loader = GatedLoader("loaded here")
        loader.gate.set()
        started = time.monotonic()
        assert await cache.get_or_set("k", loader, lock_timeout=0.2) == "loaded here"
        assert 0.2 <= time.monotonic() - started < 1.0
        assert loader.calls == 1
        assert "loading it here" in caplog.text
    finally:
        await stuck.aclose()


async def test_without_a_reachable_redis_callers_still_share_one_load(
    make_cache: MakeCache, free_port: Callable[[], int]
) -> None:
    cache = make_cache(use_redis=True, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    loader = GatedLoader("v")
    callers = [asyncio.create_task(cache.get_or_set("k", loader)) for _ in range(200)]
    await asyncio.wait_for(loader.started.wait(), 1.0)  # no waiting on a lock nobody can hold
    await let_tasks_start()
    loader.gate.set()
    assert await asyncio.wait_for(asyncio.gather(*callers), 1.0) == ["v"] * 200
    assert loader.calls == 1


async def test_redis_lock_is_released_and_extended_only_by_its_holder(
    redis_url: str, key_prefix: str, raw_redis: aioredis.Redis
) -> None:
    store = RedisStore(url=redis_url, key_prefix=key_prefix)
    try:
        mine = store.lock("default", "k", ttl=5)
        theirs = store.lock("default", "k", ttl=5)
        assert await mine.acquire()
        assert not await theirs.acquire()
        assert not await theirs.release()
        assert not await theirs.extend()
        assert await raw_redis.get(lock_key(key_prefix, "k")) == mine.token.encode()
        await raw_redis.pexpire(lock_key(key_prefix, "k"), 1000)
        assert await mine.extend()
        assert await raw_redis.pttl(lock_key(key_prefix, "k")) > 4000
        assert await mine.release()
        assert await raw_redis.exists(lock_key(key_prefix, "k")) == 0
        assert not await mine.release()
    finally:
        await store.aclose()


async def test_lock_keys_never_collide_with_entries_and_clear_removes_them(
    make_cache: MakeCache, redis_url: str, key_prefix: str, raw_redis: aioredis.Redis
) -> None:
    cache = make_cache(use_redis=True, stores=("redis",))
    # An entry of namespace "lock" (generation 0) lives at <prefix>:lock:0:k, where a lock
    # shaped <prefix>:lock:<namespace>:<key> on key "k" of namespace "0" would land.
    await cache.set("k", "entry", namespace="lock")
    store = RedisStore(url=redis_url, key_prefix=key_prefix)
    try:
        assert await store.lock("0", "k", ttl=5).acquire()
        assert await cache.get("k", namespace="lock") == "entry"
        assert await raw_redis.exists(lock_key(key_prefix, "k", "0")) == 1
        await cache.clear()
        assert await raw_redis.exists(lock_key(key_prefix, "k", "0")) == 0
    finally:
        await store.aclose()


async def test_lock_winner_looks_again_before_loading(
    make_cache: MakeCache, redis_url: str, key_prefix: str, clock: FakeClock
) -> None:
    other_process = make_cache(use_redis=True, stores=("memory", "redis"))
    first_loader = GatedLoader("loaded elsewhere")
    first_loader.gate.set()

    class OtherLoadsRightAfterOurRead(RedisStore):
        """Our first read misses; the other process then loads, stores and releases the lock
        before we ask for it."""

        interleaved = False

        async def get(self, namespace: str, key: str) -> bytes | None:
            data = await super().get(namespace, key)
            if not self.interleaved:
                self.interleaved = True
                await other_process.get_or_set(key, first_loader, namespace=namespace)
            return data

    store = OtherLoadsRightAfterOurRead(url=redis_url, key_prefix=key_prefix)
    config = CacheConfig(use_redis=True, redis_url=redis_url, key_prefix=key_prefix)
    async with AsyncToolCache(config, stores=[MemoryStore(clock=clock), store], clock=clock) as us:
        ours = GatedLoader("loaded twice")
        ours.gate.set()
        assert await us.get_or_set("k", ours) == "loaded elsewhere"
    assert (first_loader.calls, ours.calls) == (1, 0)


@pytest.mark.parametrize("chain", ["embedded", "full", "redis-only"])
async def test_a_get_or_set_served_by_a_slower_store_counts_one_hit(
    make_cache: MakeCache, chain: str
) -> None:
    writer = make_cache(**CHAINS[chain])
    await writer.set("q", [1, 2])
    reader = make_cache(
        **CHAINS[chain]
    )  # its memory layer (if any) is empty: a slower store answers

    async def loader() -> list[int]:
        raise AssertionError("the cached value must be served")

    assert await reader.get_or_set("q", loader) == [1, 2]
    hits = reader.stats().overall.hits
    assert sum(hits.values()) == 1, hits
