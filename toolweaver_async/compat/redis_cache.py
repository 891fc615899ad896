"""ToolWeaver's ``RedisCache``, async: same constructor, same method names, this library's chain.

``RedisCache(redis_url=None, password=None, ssl=False, cache_dir=None, enable_fallback=True,
pool_size=10)`` builds an :class:`~toolweaver_async.AsyncToolCache` on memory -> Redis -> file
(file left out with ``enable_fallback=False``). Values are msgspec-encoded, never pickled; TLS
certificates are verified; ``clear`` removes this cache's prefix only, never ``FLUSHDB``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import TracebackType
from typing import Any

# The module, not the class: cache.py imports compat.helpers, so this package is imported
# while cache.py is still being executed.
from .. import cache as _cache
from ..config import CacheConfig, redact_url
from .breaker_view import CircuitBreakerView

__all__ = ["RedisCache"]

_SEED_TTL = 3600


def _with_tls(url: str) -> str:
    """ToolWeaver's ``ssl=True`` on a ``redis://`` URL: the same server over TLS."""
    return "rediss://" + url.removeprefix("redis://") if url.startswith("redis://") else url


class RedisCache:
    """Async successor of ToolWeaver's ``RedisCache``; ``await`` every call, or use it as
    ``async with RedisCache(...) as cache``. ``cache.cache`` is the ``AsyncToolCache`` behind it.

    The environment fills what is not given (``REDIS_URL``, ``REDIS_PASSWORD``,
    ``TOOLWEAVER_CACHE_DIR``, ``TOOLWEAVER_CACHE_PREFIX``); Redis is always in the chain, as it
    was in ToolWeaver, and its outages are absorbed by the breaker and the outage journal.
    """

    def __init__(
        self,
        redis_url: str | None = None,
        password: str | None = None,
        ssl: bool = False,
        cache_dir: Path | str | None = None,
        enable_fallback: bool = True,
        pool_size: int = 10,
        **settings: Any,
    ) -> None:
        overrides: dict[str, Any] = {"use_redis": True, "redis_pool_size": pool_size}
        if redis_url is not None:
            overrides["redis_url"] = redis_url
        if password is not None:
            overrides["redis_password"] = password
        if cache_dir is not None:
            overrides["cache_dir"] = Path(cache_dir)
        if not enable_fallback:
            overrides["stores"] = ("memory", "redis")
        overrides.update(settings)  # any other CacheConfig field, keyword-only
        config = CacheConfig.from_env(**overrides)
        if ssl:
            config = config.with_changes(redis_url=_with_tls(config.redis_url))
        self.cache = _cache.AsyncToolCache(config)
        self.enable_fallback = enable_fallback
        self._connected: asyncio.Future[None] | None = None
        breaker = self.cache.breakers()["redis"]
        self.circuit_breaker = CircuitBreakerView(
            breaker, failure_threshold=config.breaker.failure_threshold
        )

    # -- what ToolWeaver exposed ----------------------------------------------------------
    @property
    def redis_url(self) -> str:
        """The Redis URL, password redacted."""
        return redact_url(self.cache.config.redis_url)

    @property
    def ssl(self) -> bool:
        return self.cache.config.redis_url.startswith("rediss://")

    @property
    def cache_dir(self) -> Path:
        return self.cache.config.cache_dir

    @property
    def redis_available(self) -> bool:
        """``False`` while Redis's breaker refuses calls."""
        return self.circuit_breaker.is_available()

    # -- lifetime -------------------------------------------------------------------------
    async def _ready(self) -> _cache.AsyncToolCache:
        """Connect once, on first use, as ToolWeaver's constructor did (concurrent first
        callers share the one connect)."""
        if self._connected is None:
            self._connected = asyncio.ensure_future(self.cache.connect())
        if not self._connected.done():
            await asyncio.shield(self._connected)
        return self.cache

    async def __aenter__(self) -> RedisCache:
        await self._ready()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Release connections and files. Idempotent."""
        if self._connected is not None and not self._connected.done():
            await asyncio.wait([self._connected])
        await self.cache.aclose()

    # -- ToolWeaver's calls ---------------------------------------------------------------
    async def get(self, key: str) -> Any:
        """The cached value, or ``None``."""
        return await (await self._ready()).get(key)

    async def set(self, key: str, value: Any, ttl: int | float = _SEED_TTL) -> bool:
        """Cache ``value`` for ``ttl`` seconds; ``True`` once it is written. A store that is
        down is absorbed (Redis writes are journaled and replayed); a value msgspec cannot
        encode raises ``SerializationError`` instead of being pickled."""
        await (await self._ready()).set(key, value, ttl=ttl)
        return True

    async def delete(self, key: str) -> bool:
        """Remove ``key`` everywhere; ``True`` when a store held it."""
        return await (await self._ready()).delete(key)

    async def clear(self) -> bool:
        """Remove every entry of this cache's prefix; never anything else, never ``FLUSHDB``."""
        await (await self._ready()).clear()
        return True

    async def health_check(self) -> dict[str, Any]:
        """ToolWeaver's keys (``circuit_breaker_state`` in its upper case) and the library's
        per-store report under ``stores``."""
        report = await (await self._ready()).health_check()
        report["circuit_breaker_state"] = self.circuit_breaker.state
        report["fallback_enabled"] = self.enable_fallback
        return report
