"""@cache.cached: one call of the function per distinct arguments, stable keys, methods,
invalidate/uncached, and clear errors."""

from __future__ import annotations

import asyncio
import copy
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from toolweaver_async import (
    AsyncToolCache,
    CacheConfig,
    ConfigError,
    UnhashableArgumentsError,
)
from toolweaver_async.keys import function_key


@pytest.fixture
async def cache(cache_dir: Path, key_prefix: str, redis_url: str) -> AsyncIterator[AsyncToolCache]:
    async with AsyncToolCache(
        CacheConfig(use_redis=True, cache_dir=cache_dir, key_prefix=key_prefix, redis_url=redis_url)
    ) as made:
        yield made


@pytest.fixture
def memory_cache() -> AsyncToolCache:
    """No I/O: for key properties, which never touch a store."""
    return AsyncToolCache(CacheConfig(stores=("memory",)))


async def test_concurrent_equal_calls_run_the_function_once(cache: AsyncToolCache) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []
    gate = asyncio.Event()

    @cache.cached(namespace="results", ttl=60)
    async def run_tool(name: str, args: dict[str, Any], top_k: int = 5) -> dict[str, Any]:
        calls.append((name, args))
        await gate.wait()
        return {"tool": name, "hits": top_k}

    callers = [
        asyncio.create_task(run_tool("search", {"q": "receipts", "lang": "en"})) for _ in range(500)
    ] + [
        asyncio.create_task(run_tool(args={"lang": "en", "q": "receipts"}, name="search", top_k=5))
        for _ in range(500)
    ]
    deadline = time.monotonic() + 5
    while not calls:  # the first caller reads Redis, takes the lock, then calls the function
        assert time.monotonic() < deadline
        await asyncio.sleep(0.001)
    gate.set()
    results = await asyncio.wait_for(asyncio.gather(*callers), 5)
    assert len(calls) == 1
    assert all(r == {"tool": "search", "hits": 5} for r in results)
    assert await run_tool("search", {"q": "other"}) == {"tool": "search", "hits": 5}
    assert len(calls) == 2


async def test_invalidate_forgets_one_call_and_uncached_bypasses_the_cache(
    cache: AsyncToolCache,
) -> None:
    calls = 0

    @cache.cached(namespace="results")
    async def count(x: int) -> int:
        nonlocal calls
        calls += 1
        return calls

    assert await count(1) == 1
    assert await count(1) == 1
    assert await count(2) == 2
    assert await count.invalidate(1) is True
    assert await count.invalidate(1) is False
    assert await count(1) == 3
    assert await count(2) == 2  # other arguments untouched
    assert await count.uncached(2) == 4  # runs, and writes nothing
    assert await count(2) == 2


async def test_key_builder_overrides_the_default_key(cache: AsyncToolCache) -> None:
    @cache.cached(namespace="results", key=lambda user, request_id: f"user:{user}")
    async def profile(user: str, request_id: int) -> dict[str, Any]:
        return {"user": user, "request": request_id}

    assert profile.key_for("ann", 1) == "user:ann"
    assert await profile("ann", 1) == {"user": "ann", "request": 1}
    assert await profile("ann", 2) == {"user": "ann", "request": 1}  # request_id not in the key
    assert await cache.get("user:ann", namespace="results") == {"user": "ann", "request": 1}


async def test_unhashable_arguments_are_a_clear_error_naming_the_function(
    cache: AsyncToolCache,
) -> None:
    @cache.cached()
    async def embed(text: Any) -> list[float]:
        return [0.0]

    with pytest.raises(UnhashableArgumentsError, match=r"embed.*object.*key="):
        await embed(object())


def test_sync_functions_are_refused(memory_cache: AsyncToolCache) -> None:
    def plain(x: int) -> int:
        return x

    with pytest.raises(ConfigError, match="async functions"):
        memory_cache.cached()(plain)  # type: ignore[arg-type]


def test_wrapper_keeps_the_functions_name_and_docs(memory_cache: AsyncToolCache) -> None:
    async def lookup(tool: str) -> str:
        """Find a tool."""
        return tool

    wrapped = memory_cache.cached()(lookup)
    assert wrapped.__name__ == "lookup"
    assert wrapped.__doc__ == "Find a tool."
    assert wrapped.__wrapped__ is lookup  # type: ignore[attr-defined]


# -- methods -------------------------------------------------------------------------------------


def define_clients(cache: AsyncToolCache) -> tuple[type[Any], type[Any]]:
    class Search:
        calls = 0

        @cache.cached(namespace="search")
        async def query(self, text: str, top_k: int = 3) -> list[str]:
            type(self).calls += 1
            return [text] * top_k

        @classmethod
        @cache.cached(namespace="search")
        async def version(cls) -> str:
            cls.calls += 1
            return cls.__name__

    class FuzzySearch(Search):
        calls = 0

    return Search, FuzzySearch


