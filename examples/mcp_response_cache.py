"""MCP on toolweaver-async: clients share cached ``tools/list`` results through the chain.

    USE_REDIS=false python examples/mcp_response_cache.py
    USE_REDIS=true  python examples/mcp_response_cache.py

An in-process MCP server (the SDK's memory transport) marks ``tools/list`` cacheable for a
minute; two clients use ``ToolWeaverResponseCache`` as their store, so the server is asked once.
With Redis, clients in other processes share the entry as well.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from mcp.client import CacheConfig, Client
from mcp.client._memory import InMemoryTransport
from mcp.server.caching import CacheHint
from mcp.server.mcpserver import MCPServer

from toolweaver_async import AsyncToolCache
from toolweaver_async.integrations.mcp import ToolWeaverResponseCache


def make_server(asked: list[int]) -> MCPServer:
    server = MCPServer("weather", cache_hints={"tools/list": CacheHint(ttl_ms=60_000)})

    @server.tool()
    def forecast(city: str) -> str:
        """Tomorrow's weather for a city."""
        return f"sunny in {city}"

    listing = server.list_tools

    async def slow_listing() -> Any:
        asked.append(1)
        await asyncio.sleep(0.1)  # a remote server's round trip
        return await listing()

    server.list_tools = slow_listing  # type: ignore[method-assign]
    return server


async def main() -> None:
    cache = AsyncToolCache.from_env(key_prefix=f"example-{uuid.uuid4().hex[:8]}")
    async with cache:
        print(f"chain: {' + '.join(cache.config.enabled_stores)}")
        asked: list[int] = []
        server = make_server(asked)
        store = ToolWeaverResponseCache(cache)
        for name in ("client A", "client B"):
            config = CacheConfig(store=store, partition="user-1", target_id="weather-example")
            async with Client(InMemoryTransport(server), cache=config) as client:
                started = time.perf_counter()
                tools = await client.list_tools()
                took = (time.perf_counter() - started) * 1000
                print(f"{name}: tools {[t.name for t in tools.tools]} in {took:6.1f} ms")
        print(f"the server was asked for its tools {len(asked)} time(s)")
        await cache.clear()


if __name__ == "__main__":
    asyncio.run(main())
