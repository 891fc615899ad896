"""Memory hits of values nobody can mutate are one object decoded once; mutable ones are copies."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import msgspec
import pytest

from toolweaver_async import AsyncToolCache
from toolweaver_async._immutable import is_immutable


class Point(msgspec.Struct, frozen=True):
    x: int
    tags: tuple[str, ...]


class Box(msgspec.Struct, frozen=True):
    items: list[int]  # frozen, but holds a list a caller could change


class Mutable(msgspec.Struct):
    x: int


@dataclasses.dataclass(frozen=True)
class FrozenRow:
    name: str
    score: float


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        ("a string", None),
        (b"bytes", None),
        (12345678901234, None),
        (3.25, None),
        (True, None),
        ((1, 2, (3, "x")), tuple[int, int, tuple[int, str]]),
        (Point(1, ("a", "b")), Point),
        (FrozenRow("a", 1.5), FrozenRow),
    ],
)
async def test_an_immutable_value_is_decoded_once_and_shared(
    make_cache: Callable[..., AsyncToolCache], value: Any, type_: Any
) -> None:
    cache = make_cache(stores=("memory",))
    await cache.set("k", value)
    first = await cache.get("k", type=type_)
    second = await cache.get("k", type=type_)
    assert first == value
    assert second is first


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        ({"a": [1, 2]}, None),
        ([1, 2, 3], None),
        (Box([1, 2]), Box),
        (Mutable(1), Mutable),
    ],
)
async def test_a_mutable_value_is_a_fresh_copy_on_every_hit(
    make_cache: Callable[..., AsyncToolCache], value: Any, type_: Any
) -> None:
    cache = make_cache(stores=("memory",))
    await cache.set("k", value)
    first = await cache.get("k", type=type_)
    second = await cache.get("k", type=type_)
    assert first == second == value
    assert second is not first


async def test_mutating_a_result_never_changes_the_cache(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    cache = make_cache(stores=("memory",))
    await cache.set("k", {"a": [1]})
    (await cache.get("k"))["a"].append(2)
    assert await cache.get("k") == {"a": [1]}


async def test_a_rewrite_drops_the_shared_object(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    cache = make_cache(stores=("memory",))
    await cache.set("k", "old")
    assert await cache.get("k") == "old"
    await cache.set("k", "new")
    assert await cache.get("k") == "new"


def test_is_immutable_looks_inside_containers() -> None:
    assert is_immutable((1, ("a", None), frozenset({2})))
    assert not is_immutable((1, [2]))
    assert not is_immutable(Box([1]))
    assert is_immutable(Point(1, ("a",)))
    assert not is_immutable(Mutable(1))
