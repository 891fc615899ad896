"""LangGraph on toolweaver-async: a cached node runs once for identical inputs.

    USE_REDIS=false python examples/langgraph_node_cache.py
    USE_REDIS=true  python examples/langgraph_node_cache.py

The graph is compiled with ``cache=ToolWeaverNodeCache(cache)``; the node's ``CachePolicy``
gives the TTL. With Redis, another process running the same graph gets the cached result too.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import TypedDict

from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy

from toolweaver_async import AsyncToolCache
from toolweaver_async.integrations.langgraph import ToolWeaverNodeCache


class State(TypedDict):
    city: str
    forecast: str


runs = 0


async def fetch_forecast(state: State) -> dict[str, str]:
    """A slow tool call (300 ms)."""
    global runs
    runs += 1
    await asyncio.sleep(0.3)
    return {"forecast": f"sunny in {state['city']}"}


async def main() -> None:
    cache = AsyncToolCache.from_env(key_prefix=f"example-{uuid.uuid4().hex[:8]}")
    async with cache:
        print(f"chain: {' + '.join(cache.config.enabled_stores)}")
        graph = StateGraph(State)
        graph.add_node("fetch_forecast", fetch_forecast, cache_policy=CachePolicy(ttl=600))
        graph.add_edge(START, "fetch_forecast")
        graph.add_edge("fetch_forecast", END)
        app = graph.compile(cache=ToolWeaverNodeCache(cache))
        for attempt in ("first invocation", "same input again", "another city"):
            city = "Oslo" if attempt == "another city" else "Lisbon"
            started = time.perf_counter()
            result = await app.ainvoke({"city": city})
            print(
                f"{attempt:<18} {result['forecast']!r:<20} {(time.perf_counter() - started) * 1000:7.1f} ms"
            )
        print(f"the node ran {runs} times for 3 invocations")
        await cache.clear()


if __name__ == "__main__":
    asyncio.run(main())
