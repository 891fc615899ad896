"""Tool-shaped helpers: the async successors of ToolWeaver's ``ToolCache`` methods.

Same key shapes and TTLs as ToolWeaver (catalog 24 h, search 1 h, embeddings 7 d, tools 24 h,
tool results 5 min), each in its own namespace so a policy can be tuned per kind of work.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..keys import catalog_key, embedding_key, result_key, search_key, tool_key

__all__ = ["ToolShapedHelpers"]


class _GetSet(Protocol):
    async def get(
        self, key: str, *, namespace: str = ..., default: Any = ..., type: Any = ...
    ) -> Any: ...

    async def set(
        self, key: str, value: Any, *, namespace: str = ..., ttl: float | None = ...
    ) -> None: ...


class ToolShapedHelpers:
    """Mixed into ``AsyncToolCache``; every method is one ``get`` or ``set`` with a built key."""

    async def get_catalog(self: _GetSet, catalog_hash: str) -> Any:
        return await self.get(catalog_key(catalog_hash), namespace="catalog")

    async def set_catalog(self: _GetSet, catalog_hash: str, catalog: Any) -> None:
        await self.set(catalog_key(catalog_hash), catalog, namespace="catalog")

    async def get_search_results(
        self: _GetSet, query_hash: str, catalog_version: str, top_k: int
    ) -> Any:
        return await self.get(search_key(query_hash, catalog_version, top_k), namespace="search")

    async def set_search_results(
        self: _GetSet, query_hash: str, catalog_version: str, top_k: int, results: Any
    ) -> None:
        await self.set(search_key(query_hash, catalog_version, top_k), results, namespace="search")

    async def get_embedding(self: _GetSet, text_hash: str, model_name: str) -> list[float] | None:
        value: list[float] | None = await self.get(
            embedding_key(text_hash, model_name), namespace="embeddings", type=list[float]
        )
        return value

    async def set_embedding(self: _GetSet, text_hash: str, model_name: str, embedding: Any) -> None:
        await self.set(embedding_key(text_hash, model_name), embedding, namespace="embeddings")

    async def get_tool(self: _GetSet, tool_name: str, version: str) -> Any:
        return await self.get(tool_key(tool_name, version), namespace="tools")

    async def set_tool(self: _GetSet, tool_name: str, version: str, tool_data: Any) -> None:
        await self.set(tool_key(tool_name, version), tool_data, namespace="tools")

    async def get_result(self: _GetSet, tool_name: str, args: Any) -> Any:
        return await self.get(result_key(tool_name, args), namespace="results")

    async def set_result(self: _GetSet, tool_name: str, args: Any, result: Any) -> None:
        await self.set(result_key(tool_name, args), result, namespace="results")
