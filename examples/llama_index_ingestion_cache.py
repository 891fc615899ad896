"""LlamaIndex on toolweaver-async: an ingestion pipeline whose transformations are cached.

    USE_REDIS=false python examples/llama_index_ingestion_cache.py
    USE_REDIS=true  python examples/llama_index_ingestion_cache.py

``IngestionCache(cache=ToolWeaverKVStore(cache))``: the second run of the same documents skips
the (slow, fake) transformation. IngestionCache has only sync methods, so the pipeline runs
with ``pipeline.run`` in plain code here, the cache's loop in a background thread.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from typing import Any

from llama_index.core import Document
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.schema import BaseNode, TextNode, TransformComponent

from toolweaver_async import AsyncToolCache, SyncToolCache
from toolweaver_async.integrations.llama_index import ToolWeaverKVStore


class SlowSentenceSplitter(TransformComponent):
    """One node per sentence, 100 ms a document (a stand-in for an embedding model)."""

    def __call__(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[BaseNode]:
        time.sleep(0.1 * len(nodes))
        return [
            TextNode(text=sentence.strip(), id_=f"{node.node_id}-{i}")
            for node in nodes
            for i, sentence in enumerate(node.get_content().split(". "))
            if sentence.strip()
        ]


def main() -> None:
    cache = AsyncToolCache.from_env(key_prefix=f"example-{uuid.uuid4().hex[:8]}")
    with SyncToolCache(cache=cache) as sync_cache:  # the same cache, for sync code
        print(f"chain: {' + '.join(cache.config.enabled_stores)}")
        ingestion_cache = IngestionCache(cache=ToolWeaverKVStore(cache))
        documents = [
            Document(text="Redis keeps hot entries. Files keep the rest.", doc_id="a"),
            Document(text="Agents call tools. Tools are slow. Caches help.", doc_id="b"),
        ]
        for attempt in ("first run", "same documents"):
            pipeline = IngestionPipeline(
                transformations=[SlowSentenceSplitter()], cache=ingestion_cache
            )
            started = time.perf_counter()
            nodes = pipeline.run(documents=documents)
            print(
                f"{attempt:<15} {len(nodes)} nodes in {(time.perf_counter() - started) * 1000:7.1f} ms"
            )
        sync_cache.clear()


if __name__ == "__main__":
    main()
