"""ToolWeaver's ``ToolCache``, async: the same TTL attributes, method names and key shapes."""

from __future__ import annotations

from typing import Any

from ..config import DAY, HOUR
from ..keys import catalog_key, embedding_key, search_key, tool_key
from .redis_cache import RedisCache

__all__ = ["ToolCache"]


class ToolCache:
    """Catalog, search, embedding and tool entries on a :class:`RedisCache`.

    Each kind lives in its own namespace (``catalog``, ``search``, ``embeddings``, ``tools``) with
    ToolWeaver's key shapes, so ``AsyncToolCache.get_catalog`` and friends read what this
    writes. The ``*_TTL`` attributes may be changed per instance, as in ToolWeaver.
    """

    CATALOG_TTL = int(DAY)
    SEARCH_TTL = int(HOUR)
    EMBEDDING_TTL = int(7 * DAY)
    TOOL_TTL = int(DAY)

    def __init__(self, redis_cache: RedisCache) -> None:
        self.cache = redis_cache

    async def _get(self, key: str, namespace: str, type_: Any = None) -> Any:
        backend = await self.cache._ready()
        return await backend.get(key, namespace=namespace, type=type_)

    async def _set(self, key: str, value: Any, namespace: str, ttl: float) -> bool:
        backend = await self.cache._ready()
        await backend.set(key, value, namespace=namespace, ttl=ttl)
        return True

    async def get_catalog(self, catalog_hash: str) -> Any:
        return await self._get(catalog_key(catalog_hash), "catalog")

    async def set_catalog(self, catalog_hash: str, catalog_data: Any) -> bool:
        return await self._set(catalog_key(catalog_hash), catalog_data, "catalog", self.CATALOG_TTL)

    async def get_search_results(self, query_hash: str, catalog_version: str, top_k: int) -> Any:
        return await self._get(search_key(query_hash, catalog_version, top_k), "search")

    async def set_search_results(
        self, query_hash: str, catalog_version: str, top_k: int, results: Any
    ) -> bool:
        key = search_key(query_hash, catalog_version, top_k)
        return await self._set(key, results, "search", self.SEARCH_TTL)

    async def get_embedding(self, text_hash: str, model_name: str) -> list[float] | None:
        """The embedding as a ``list[float]`` (ToolWeaver pickled whatever was given)."""
        value: list[float] | None = await self._get(
            embedding_key(text_hash, model_name), "embeddings", list[float]
        )
        return value

    async def set_embedding(self, text_hash: str, model_name: str, embedding: Any) -> bool:
        key = embedding_key(text_hash, model_name)
        return await self._set(key, embedding, "embeddings", self.EMBEDDING_TTL)

    async def get_tool(self, tool_name: str, version: str) -> Any:
        return await self._get(tool_key(tool_name, version), "tools")

    async def set_tool(self, tool_name: str, version: str, tool_data: Any) -> bool:
        return await self._set(tool_key(tool_name, version), tool_data, "tools", self.TOOL_TTL)
