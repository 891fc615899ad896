"""LangChain adapters under LangChain's own standard suites, on every chain, plus real
``set_llm_cache`` and ``CacheBackedEmbeddings`` runs with fake models."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("langchain_core")
pytest.importorskip("langchain_tests")

from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.messages import AIMessage, AIMessageChunk
from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation
from langchain_tests.integration_tests import (
    AsyncCacheTestSuite,
    BaseStoreAsyncTests,
    BaseStoreSyncTests,
    SyncCacheTestSuite,
)
from pydantic import Field

from toolweaver_async import AsyncToolCache
from toolweaver_async._bridge import bridge_for
from toolweaver_async.integrations.langchain import ToolWeaverByteStore, ToolWeaverLLMCache

from ._adapter_chains import CHAINS, make_chain_cache


@pytest.fixture(params=list(CHAINS))
def chain(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def sync_cache(chain: str, redis_url: str, tmp_path: Path) -> Iterator[AsyncToolCache]:
    """A cache for sync tests: used and closed through its bridge (no loop runs here)."""
    cache = make_chain_cache(chain, redis_url, tmp_path)
    yield cache
    bridge = bridge_for(cache)
    bridge.run("close", cache.aclose)
    bridge.close()


@pytest.fixture
async def async_cache(chain: str, redis_url: str, tmp_path: Path) -> AsyncIterator[AsyncToolCache]:
    async with make_chain_cache(chain, redis_url, tmp_path) as cache:
        yield cache


class TestSyncLLMCache(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, sync_cache: AsyncToolCache) -> ToolWeaverLLMCache:
        return ToolWeaverLLMCache(sync_cache)


class TestAsyncLLMCache(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, async_cache: AsyncToolCache) -> ToolWeaverLLMCache:
        return ToolWeaverLLMCache(async_cache)


class TestSyncByteStore(BaseStoreSyncTests[bytes]):
    @pytest.fixture
    def kv_store(self, sync_cache: AsyncToolCache) -> ToolWeaverByteStore:
        return ToolWeaverByteStore(sync_cache)

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


class TestAsyncByteStore(BaseStoreAsyncTests[bytes]):
    @pytest.fixture
    async def kv_store(self, async_cache: AsyncToolCache) -> ToolWeaverByteStore:
        return ToolWeaverByteStore(async_cache)

    @pytest.fixture
    def three_values(self) -> tuple[bytes, bytes, bytes]:
        return b"foo", b"bar", b"buzz"


# -- real LangChain objects ----------------------------------------------------------------


class CountingEmbeddings(DeterministicFakeEmbedding):
    """A fake embedding model that counts the texts it was asked to embed."""

    embedded: list[str] = Field(default_factory=list)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        self.embedded.extend(texts)
        return super().embed_documents(texts)


def test_cache_backed_embeddings_embed_a_repeated_batch_zero_times(
    sync_cache: AsyncToolCache,
) -> None:
    from langchain_classic.embeddings import CacheBackedEmbeddings

    model = CountingEmbeddings(size=8, embedded=[])
    embedder = CacheBackedEmbeddings.from_bytes_store(
        model, ToolWeaverByteStore(sync_cache), namespace="fake-8", key_encoder="blake2b"
    )
    texts = ["alpha", "beta", "gamma"]
    first = embedder.embed_documents(texts)
    assert model.embedded == texts
    again = embedder.embed_documents(texts)
    assert model.embedded == texts  # nothing embedded the second time
    assert again == first


async def test_cache_backed_embeddings_async_repeated_batch_is_served_from_the_store(
    async_cache: AsyncToolCache,
) -> None:
    from langchain_classic.embeddings import CacheBackedEmbeddings

    model = CountingEmbeddings(size=8, embedded=[])
    store = ToolWeaverByteStore(async_cache)
    embedder = CacheBackedEmbeddings.from_bytes_store(
        model, store, namespace="fake-8", key_encoder="blake2b"
    )
    first = await embedder.aembed_documents(["a", "b"])
    assert await embedder.aembed_documents(["a", "b"]) == first
    assert model.embedded == ["a", "b"]
    assert len([k async for k in store.ayield_keys(prefix="fake-8")]) == 2


@pytest.fixture
def global_llm_cache() -> Iterator[None]:
    yield
    set_llm_cache(None)


def test_set_llm_cache_serves_a_repeated_invoke_from_the_cache(
    sync_cache: AsyncToolCache, global_llm_cache: None
) -> None:
    set_llm_cache(ToolWeaverLLMCache(sync_cache))
    model = FakeListChatModel(responses=["first answer", "second answer"])
    assert model.invoke("what is it?").content == "first answer"
    assert model.invoke("what is it?").content == "first answer"  # served by the cache
    assert model.invoke("something else").content == "second answer"


async def test_set_llm_cache_serves_a_repeated_ainvoke_from_the_cache(
    async_cache: AsyncToolCache, global_llm_cache: None
) -> None:
    set_llm_cache(ToolWeaverLLMCache(async_cache))
    model = FakeListChatModel(responses=["first answer", "second answer"])
    assert (await model.ainvoke("q")).content == "first answer"
    assert (await model.ainvoke("q")).content == "first answer"


async def test_llm_cache_keeps_every_generation_and_its_message_exactly(
    async_cache: AsyncToolCache,
) -> None:
    llm_cache = ToolWeaverLLMCache(async_cache, ttl=60)
    generations: list[Any] = [
        ChatGeneration(
            message=AIMessage(
                content="hi",
                id="run-1",
                tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "c1"}],
                usage_metadata={"input_tokens": 3, "output_tokens": 1, "total_tokens": 4},
                response_metadata={"model": "fake"},
            ),
            generation_info={"finish_reason": "stop"},
        ),
        ChatGenerationChunk(message=AIMessageChunk(content=[{"type": "text", "text": "x"}])),
    ]
    await llm_cache.aupdate("p", "m", generations)
    back = await llm_cache.alookup("p", "m")
    assert back == generations
    assert [type(g) for g in back or []] == [ChatGeneration, ChatGenerationChunk]
    assert type(back[0].message) is AIMessage  # type: ignore[index, attr-defined]
    plain = [Generation(text="a"), Generation(text="b", generation_info={"n": 1})]
    await llm_cache.aupdate("p2", "m", plain)
    assert await llm_cache.alookup("p2", "m") == plain


async def test_adapter_clear_clears_its_own_namespace_only(async_cache: AsyncToolCache) -> None:
    await async_cache.set("keep", 1)
    llm_cache = ToolWeaverLLMCache(async_cache)
    store = ToolWeaverByteStore(async_cache)
    await llm_cache.aupdate("p", "m", [Generation(text="a")])
    await store.amset([("k", b"v")])
    await llm_cache.aclear()
    assert await llm_cache.alookup("p", "m") is None
    assert await store.amget(["k"]) == [b"v"]
    await store.aclear()
    assert await store.amget(["k"]) == [None]
    assert await async_cache.get("keep") == 1