async def test_methods_leave_self_out_of_the_key_and_name_the_class(cache: AsyncToolCache) -> None:
    search_class, fuzzy_class = define_clients(cache)
    first, second, fuzzy = search_class(), search_class(), fuzzy_class()
    assert await first.query("q") == ["q", "q", "q"]
    assert await second.query("q", top_k=3) == ["q", "q", "q"]
    assert search_class.calls == 1  # another instance of the class shares the result
    assert first.query.key_for("q") == second.query.key_for(text="q")
    assert ".Search.query:" in first.query.key_for("q")
    assert await fuzzy.query("q") == ["q", "q", "q"]
    assert fuzzy_class.calls == 1  # a subclass has its own entries
    assert fuzzy.query.key_for("q") != first.query.key_for("q")
    assert await first.query.invalidate("q") is True
    await second.query("q")
    assert search_class.calls == 2
    assert await first.query.uncached("z", top_k=1) == ["z"]
    assert search_class.calls == 3
    assert await search_class.query(first, "q") == ["q", "q", "q"]  # through the class
    assert search_class.calls == 3


async def test_classmethods_key_by_their_class(cache: AsyncToolCache) -> None:
    search_class, fuzzy_class = define_clients(cache)
    assert await search_class.version() == "Search"
    assert await search_class.version() == "Search"
    assert await fuzzy_class.version() == "FuzzySearch"
    assert (search_class.calls, fuzzy_class.calls) == (1, 1)


# -- keys ----------------------------------------------------------------------------------------

values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=8)
    | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    ),
    max_leaves=10,
)


def reorder(value: Any) -> Any:
    """An equal copy with every dict's insertion order reversed."""
    if isinstance(value, dict):
        return {k: reorder(value[k]) for k in reversed(list(value))}
    if isinstance(value, list):
        return [reorder(v) for v in value]
    return copy.copy(value)


async def tool(query: Any, options: Any = None, *extra: Any, **flags: Any) -> Any:
    return query


async def plain_tool(query: Any, options: Any = None, top_k: Any = 5) -> Any:
    return query


@settings(max_examples=300, deadline=None)
@given(
    st.lists(values, max_size=4),
    st.dictionaries(st.sampled_from(["query", "options", "top_k", "other"]), values, max_size=3),
)
def test_plain_signatures_key_like_function_key(args: list[Any], kwargs: dict[str, Any]) -> None:
    """The fast binding of plain signatures gives the documented key, or falls back."""
    cached = AsyncToolCache(CacheConfig(stores=("memory",))).cached()(plain_tool)
    assert cached.key_for(*args, **kwargs) == function_key(plain_tool, tuple(args), kwargs)


@settings(max_examples=300, deadline=None)
@given(values, values, st.dictionaries(st.sampled_from("abcdef"), values, max_size=4))
def test_equal_arguments_give_equal_keys(query: Any, options: Any, flags: dict[str, Any]) -> None:
    cached = AsyncToolCache(CacheConfig(stores=("memory",))).cached()(tool)
    key = cached.key_for(query, options, **flags)
    assert cached.key_for(reorder(query), options=reorder(options), **reorder(flags)) == key
    assert key == function_key(tool, (query, options), flags)  # the documented key shape


@settings(max_examples=300, deadline=None)
@given(values, values, values, values)
def test_different_arguments_give_different_keys(a: Any, b: Any, c: Any, d: Any) -> None:
    cached = AsyncToolCache(CacheConfig(stores=("memory",))).cached()(tool)
    if (a, b) != (c, d) or _types(a, b) != _types(c, d):
        assert cached.key_for(a, b) != cached.key_for(c, d)
    else:
        assert cached.key_for(a, b) == cached.key_for(c, d)


def _types(*items: Any) -> Any:
    """The shape of a value with its scalar types: ``1``, ``1.0`` and ``True`` compare equal
    in Python but are different arguments to a tool, and get different keys."""
    out = []
    for item in items:
        if isinstance(item, dict):
            out.append(("d", sorted((k, _types(v)) for k, v in item.items())))
        elif isinstance(item, list):
            out.append(("l", [_types(v) for v in item]))
        else:
            out.append((type(item).__name__, repr(item)))
    return out


def test_default_arguments_and_keyword_order_do_not_change_the_key(
    memory_cache: AsyncToolCache,
) -> None:
    cached = memory_cache.cached()(tool)
    assert cached.key_for("q") == cached.key_for("q", None) == cached.key_for(query="q")
    assert cached.key_for("q", x=1, y=2) == cached.key_for("q", y=2, x=1)
    assert cached.key_for("q", None, 1) != cached.key_for("q", None)
    assert cached.key_for("q").startswith(f"{__name__}.tool:")
