"""LlamaIndex: a ``BaseKVStore`` over the chain, e.g. under ``IngestionCache(cache=...)`` so an
ingestion pipeline's transformed nodes are shared by every process on the chain.

Each collection is one cache namespace (named as :mod:`._names` makes framework names valid),
so deleting or listing a collection never touches another; ``get_all`` streams the collection's
keys through key listing and reads them a page at a time. Values are the JSON-like dicts
LlamaIndex stores. ``ttl=None`` keeps entries until they are deleted (a key-value store, not a
cache of answers); give ``ttl`` in seconds to let them expire. Sync methods run through the
cache's bridge (:mod:`toolweaver_async._bridge`). ``IngestionCache`` has only sync methods,
so ``IngestionPipeline.arun`` calls them on the event loop, where blocking would stall it: that
raises :class:`~toolweaver_async.errors.SyncInEventLoopError`; run ``pipeline.run`` in a worker
thread instead (``await anyio.to_thread.run_sync(...)``), which hands the cache calls back to the
loop. Requires the ``llama-index`` extra.
"""

from __future__ import annotations

import math
from typing import Any

from llama_index.core.storage.kvstore.types import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_COLLECTION,
    BaseKVStore,
)

from .._bridge import CacheBridge, bridge_for
from ..cache import AsyncToolCache
from ._names import READABLE_CHARS, namespace_name

__all__ = ["ToolWeaverKVStore"]

_PAGE = 500  # get_all reads this many keys per get_many


class ToolWeaverKVStore(BaseKVStore):
    """A LlamaIndex key-value store over an ``AsyncToolCache`` (opened or not)."""

    def __init__(
        self,
        cache: AsyncToolCache,
        *,
        namespace: str = "llama",
        ttl: float | None = None,
    ) -> None:
        cache._check_namespace(namespace)
        if len(namespace) > 64 - READABLE_CHARS - 14:
            raise ValueError(f"namespace {namespace!r} leaves no room for collection names")
        self.cache = cache
        self.namespace = namespace
        self.ttl = math.inf if ttl is None else ttl
        self._names: dict[str, str] = {}
        self._bridge: CacheBridge = bridge_for(cache)

    def _name(self, collection: str) -> str:
        name = self._names.get(collection)
        if name is None:
            name = self._names[collection] = namespace_name(self.namespace, (collection,))
        return name

    # -- async (native) -------------------------------------------------------------------
    async def aput(
        self, key: str, val: dict[str, Any], collection: str = DEFAULT_COLLECTION
    ) -> None:
        self._bridge.note_loop()
        await self.cache.set(key, val, namespace=self._name(collection), ttl=self.ttl)

    async def aput_all(
        self,
        kv_pairs: list[tuple[str, dict[str, Any]]],
        collection: str = DEFAULT_COLLECTION,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self._bridge.note_loop()
        # LlamaIndex's default batch size, 1, states no preference: then one set_many (one
        # round trip per store) writes everything; a larger size is honoured per batch
        step = batch_size if batch_size > 1 else max(len(kv_pairs), 1)
        name = self._name(collection)
        for start in range(0, len(kv_pairs), step):
            batch = dict(kv_pairs[start : start + step])
            await self.cache.set_many(batch, namespace=name, ttl=self.ttl)

    async def aget(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict[str, Any] | None:
        self._bridge.note_loop()
        value = await self.cache.get(key, namespace=self._name(collection))
        return value if isinstance(value, dict) else None

    async def aget_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict[str, Any]]:
        self._bridge.note_loop()
        name = self._name(collection)
        found: dict[str, dict[str, Any]] = {}
        page: list[str] = []
        async for key in self.cache.keys(namespace=name):
            page.append(key)
            if len(page) >= _PAGE:
                found.update(await self._read(page, name))
                page = []
        if page:
            found.update(await self._read(page, name))
        return found

    async def _read(self, keys: list[str], name: str) -> dict[str, dict[str, Any]]:
        hits = await self.cache.get_many(keys, namespace=name)
        return {k: v for k, v in hits.items() if isinstance(v, dict)}

    async def adelete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        self._bridge.note_loop()
        return await self.cache.delete(key, namespace=self._name(collection))

    async def aclear(self, collection: str = DEFAULT_COLLECTION) -> None:
        """Every entry of ``collection``, at once; nothing else."""
        self._bridge.note_loop()
        await self.cache.invalidate(self._name(collection))

    # -- sync (through the cache's bridge) ------------------------------------------------
    def _blocking(self, what: str, fn: Any, *args: Any) -> Any:
        return self._bridge.run(f"ToolWeaverKVStore.{what}", fn, *args)

    def put(self, key: str, val: dict[str, Any], collection: str = DEFAULT_COLLECTION) -> None:
        self._blocking("put", self.aput, key, val, collection)

    def put_all(
        self,
        kv_pairs: list[tuple[str, dict[str, Any]]],
        collection: str = DEFAULT_COLLECTION,
        batch_size: int = DEFAULT_BATCH_SIZE,
    ) -> None:
        self._blocking("put_all", self.aput_all, kv_pairs, collection, batch_size)

    def get(self, key: str, collection: str = DEFAULT_COLLECTION) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self._blocking("get", self.aget, key, collection)
        return value

    def get_all(self, collection: str = DEFAULT_COLLECTION) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = self._blocking("get_all", self.aget_all, collection)
        return found

    def delete(self, key: str, collection: str = DEFAULT_COLLECTION) -> bool:
        removed: bool = self._blocking("delete", self.adelete, key, collection)
        return removed

    def clear(self, collection: str = DEFAULT_COLLECTION) -> None:
        self._blocking("clear", self.aclear, collection)
