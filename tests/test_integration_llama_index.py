"""ToolWeaverKVStore as LlamaIndex's key-value store and under a real IngestionCache."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest

pytest.importorskip("llama_index.core")

from llama_index.core import Document
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.schema import BaseNode, TextNode, TransformComponent
from pydantic import PrivateAttr

from toolweaver_async import AsyncToolCache, SyncInEventLoopError
from toolweaver_async._bridge import bridge_for
from toolweaver_async.integrations.llama_index import ToolWeaverKVStore

from ._adapter_chains import CHAINS, make_chain_cache


@pytest.fixture(params=list(CHAINS))
def chain(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sync_cache(chain: str, redis_url: str, tmp_path: Path) -> Iterator[AsyncToolCache]:
    cache = make_chain_cache(chain, redis_url, tmp_path)
    yield cache
    bridge = bridge_for(cache)
    bridge.run("close", cache.aclose)
    bridge.close()


@pytest.fixture
async def async_cache(chain: str, redis_url: str, tmp_path: Path) -> AsyncIterator[AsyncToolCache]:
    async with make_chain_cache(chain, redis_url, tmp_path) as made:
        yield made


class CountingSplitter(TransformComponent):
    """Splits each node into one node per sentence, and counts the nodes it was handed (in a
    private attribute: the pipeline's cache key hashes the public fields)."""

    _seen: list[str] = PrivateAttr(default_factory=list)

    @property
    def seen(self) -> list[str]:
        return self._seen

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        self._seen.extend(n.node_id for n in nodes)
        return [
            TextNode(text=sentence.strip(), id_=f"{node.node_id}-{i}")
            for node in nodes
            for i, sentence in enumerate(node.get_content().split(". "))
            if sentence.strip()
        ]


def _documents() -> list[Document]:
    return [
        Document(text="Redis keeps the hot entries. Files keep the rest. " * 6, doc_id="a"),
        Document(text="Agents call tools. Tools are slow. Caches help. " * 6, doc_id="b"),
    ]


def test_ingestion_cache_round_trip_skips_the_transformation_the_second_time(
    sync_cache: AsyncToolCache,
) -> None:
    splitter = CountingSplitter()
    store = ToolWeaverKVStore(sync_cache)
    first = IngestionPipeline(transformations=[splitter], cache=IngestionCache(cache=store)).run(
        documents=_documents()
    )
    assert len(splitter.seen) == 2
    again = IngestionPipeline(transformations=[splitter], cache=IngestionCache(cache=store)).run(
        documents=_documents()
    )
    assert len(splitter.seen) == 2  # served from the IngestionCache
    assert [n.get_content() for n in again] == [n.get_content() for n in first]
    assert len(first) > 2


async def test_ingestion_pipeline_run_in_a_worker_thread_uses_the_cache_on_the_main_loop(
    async_cache: AsyncToolCache,
) -> None:
    splitter = CountingSplitter()
    cache = IngestionCache(cache=ToolWeaverKVStore(async_cache))  # made on this loop

    def run() -> list[BaseNode]:
        pipeline = IngestionPipeline(transformations=[splitter], cache=cache)
        return list(pipeline.run(documents=_documents()))

    first = await anyio.to_thread.run_sync(run)
    again = await anyio.to_thread.run_sync(run)
    assert len(splitter.seen) == 2
    assert [n.get_content() for n in again] == [n.get_content() for n in first]


async def test_ingestion_pipeline_arun_gets_the_clear_error_not_a_blocked_loop(
    async_cache: AsyncToolCache,
) -> None:
    # IngestionCache has no async methods: arun calls the store's sync get on the loop.
    cache = IngestionCache(cache=ToolWeaverKVStore(async_cache))
    pipeline = IngestionPipeline(transformations=[CountingSplitter()], cache=cache)
    with pytest.raises(SyncInEventLoopError):
        await pipeline.arun(documents=_documents())


async def test_collections_are_separate_namespaces_and_get_all_lists_one(
    async_cache: AsyncToolCache,
) -> None:
    store = ToolWeaverKVStore(async_cache)
    await store.aput("k1", {"v": 1})
    await store.aput_all([("a", {"n": 1}), ("b", {"n": 2}), ("c*[", {"n": 3})], "docstore/data")
    await store.aput_all([(f"x{i}", {"i": i}) for i in range(7)], "batched", batch_size=3)
    assert await store.aget("k1") == {"v": 1}
    assert await store.aget("k1", "docstore/data") is None
    assert await store.aget_all("docstore/data") == {"a": {"n": 1}, "b": {"n": 2}, "c*[": {"n": 3}}
    assert len(await store.aget_all("batched")) == 7
    assert await store.adelete("a", "docstore/data") is True
    assert await store.adelete("a", "docstore/data") is False
    await store.aclear("docstore/data")
    assert await store.aget_all("docstore/data") == {}
    assert await store.aget_all() == {"k1": {"v": 1}}


def test_sync_methods_match_the_async_ones(sync_cache: AsyncToolCache) -> None:
    store = ToolWeaverKVStore(sync_cache, ttl=60)
    store.put("k", {"v": [1, 2]}, collection="c")
    store.put_all([("m", {"v": 3})], collection="c")
    assert store.get("k", collection="c") == {"v": [1, 2]}
    assert store.get_all(collection="c") == {"k": {"v": [1, 2]}, "m": {"v": 3}}
    assert store.delete("k", collection="c") is True
    assert store.get_all(collection="c") == {"m": {"v": 3}}
