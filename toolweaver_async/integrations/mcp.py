"""MCP: a response cache store for the MCP Python SDK's client (``mcp.client.caching``, SDK 2.x),
so ``tools/list``, ``resources/read`` and the other cacheable results are shared by every
process on the chain::

    Client(server, cache=CacheConfig(store=ToolWeaverResponseCache(cache), partition=...,
                                     target_id=...))

The SDK keeps freshness, scope and partitions; this store keeps entries. A result is stored as
its class name and its JSON-mode dump and rebuilt with ``model_validate`` (only classes of
``mcp_types`` that are cacheable results: a shared Redis is not trusted to name classes); an
entry that does not rebuild is a miss, as the protocol asks. Entries live until their
``expires_at`` (one that is never fresh is not stored). ``clear`` clears this store's namespace
only. Requires the ``mcp`` extra.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable

import mcp_types
from mcp.client.caching import CacheEntry, CacheKey

from ..cache import AsyncToolCache

__all__ = ["ToolWeaverResponseCache"]

_RESULTS: dict[str, type[mcp_types.CacheableResult]] = {
    name: cls
    for name in dir(mcp_types)
    if isinstance(cls := getattr(mcp_types, name), type)
    and issubclass(cls, mcp_types.CacheableResult)
}


def _key(key: CacheKey) -> str:
    """The cache key of an SDK key: a hash of its fields as a JSON array (never a joined
    string, which two different keys could share), after the method for readable listings."""
    exact = json.dumps([key.method, key.params_key, key.partition], ensure_ascii=False)
    digest = hashlib.blake2b(exact.encode("utf-8", "surrogatepass"), digest_size=20).hexdigest()
    return f"{key.method}:{digest}"


class ToolWeaverResponseCache:
    """An ``mcp.client.caching.ResponseCacheStore`` over an ``AsyncToolCache`` (opened or
    not). ``clock`` is the wall clock ``expires_at`` is read against (the SDK's default)."""

    def __init__(
        self,
        cache: AsyncToolCache,
        *,
        namespace: str = "mcp",
        clock: Callable[[], float] = time.time,
    ) -> None:
        cache._check_namespace(namespace)
        self.cache = cache
        self.namespace = namespace
        self._clock = clock

    async def get(self, key: CacheKey) -> CacheEntry | None:
        stored = await self.cache.get(_key(key), namespace=self.namespace)
        if stored is None:
            return None
        try:
            name, dumped, scope, expires_at = stored
            value = _RESULTS[name].model_validate(dumped)
        except Exception:
            return None  # not an entry this store wrote, or of another SDK version: a miss
        return CacheEntry(value=value, scope=scope, expires_at=expires_at)

    async def set(self, key: CacheKey, entry: CacheEntry) -> None:
        name = type(entry.value).__name__
        if _RESULTS.get(name) is not type(entry.value):
            raise TypeError(f"not a cacheable MCP result: {type(entry.value).__qualname__}")
        lifetime = None if entry.expires_at is None else entry.expires_at - self._clock()
        if lifetime is None or lifetime <= 0:
            await self.cache.delete(_key(key), namespace=self.namespace)
            return  # never fresh: nothing to keep, and nothing older may stay
        dumped = entry.value.model_dump(mode="json", by_alias=True, exclude_unset=True)
        await self.cache.set(
            _key(key),
            [name, dumped, entry.scope, entry.expires_at],
            namespace=self.namespace,
            ttl=lifetime,
        )

    async def delete(self, key: CacheKey) -> None:
        await self.cache.delete(_key(key), namespace=self.namespace)

    async def clear(self) -> None:
        await self.cache.invalidate(self.namespace)
