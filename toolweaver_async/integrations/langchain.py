"""LangChain: an LLM cache (``set_llm_cache``) and a byte store (``CacheBackedEmbeddings``).

Both take an ``AsyncToolCache``, opened or not. Their async methods await it on the caller's
loop; their sync methods (LangChain's ``invoke``, ``embed_documents``) run it through the
cache's bridge (:mod:`toolweaver_async._bridge`): on the loop it lives on when that runs in
another thread, else on one background daemon thread, and never on a running loop's own thread
(:class:`~toolweaver_async.errors.SyncInEventLoopError`). ``clear`` clears the adapter's own
namespace only. Requires the ``langchain`` extra.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any

from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
from langchain_core.stores import ByteStore

from .._bridge import CacheBridge, bridge_for
from ..cache import AsyncToolCache
from ._generations import decode_generations, encode_generations

__all__ = ["ToolWeaverByteStore", "ToolWeaverLLMCache"]


def _llm_key(prompt: str, llm_string: str) -> str:
    """One short key per (prompt, model configuration): prompts can be megabytes."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(llm_string.encode("utf-8", "surrogatepass"))
    digest.update(b"\x00")
    digest.update(prompt.encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


class _Adapter:
    """What both adapters share: the cache, its namespace and TTL, and its bridge."""

    def __init__(self, cache: AsyncToolCache, namespace: str, ttl: float | None) -> None:
        cache._check_namespace(namespace)  # a bad name fails here, not at the first call
        self.cache = cache
        self.namespace = namespace
        self.ttl = ttl
        self._bridge: CacheBridge = bridge_for(cache)

    def _blocking(self, what: str, fn: Any, *args: Any) -> Any:
        return self._bridge.run(f"{type(self).__name__}.{what}", fn, *args)


class ToolWeaverLLMCache(_Adapter, BaseCache):
    """LangChain's LLM cache over the chain: ``set_llm_cache(ToolWeaverLLMCache(cache))``.

    Entries are keyed by a hash of prompt and model configuration and hold every generation
    (see :mod:`._generations` for the encoding); ``ttl=None`` takes the namespace policy.
    """

    def __init__(
        self, cache: AsyncToolCache, *, namespace: str = "llm", ttl: float | None = None
    ) -> None:
        _Adapter.__init__(self, cache, namespace, ttl)

    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        self._bridge.note_loop()
        value = await self.cache.get(_llm_key(prompt, llm_string), namespace=self.namespace)
        return None if value is None else decode_generations(value)

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        self._bridge.note_loop()
        await self.cache.set(
            _llm_key(prompt, llm_string),
            encode_generations(return_val),
            namespace=self.namespace,
            ttl=self.ttl,
        )

    async def aclear(self, **kwargs: Any) -> None:
        self._bridge.note_loop()
        await self.cache.invalidate(self.namespace)

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        found: RETURN_VAL_TYPE | None = self._blocking("lookup", self.alookup, prompt, llm_string)
        return found

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        self._blocking("update", self.aupdate, prompt, llm_string, return_val)

    def clear(self, **kwargs: Any) -> None:
        self._blocking("clear", self.aclear)


class ToolWeaverByteStore(_Adapter, ByteStore):
    """A LangChain ``ByteStore`` (``BaseStore[str, bytes]``) over the chain, e.g. under
    ``CacheBackedEmbeddings.from_bytes_store``. ``yield_keys`` streams ``cache.keys()``."""

    def __init__(
        self, cache: AsyncToolCache, *, namespace: str = "embeddings", ttl: float | None = None
    ) -> None:
        _Adapter.__init__(self, cache, namespace, ttl)

    async def amget(self, keys: Sequence[str]) -> list[bytes | None]:
        self._bridge.note_loop()
        found = await self.cache.get_many(keys, namespace=self.namespace)
        return [found.get(key) for key in keys]

    async def amset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        self._bridge.note_loop()
        await self.cache.set_many(dict(key_value_pairs), namespace=self.namespace, ttl=self.ttl)

    async def amdelete(self, keys: Sequence[str]) -> None:
        self._bridge.note_loop()
        if keys:
            await asyncio.gather(*(self.cache.delete(k, namespace=self.namespace) for k in keys))

    async def ayield_keys(self, *, prefix: str | None = None) -> AsyncIterator[str]:
        self._bridge.note_loop()
        async for key in self.cache.keys(namespace=self.namespace, prefix=prefix or ""):
            yield key

    async def aclear(self) -> None:
        """Every entry of this store's namespace, nothing else."""
        await self.cache.invalidate(self.namespace)

    def mget(self, keys: Sequence[str]) -> list[bytes | None]:
        found: list[bytes | None] = self._blocking("mget", self.amget, keys)
        return found

    def mset(self, key_value_pairs: Sequence[tuple[str, bytes]]) -> None:
        self._blocking("mset", self.amset, key_value_pairs)

    def mdelete(self, keys: Sequence[str]) -> None:
        self._blocking("mdelete", self.amdelete, keys)

    def yield_keys(self, *, prefix: str | None = None) -> Iterator[str]:
        listing = self.cache.keys(namespace=self.namespace, prefix=prefix or "")
        try:
            while batch := self._blocking("yield_keys", _next_batch, listing):
                yield from batch
        finally:
            self._blocking("yield_keys", listing.aclose)  # type: ignore[attr-defined]

    def clear(self) -> None:
        self._blocking("clear", self.aclear)


async def _next_batch(listing: AsyncIterator[str], size: int = 1000) -> list[str]:
    batch: list[str] = []
    async for key in listing:
        batch.append(key)
        if len(batch) >= size:
            break
    return batch
