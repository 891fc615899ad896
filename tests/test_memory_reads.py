"""The memory-hit path: private copies by default, one shared object with share_objects, and
the envelope checked once per entry (expiry before decoding, corruption and type mismatches
still counted)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import pytest

from toolweaver_async import AsyncToolCache, CacheConfig, NamespacePolicy
from toolweaver_async.testing import FakeClock


class Point(msgspec.Struct):
    x: int
    y: int


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def cache(cache_dir: Path, clock: FakeClock) -> Any:
    config = CacheConfig(
        cache_dir=cache_dir,
        stores=("memory",),
        namespaces={"shared": NamespacePolicy(ttl=60, share_objects=True)},
    )
    async with AsyncToolCache(config, clock=clock) as made:
        yield made


VALUE = {"tool": "search", "results": [{"id": 1, "tags": ["a"]}, {"id": 2, "tags": []}]}


async def test_default_mode_hands_every_caller_its_own_copy(cache: AsyncToolCache) -> None:
    await cache.set("k", VALUE)
    first = await cache.get("k")
    second = await cache.get("k")
    assert first == second == VALUE
    assert first is not second
    assert first["results"][0] is not second["results"][0]
    first["results"][0]["tags"].append("mutated")
    first["tool"] = "changed"
    assert await cache.get("k") == VALUE


async def test_share_objects_hands_every_caller_the_same_object(cache: AsyncToolCache) -> None:
    await cache.set("k", VALUE, namespace="shared")
    first = await cache.get("k", namespace="shared")
    second = await cache.get("k", namespace="shared")
    assert first == VALUE
    assert first is second
    # the documented trade-off: a caller that mutates it changes what the others see
    first["tool"] = "changed"
    assert (await cache.get("k", namespace="shared"))["tool"] == "changed"


async def test_share_objects_never_hands_out_the_object_given_to_set(cache: AsyncToolCache) -> None:
    value = {"n": [1, 2]}
    await cache.set("k", value, namespace="shared")
    value["n"].append(3)  # the writer keeps using its own object
    assert await cache.get("k", namespace="shared") == {"n": [1, 2]}


async def test_share_objects_shares_per_requested_type(cache: AsyncToolCache) -> None:
    await cache.set("p", {"x": 1, "y": 2}, namespace="shared")
    typed = await cache.get("p", namespace="shared", type=Point)
    assert typed == Point(1, 2)
    assert await cache.get("p", namespace="shared", type=Point) is typed
    plain = await cache.get("p", namespace="shared")
    assert plain == {"x": 1, "y": 2}
    assert await cache.get("p", namespace="shared") is plain


async def test_share_objects_recognises_a_type_expression_written_anew_each_call(
    cache: AsyncToolCache,
) -> None:
    await cache.set("emb", [0.5, 0.25], namespace="shared")
    first = await cache.get("emb", namespace="shared", type=list[float])
    assert first == [0.5, 0.25]
    assert await cache.get("emb", namespace="shared", type=list[float]) is first


async def test_a_new_write_replaces_the_shared_object(cache: AsyncToolCache) -> None:
    await cache.set("k", [1], namespace="shared")
    old = await cache.get("k", namespace="shared")
    await cache.set("k", [2], namespace="shared")
    new = await cache.get("k", namespace="shared")
    assert (old, new) == ([1], [2])
    await cache.delete("k", namespace="shared")
    assert await cache.get("k", namespace="shared") is None


async def test_memory_hit_past_its_ttl_is_a_miss(cache: AsyncToolCache, clock: FakeClock) -> None:
    await cache.set("k", "v", ttl=10)
    await cache.set("s", "v", namespace="shared")
    assert await cache.get("k") == "v"
    assert await cache.get("s", namespace="shared") == "v"
    clock.now += 10
    assert await cache.get("k") is None
    clock.now += 60
    assert await cache.get("s", namespace="shared") is None
    stats = cache.stats().overall
    assert (stats.hits["memory"], stats.misses) == (2, 2)


async def test_payload_of_the_wrong_type_is_a_counted_miss_and_stays(cache: AsyncToolCache) -> None:
    await cache.set("k", {"x": "not an int", "y": 2})
    assert await cache.get("k", type=Point, default="miss") == "miss"
    assert await cache.get("k") == {"x": "not an int", "y": 2}
    assert cache.stats().overall.type_mismatches == 1


async def test_bytes_that_are_not_this_keys_entry_are_removed_and_counted(
    cache: AsyncToolCache,
) -> None:
    memory = cache._memory
    assert memory is not None
    memory.put("default", "garbage", b"\x93not an entry", None)
    await cache.set("other", "v")
    memory.put("default", "stolen", memory.lookup("default", "other") or b"", None)
    assert await cache.get("garbage") is None
    assert await cache.get("stolen") is None
    assert memory.lookup("default", "garbage") is None
    assert memory.lookup("default", "stolen") is None
    assert cache.stats().overall.corrupt == 2


async def test_get_many_serves_memory_hits_with_the_same_rules(cache: AsyncToolCache) -> None:
    await cache.set_many({"a": [1], "b": [2]})
    await cache.set("c", [3], namespace="shared")
    got = await cache.get_many(["a", "b", "missing", "a"])
    assert got == {"a": [1], "b": [2]}
    assert got["a"] is not await cache.get("a")
    shared = await cache.get_many(["c"], namespace="shared")
    assert shared["c"] is await cache.get("c", namespace="shared")


async def test_a_str_subclass_key_and_an_unknown_namespace_take_the_slow_path_once(
    cache: AsyncToolCache,
) -> None:
    class Key(str):
        pass

    await cache.set("k", 1, namespace="fresh-ns")
    assert await cache.get(Key("k"), namespace="fresh-ns") == 1
    assert await cache.get("k", namespace="fresh-ns") == 1
