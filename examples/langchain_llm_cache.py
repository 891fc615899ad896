"""LangChain on toolweaver-async: an LLM cache and a byte store for cached embeddings.

    USE_REDIS=false python examples/langchain_llm_cache.py     (memory + file)
    USE_REDIS=true  python examples/langchain_llm_cache.py     (memory + Redis + file)

Fake model and fake embeddings: no API key needed. The second identical call is answered by the
cache; the second embedding of the same batch embeds nothing.
"""

from __future__ import annotations

import asyncio
import time
import uuid

from langchain_classic.embeddings import CacheBackedEmbeddings
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.globals import set_llm_cache
from langchain_core.language_models.fake_chat_models import FakeListChatModel

from toolweaver_async import AsyncToolCache
from toolweaver_async.integrations.langchain import ToolWeaverByteStore, ToolWeaverLLMCache


class SlowFakeEmbeddings(DeterministicFakeEmbedding):
    """Fake embeddings that take 20 ms a text, like a remote model would."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        time.sleep(0.02 * len(texts))
        return super().embed_documents(texts)


async def main() -> None:
    cache = AsyncToolCache.from_env(key_prefix=f"example-{uuid.uuid4().hex[:8]}")
    async with cache:
        chain = " + ".join(cache.config.enabled_stores)
        print(f"chain: {chain}")
        set_llm_cache(ToolWeaverLLMCache(cache, ttl=3600))
        model = FakeListChatModel(
            responses=["Lisbon: sunny, 24 °C", "(a second answer)"], sleep=0.2
        )
        for attempt in ("first call", "same call again"):
            started = time.perf_counter()
            answer = await model.ainvoke("What's the weather in Lisbon tomorrow?")
            print(
                f"{attempt:<16} {answer.content!r:<26} {(time.perf_counter() - started) * 1000:7.1f} ms"
            )

        embedder = CacheBackedEmbeddings.from_bytes_store(
            SlowFakeEmbeddings(size=16),
            ToolWeaverByteStore(cache),
            namespace="fake-16",
            key_encoder="blake2b",
        )
        texts = ["agents call tools", "tools are slow", "caches help"]
        for attempt in ("embed batch", "same batch again"):
            started = time.perf_counter()
            await embedder.aembed_documents(texts)
            print(
                f"{attempt:<16} {len(texts)} texts {'':<18} {(time.perf_counter() - started) * 1000:7.1f} ms"
            )
        listed = [key async for key in cache.keys(namespace="embeddings", prefix="fake-16")]
        print(f"embeddings cached under namespace 'embeddings': {len(listed)}")
        set_llm_cache(None)
        await cache.clear()


if __name__ == "__main__":
    asyncio.run(main())
