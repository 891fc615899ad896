"""Hostile input at the public API: cyclic and very deep values or arguments, names with a
trailing newline, odd key types. Each is a clear ``CacheError`` and nothing is written."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from toolweaver_async import (
    AsyncToolCache,
    ConfigError,
    InvalidKeyError,
    SerializationError,
    UnhashableArgumentsError,
    stable_hash,
)
from toolweaver_async.keys import check_key
from toolweaver_async.resilience.journal.ledger import JournalLedger
from toolweaver_async.resilience.missed_writes import MissedWrites
from toolweaver_async.stats_file import read_stats_file
from toolweaver_async.stores.worker_lane import WorkerLane


def _cyclic_list() -> list[Any]:
    value: list[Any] = []
    value.append(value)
    return value


def _cyclic_dict() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


def _deep(depth: int = 50_000) -> list[Any]:
    value: list[Any] = []
    for _ in range(depth):
        value = [value]
    return value


HOSTILE: list[Callable[[], Any]] = [_cyclic_list, _cyclic_dict, _deep]


def _entry_files(cache_dir: Path) -> list[str]:
    return [name for _, _, names in os.walk(cache_dir) for name in names]


@pytest.mark.parametrize("make_value", HOSTILE)
@pytest.mark.allow_blocking(reason="counts the entry files behind the cache's back")
async def test_a_cyclic_or_very_deep_value_is_a_serialization_error_and_writes_nothing(
    make_cache: Callable[..., AsyncToolCache], cache_dir: Path, make_value: Callable[[], Any]
) -> None:
    cache = make_cache()
    await cache.set("k", "older")
    with pytest.raises(SerializationError, match="'k'") as raised:
        await cache.set("k", make_value())
    assert raised.value.key == "k"
    with pytest.raises(SerializationError, match="'k3'"):
        await cache.set_many({"k2": "fine", "k3": make_value()})
    assert await cache.get("k") == "older"
    assert await cache.get("k2") is None
    assert len(_entry_files(cache_dir)) == 1


@pytest.mark.parametrize("make_value", HOSTILE)
async def test_a_loader_returning_a_cyclic_value_raises_serialization_error(
    make_cache: Callable[..., AsyncToolCache], make_value: Callable[[], Any]
) -> None:
    cache = make_cache()

    async def loader() -> Any:
        return make_value()

    with pytest.raises(SerializationError):
        await cache.get_or_set("k", loader)
    assert await cache.get("k") is None


@pytest.mark.parametrize("make_value", HOSTILE)
async def test_cyclic_or_deep_arguments_to_cached_are_unhashable_arguments_errors(
    make_cache: Callable[..., AsyncToolCache], make_value: Callable[[], Any]
) -> None:
    cache = make_cache()
    calls = 0

    @cache.cached(namespace="results")
    async def tool(args: Any) -> str:
        nonlocal calls
        calls += 1
        return "ran"

    with pytest.raises(UnhashableArgumentsError, match="tool"):
        await tool(make_value())
    assert calls == 0
    with pytest.raises(UnhashableArgumentsError):
        stable_hash(make_value())
    with pytest.raises(SerializationError):
        await cache.set_result("tool", make_value(), {"r": 1})


def test_a_deeply_nested_non_str_key_is_an_invalid_key_error() -> None:
    with pytest.raises(InvalidKeyError, match="list"):
        check_key(_deep())


def test_a_str_subclass_key_comes_back_as_a_plain_str() -> None:
    class Sneaky(str):
        def __str__(self) -> str:
            return "another key"

    checked = check_key(Sneaky("the key"))
    assert type(checked) is str
    assert checked == "the key"


@pytest.mark.parametrize("namespace", ["results\n", "results\r", "results\x00"])
async def test_a_namespace_with_a_trailing_newline_is_refused_everywhere(
    make_cache: Callable[..., AsyncToolCache], cache_dir: Path, namespace: str
) -> None:
    cache = make_cache()
    with pytest.raises(ConfigError):
        await cache.set("k", 1, namespace=namespace)
    with pytest.raises(ConfigError):
        await cache.get("k", namespace=namespace)
    with pytest.raises(ConfigError):
        await cache.invalidate(namespace)
    with pytest.raises(ConfigError):
        cache.cached(namespace=namespace)
    assert _entry_files(cache_dir) == []


async def test_a_key_that_cannot_be_encoded_is_blamed_not_the_value(
    make_cache: Callable[..., AsyncToolCache],
) -> None:
    cache = make_cache()
    with pytest.raises(SerializationError, match="key itself") as raised:
        await cache.set("bad\ud800", {"a": 1})
    assert "value of type" not in str(raised.value)
    assert raised.value.key == "bad\ud800"
    assert raised.value.value_type is None
    # the value is still blamed when it is the value that fails
    with pytest.raises(SerializationError, match="value of type str"):
        await cache.set("fine", "bad\ud800")


def test_bad_bounds_of_internal_parts_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="max_entries"):
        JournalLedger(max_entries=0, clock=lambda: 0.0)
    with pytest.raises(ConfigError, match="max_keys"):
        MissedWrites(max_keys=0)
    loop = asyncio.new_event_loop()
    try:
        with ThreadPoolExecutor(1) as pool, pytest.raises(ConfigError, match="deadline"):
            WorkerLane(loop, pool, deadline=0)
    finally:
        loop.close()


def test_a_stats_file_that_is_not_ours_is_a_config_error(tmp_path: Path) -> None:
    foreign = tmp_path / "stats.json"
    foreign.write_text("not json")
    with pytest.raises(ConfigError, match="not readable JSON"):
        read_stats_file(foreign)
    foreign.write_text('{"version": -1}')
    with pytest.raises(ConfigError, match="not a toolweaver-async stats file"):
        read_stats_file(foreign)
