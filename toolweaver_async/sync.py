"""``SyncToolCache``: the cache for synchronous code, one background event loop doing the work.

Every method is the ``AsyncToolCache`` method of the same name, run to completion on the cache's
loop (see :mod:`toolweaver_async._bridge`): a daemon thread of its own, or the loop the cache
already lives on when that one runs in another thread. Called on a running event loop's thread,
every method raises :class:`~toolweaver_async.errors.SyncInEventLoopError` instead of blocking.
Loaders and decorated functions are plain sync callables; they run in a worker thread so the
cache's loop keeps serving other callers meanwhile.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any, ParamSpec, TypeVar

import anyio.to_thread

from ._bridge import CacheBridge, bridge_for
from .cache import AsyncToolCache
from .config import CacheConfig
from .stats import CacheStats

__all__ = ["SyncToolCache"]

P = ParamSpec("P")
R = TypeVar("R")

# keys() hands keys over in batches: one thread hop per batch, not per key
_KEYS_PER_HOP = 1000


class SyncToolCache:
    """``AsyncToolCache`` without ``await``. Use ``with`` or call :meth:`close` when done (a
    forgotten close never keeps the interpreter from exiting)."""

    def __init__(
        self,
        config: CacheConfig | None = None,
        *,
        clock: Callable[[], float] | None = None,
        cache: AsyncToolCache | None = None,
    ) -> None:
        self.cache = cache if cache is not None else AsyncToolCache(config, clock=clock)
        self.config = self.cache.config
        self._bridge: CacheBridge = bridge_for(self.cache)
        self._closed = False

    @classmethod
    def from_env(cls, **overrides: Any) -> SyncToolCache:
        """As :meth:`AsyncToolCache.from_env`: ``USE_REDIS``, ``REDIS_URL`` ... and overrides."""
        return cls(cache=AsyncToolCache.from_env(**overrides))

    def _run(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if kwargs:
            fn = functools.partial(fn, **kwargs)
        return self._bridge.run(f"SyncToolCache.{what}", fn, *args)

    # -- lifetime -----------------------------------------------------------------------
    def __enter__(self) -> SyncToolCache:
        self.connect()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def connect(self) -> None:
        self._run("connect", self.cache.connect)

    def close(self) -> None:
        """Close the cache and stop the background loop. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            self._run("close", self.cache.aclose)
        finally:
            self._bridge.close()

    # -- reads and writes ---------------------------------------------------------------
    def get(
        self, key: str, *, namespace: str = "default", default: Any = None, type: Any = None
    ) -> Any:
        return self._run(
            "get", self.cache.get, key, namespace=namespace, default=default, type=type
        )

    def set(
        self, key: str, value: Any, *, namespace: str = "default", ttl: float | None = None
    ) -> None:
        self._run("set", self.cache.set, key, value, namespace=namespace, ttl=ttl)

    def delete(self, key: str, *, namespace: str = "default") -> bool:
        result: bool = self._run("delete", self.cache.delete, key, namespace=namespace)
        return result

    def get_many(
        self, keys: Iterable[str], *, namespace: str = "default", type: Any = None
    ) -> dict[str, Any]:
        found: dict[str, Any] = self._run(
            "get_many", self.cache.get_many, list(keys), namespace=namespace, type=type
        )
        return found

    def set_many(
        self, mapping: Mapping[str, Any], *, namespace: str = "default", ttl: float | None = None
    ) -> None:
        self._run("set_many", self.cache.set_many, mapping, namespace=namespace, ttl=ttl)

    def get_or_set(
        self,
        key: str,
        loader: Callable[[], Any],
        *,
        namespace: str = "default",
        ttl: float | None = None,
        type: Any = None,
        **options: Any,
    ) -> Any:
        """The cached value, or what ``loader()`` returns (run once for concurrent misses, in
        a worker thread); ``options`` as for :meth:`AsyncToolCache.get_or_set`."""

        async def load() -> Any:
            return await anyio.to_thread.run_sync(loader)

        return self._run(
            "get_or_set",
            self.cache.get_or_set,
            key,
            load,
            namespace=namespace,
            ttl=ttl,
            type=type,
            **options,
        )

    def cached(
        self,
        *,
        namespace: str = "results",
        ttl: float | None = None,
        key: Callable[..., str] | None = None,
        **options: Any,
    ) -> Callable[[Callable[P, R]], Callable[P, R]]:
        """Decorate a sync function so equal calls share one cached result; keys are built as
        by :meth:`AsyncToolCache.cached` (the function's qualified name and arguments)."""

        def decorate(fn: Callable[P, R]) -> Callable[P, R]:
            @functools.wraps(fn)
            async def in_worker(*args: P.args, **kwargs: P.kwargs) -> R:
                return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

            run_cached = self.cache.cached(namespace=namespace, ttl=ttl, key=key, **options)(
                in_worker
            )

            @functools.wraps(fn)
            def blocking(*args: P.args, **kwargs: P.kwargs) -> R:
                result: R = self._run(fn.__qualname__, run_cached, *args, **kwargs)
                return result

            return blocking

        return decorate

    def invalidate(self, namespace: str) -> None:
        self._run("invalidate", self.cache.invalidate, namespace)

    def clear(self) -> None:
        self._run("clear", self.cache.clear)

    def keys(self, *, namespace: str = "default", prefix: str = "") -> Iterator[str]:
        """Each key of a fresh entry of ``namespace`` once (see ``AsyncToolCache.keys``),
        fetched a thousand at a time."""
        listing = self.cache.keys(namespace=namespace, prefix=prefix)
        try:
            while batch := self._run("keys", _next_batch, listing):
                yield from batch
        finally:
            self._run("keys", listing.aclose)  # type: ignore[attr-defined]

    # -- introspection ------------------------------------------------------------------
    def health_check(self) -> dict[str, Any]:
        report: dict[str, Any] = self._run("health_check", self.cache.health_check)
        return report

    def stats(self) -> CacheStats:
        return self.cache.stats()

    # -- tool-shaped helpers (ToolWeaver's ToolCache names) -----------------------------
    def get_catalog(self, catalog_hash: str) -> Any:
        return self._run("get_catalog", self.cache.get_catalog, catalog_hash)

    def set_catalog(self, catalog_hash: str, catalog: Any) -> None:
        self._run("set_catalog", self.cache.set_catalog, catalog_hash, catalog)

    def get_search_results(self, query_hash: str, catalog_version: str, top_k: int) -> Any:
        return self._run(
            "get_search_results", self.cache.get_search_results, query_hash, catalog_version, top_k
        )

    def set_search_results(
        self, query_hash: str, catalog_version: str, top_k: int, results: Any
    ) -> None:
        self._run(
            "set_search_results",
            self.cache.set_search_results,
            query_hash,
            catalog_version,
            top_k,
            results,
        )

    def get_embedding(self, text_hash: str, model_name: str) -> list[float] | None:
        value: list[float] | None = self._run(
            "get_embedding", self.cache.get_embedding, text_hash, model_name
        )
        return value

    def set_embedding(self, text_hash: str, model_name: str, embedding: Any) -> None:
        self._run("set_embedding", self.cache.set_embedding, text_hash, model_name, embedding)

    def get_tool(self, tool_name: str, version: str) -> Any:
        return self._run("get_tool", self.cache.get_tool, tool_name, version)

    def set_tool(self, tool_name: str, version: str, tool_data: Any) -> None:
        self._run("set_tool", self.cache.set_tool, tool_name, version, tool_data)

    def get_result(self, tool_name: str, args: Any) -> Any:
        return self._run("get_result", self.cache.get_result, tool_name, args)

    def set_result(self, tool_name: str, args: Any, result: Any) -> None:
        self._run("set_result", self.cache.set_result, tool_name, args, result)


async def _next_batch(listing: AsyncIterator[str]) -> list[str]:
    batch: list[str] = []
    async for key in listing:
        batch.append(key)
        if len(batch) >= _KEYS_PER_HOP:
            break
    return batch
