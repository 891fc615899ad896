"""ToolWeaverResponseCache under a real MCP client session (in-process server, the SDK's
memory transport), on every chain."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp.client.caching")

import mcp_types
from mcp.client import CacheConfig, CacheEntry, CacheKey, Client
from mcp.client._memory import InMemoryTransport
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

from toolweaver_async import AsyncToolCache
from toolweaver_async.integrations.mcp import ToolWeaverResponseCache

from ._adapter_chains import CHAINS, make_chain_cache


@pytest.fixture(params=list(CHAINS))
def chain(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def cache(chain: str, redis_url: str, tmp_path: Path) -> AsyncIterator[AsyncToolCache]:
    async with make_chain_cache(chain, redis_url, tmp_path) as made:
        yield made


def make_server(listed: list[int]) -> MCPServer:
    server = MCPServer("weather", cache_hints={"tools/list": CacheHint(ttl_ms=60_000)})

    @server.tool()
    def forecast(city: str) -> str:
        """Tomorrow's weather."""
        return f"sunny in {city}"

    original = server.list_tools

    async def counted() -> Any:
        listed.append(1)
        return await original()

    server.list_tools = counted  # type: ignore[method-assign]
    return server


def client_for(server: MCPServer, store: ToolWeaverResponseCache) -> Client:
    config = CacheConfig(store=store, partition="user-1", target_id="weather-test")
    return Client(InMemoryTransport(server), cache=config)


async def test_second_list_tools_is_served_from_our_store(cache: AsyncToolCache) -> None:
    listed: list[int] = []
    store = ToolWeaverResponseCache(cache)
    async with client_for(make_server(listed), store) as client:
        first = await client.list_tools()
        second = await client.list_tools()
    assert [t.name for t in first.tools] == ["forecast"]
    assert second == first
    assert listed == [1]  # the server answered once
    assert [k async for k in cache.keys(namespace="mcp")]  # the entry is ours


async def test_another_client_shares_the_cached_list(cache: AsyncToolCache) -> None:
    listed: list[int] = []
    server = make_server(listed)
    async with client_for(server, ToolWeaverResponseCache(cache)) as one:
        await one.list_tools()
    async with client_for(server, ToolWeaverResponseCache(cache)) as two:
        tools = await two.list_tools()
    assert [t.name for t in tools.tools] == ["forecast"]
    assert listed == [1]


async def test_store_round_trips_entries_and_honours_expiry_delete_and_clear(
    cache: AsyncToolCache,
) -> None:
    store = ToolWeaverResponseCache(cache)
    key = CacheKey("tools/list", "", "arm")
    result = mcp_types.ListToolsResult(tools=[], ttl_ms=5000)
    entry = CacheEntry(value=result, scope="private", expires_at=time.time() + 60)
    await store.set(key, entry)
    back = await store.get(key)
    assert back is not None
    assert back == entry
    assert type(back.value) is mcp_types.ListToolsResult
    assert back.value.model_fields_set == result.model_fields_set
    assert await store.get(CacheKey("tools/list", "", "other-arm")) is None
    await store.delete(key)
    assert await store.get(key) is None
    await store.set(key, CacheEntry(value=result, scope="public", expires_at=None))
    assert await store.get(key) is None  # never fresh: not kept
    await store.set(key, entry)
    await cache.set("keep", 1)
    await store.clear()
    assert await store.get(key) is None
    assert await cache.get("keep") == 1


async def test_an_entry_that_does_not_rebuild_is_a_miss(cache: AsyncToolCache) -> None:
    store = ToolWeaverResponseCache(cache)
    key = CacheKey("tools/list", "", "arm")
    await store.set(
        key,
        CacheEntry(
            value=mcp_types.ListToolsResult(tools=[]),
            scope="private",
            expires_at=time.time() + 60,
        ),
    )
    stored_key = next(iter([k async for k in cache.keys(namespace="mcp")]))
    broken = ["ListToolsResult", {"tools": "not a list"}, "private", 1e12]
    await cache.set(stored_key, broken, namespace="mcp")
    assert await store.get(key) is None
    await cache.set(stored_key, ["os.system", {}, "private", 1e12], namespace="mcp")
    assert await store.get(key) is None
