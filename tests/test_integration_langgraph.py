"""ToolWeaverNodeCache under a real compiled LangGraph StateGraph, on every chain."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TypedDict

import pytest

pytest.importorskip("langgraph")

from langgraph.graph import END, START, StateGraph
from langgraph.types import CachePolicy

from toolweaver_async import AsyncToolCache
from toolweaver_async._bridge import bridge_for
from toolweaver_async.config import check_name
from toolweaver_async.integrations._names import namespace_name
from toolweaver_async.integrations.langgraph import ToolWeaverNodeCache
from toolweaver_async.testing import FakeClock

from ._adapter_chains import CHAINS, make_chain_cache


class State(TypedDict):
    question: str
    answer: str


def build_graph(cache: ToolWeaverNodeCache, runs: list[str], ttl: int | None = None) -> object:
    def expensive(state: State) -> dict[str, str]:
        runs.append(state["question"])
        return {"answer": state["question"].upper()}

    graph = StateGraph(State)
    graph.add_node("expensive", expensive, cache_policy=CachePolicy(ttl=ttl))
    graph.add_edge(START, "expensive")
    graph.add_edge("expensive", END)
    return graph.compile(cache=cache)


@pytest.fixture(params=list(CHAINS))
def chain(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sync_cache(
    chain: str, redis_url: str, tmp_path: Path, clock: FakeClock
) -> Iterator[AsyncToolCache]:
    cache = make_chain_cache(chain, redis_url, tmp_path, clock=clock)
    yield cache
    bridge = bridge_for(cache)
    bridge.run("close", cache.aclose)
    bridge.close()


@pytest.fixture
async def async_cache(
    chain: str, redis_url: str, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[AsyncToolCache]:
    async with make_chain_cache(chain, redis_url, tmp_path, clock=clock) as cache:
        yield cache


def test_cached_node_runs_once_for_two_identical_invocations(sync_cache: AsyncToolCache) -> None:
    runs: list[str] = []
    app = build_graph(ToolWeaverNodeCache(sync_cache), runs)
    assert app.invoke({"question": "hi"}) == {"question": "hi", "answer": "HI"}  # type: ignore[attr-defined]
    assert app.invoke({"question": "hi"}) == {"question": "hi", "answer": "HI"}  # type: ignore[attr-defined]
    assert runs == ["hi"]
    app.invoke({"question": "other"})  # type: ignore[attr-defined]
    assert runs == ["hi", "other"]


async def test_cached_node_runs_once_for_two_identical_async_invocations(
    async_cache: AsyncToolCache,
) -> None:
    runs: list[str] = []
    app = build_graph(ToolWeaverNodeCache(async_cache), runs)
    assert (await app.ainvoke({"question": "hi"}))["answer"] == "HI"  # type: ignore[attr-defined]
    assert (await app.ainvoke({"question": "hi"}))["answer"] == "HI"  # type: ignore[attr-defined]
    assert runs == ["hi"]


async def test_a_second_process_worth_of_graph_shares_the_cached_node(
    chain: str, redis_url: str, tmp_path: Path
) -> None:
    prefix = "s" + uuid.uuid4().hex[:12]
    first_runs: list[str] = []
    async with make_chain_cache(chain, redis_url, tmp_path, key_prefix=prefix) as one:
        await build_graph(ToolWeaverNodeCache(one), first_runs).ainvoke({"question": "q"})  # type: ignore[attr-defined]
    second_runs: list[str] = []
    async with make_chain_cache(chain, redis_url, tmp_path, key_prefix=prefix) as two:
        await build_graph(ToolWeaverNodeCache(two), second_runs).ainvoke({"question": "q"})  # type: ignore[attr-defined]
        await two.clear()
    assert first_runs == ["q"]
    assert second_runs == []


async def test_per_entry_ttl_is_honoured_and_none_never_expires(
    async_cache: AsyncToolCache, clock: FakeClock
) -> None:
    runs: list[str] = []
    node_cache = ToolWeaverNodeCache(async_cache)
    short = build_graph(node_cache, runs, ttl=5)
    await short.ainvoke({"question": "a"})  # type: ignore[attr-defined]
    clock.advance(6)
    await short.ainvoke({"question": "a"})  # type: ignore[attr-defined]
    assert runs == ["a", "a"]
    await node_cache.aset({(("forever",), "k"): ({"v": 1}, None)})
    await node_cache.aset({(("brief",), "k"): ({"v": 2}, 10)})
    clock.advance(10 * 365 * 86400)
    assert await node_cache.aget([(("forever",), "k"), (("brief",), "k")]) == {
        (("forever",), "k"): {"v": 1}
    }


async def test_clear_clears_the_given_or_every_langgraph_namespace_and_nothing_else(
    async_cache: AsyncToolCache,
) -> None:
    node_cache = ToolWeaverNodeCache(async_cache)
    await async_cache.set("keep", 1)
    await node_cache.aset({(("a", "x"), "k"): (1, None), (("b",), "k"): (2, None)})
    await node_cache.aclear([("a", "x")])
    assert await node_cache.aget([(("a", "x"), "k"), (("b",), "k")]) == {(("b",), "k"): 2}
    # a fresh adapter (another process) still finds the namespaces through the registry
    await ToolWeaverNodeCache(async_cache).aclear()
    assert await node_cache.aget([(("b",), "k")]) == {}
    assert await async_cache.get("keep") == 1


def test_namespace_tuples_map_to_distinct_valid_names() -> None:
    names = {
        namespace_name("langgraph", ns)
        for ns in [("a:b",), ("a", "b"), ("a.b",), ("a/b",), (), ("x" * 200,), ("ü ✓",)]
    }
    assert len(names) == 7
    for name in names:
        assert len(name) <= 64
        check_name(name, what="namespace")
