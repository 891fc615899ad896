"""LangGraph: node caching (``graph.compile(cache=ToolWeaverNodeCache(cache))`` with a node's
``CachePolicy``) over the chain, so a cached node's result is shared across processes.

LangGraph's namespaces are tuples of arbitrary strings; each maps onto one cache namespace of
valid characters (readable part plus a hash of the exact tuple, so distinct tuples never meet).
Each namespace written is also recorded in the adapter's own registry namespace, so ``clear()``
with no arguments finds every namespace it ever wrote, from any process (through key listing),
and clears those and nothing else. Per-entry TTLs are honoured; ``ttl=None`` never expires, as
in LangGraph. Values go through LangGraph's own serializer, as its stock caches do. Requires the
``langgraph`` extra.
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from langgraph.cache.base import BaseCache, FullKey, Namespace, ValueT
from langgraph.checkpoint.serde.base import SerializerProtocol

from .._bridge import CacheBridge, bridge_for
from ..cache import AsyncToolCache
from ._names import READABLE_CHARS, namespace_name

__all__ = ["ToolWeaverNodeCache"]


class ToolWeaverNodeCache(BaseCache[ValueT]):
    """A LangGraph ``BaseCache`` over an ``AsyncToolCache`` (opened or not)."""

    def __init__(
        self,
        cache: AsyncToolCache,
        *,
        namespace: str = "langgraph",
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        cache._check_namespace(namespace)
        if len(namespace) > 64 - READABLE_CHARS - 14:
            raise ValueError(f"namespace {namespace!r} leaves no room for LangGraph's names")
        self.cache = cache
        self.registry = namespace  # keys: the cache namespaces this adapter wrote
        self._names: dict[Namespace, str] = {}
        self._registered: set[str] = set()
        self._bridge: CacheBridge = bridge_for(cache)

    def _name(self, namespace: Namespace) -> str:
        name = self._names.get(namespace)
        if name is None:
            name = self._names[namespace] = namespace_name(self.registry, tuple(namespace))
        return name

    # -- async (native) -------------------------------------------------------------------
    async def aget(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        self._bridge.note_loop()
        by_namespace: dict[Namespace, list[str]] = defaultdict(list)
        for namespace, key in keys:
            by_namespace[namespace].append(key)
        found: dict[FullKey, ValueT] = {}

        async def read(namespace: Namespace, wanted: list[str]) -> None:
            hits = await self.cache.get_many(wanted, namespace=self._name(namespace))
            for key, stored in hits.items():
                value = self._loads(stored)
                if value is not _UNREADABLE:
                    found[(namespace, key)] = value

        if len(by_namespace) == 1:
            await read(*next(iter(by_namespace.items())))
        else:
            await asyncio.gather(*(read(ns, ks) for ns, ks in by_namespace.items()))
        return found

    async def aset(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        self._bridge.note_loop()
        groups: dict[tuple[Namespace, int | None], dict[str, Any]] = defaultdict(dict)
        for (namespace, key), (value, ttl) in pairs.items():
            kind, data = self.serde.dumps_typed(value)
            groups[(namespace, ttl)][key] = [kind, data]
        for (namespace, ttl), items in groups.items():
            name = self._name(namespace)
            await self._register(name, namespace)
            # LangGraph's None is "never expires"; the cache's None would take the policy
            await self.cache.set_many(items, namespace=name, ttl=math.inf if ttl is None else ttl)

    async def aclear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        """The given LangGraph namespaces, or every namespace this adapter's registry names
        (written by any process); never anything else in the cache."""
        self._bridge.note_loop()
        if namespaces is not None:
            for namespace in namespaces:
                await self.cache.invalidate(self._name(tuple(namespace)))
            return
        names = {name async for name in self.cache.keys(namespace=self.registry)}
        for name in names | self._registered:
            await self.cache.invalidate(name)
        await self.cache.invalidate(self.registry)
        self._registered.clear()

    async def _register(self, name: str, namespace: Namespace) -> None:
        if name not in self._registered:
            await self.cache.set(name, list(namespace), namespace=self.registry, ttl=math.inf)
            self._registered.add(name)

    def _loads(self, stored: Any) -> Any:
        try:
            kind, data = stored
            return self.serde.loads_typed((kind, data))
        except Exception:
            return _UNREADABLE  # not written by this adapter: a miss, never an error

    # -- sync (through the cache's bridge) ------------------------------------------------
    def get(self, keys: Sequence[FullKey]) -> dict[FullKey, ValueT]:
        found: dict[FullKey, ValueT] = self._bridge.run("ToolWeaverNodeCache.get", self.aget, keys)
        return found

    def set(self, pairs: Mapping[FullKey, tuple[ValueT, int | None]]) -> None:
        self._bridge.run("ToolWeaverNodeCache.set", self.aset, pairs)

    def clear(self, namespaces: Sequence[Namespace] | None = None) -> None:
        self._bridge.run("ToolWeaverNodeCache.clear", self.aclear, namespaces)


_UNREADABLE: Any = object()
