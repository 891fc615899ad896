"""toolweaver-async: an async-first cache for asyncio AI agents.

Memory, Redis and file layers behind one fallback chain, each remote layer guarded by its own
circuit breaker, msgspec on the hot path::

    async with AsyncToolCache.from_env() as cache:
        await cache.set("user:123", {"name": "Alice"}, ttl=60)
        user = await cache.get("user:123")
"""

from .cache import AsyncToolCache
from .config import DEFAULT_NAMESPACES, BreakerSettings, CacheConfig, NamespacePolicy, redact_url
from .errors import (
    BreakerOpenError,
    CacheClosedError,
    CacheError,
    ConfigError,
    CorruptEntryError,
    InvalidKeyError,
    InvalidTTLError,
    LoaderTimeoutError,
    SerializationError,
    StoreError,
    SyncInEventLoopError,
    UnhashableArgumentsError,
    ValueTooLargeError,
)
from .keys import stable_hash
from .loading.decorator import BoundCachedFunction, CachedFunction
from .metrics.hooks import CacheListener
from .resilience.breaker import (
    BreakerListener,
    BreakerSettingsFields,
    BreakerState,
    CircuitBreaker,
)
from .stats import CacheStats, NamespaceStats
from .stores.base import Store
from .stores.file import FileStore
from .stores.memory import MemoryStore
from .stores.redis.store import RedisStore
from .sync import SyncToolCache

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_NAMESPACES",
    "AsyncToolCache",
    "BoundCachedFunction",
    "BreakerListener",
    "BreakerOpenError",
    "BreakerSettings",
    "BreakerSettingsFields",
    "BreakerState",
    "CacheClosedError",
    "CacheConfig",
    "CacheError",
    "CacheListener",
    "CacheStats",
    "CachedFunction",
    "CircuitBreaker",
    "ConfigError",
    "CorruptEntryError",
    "FileStore",
    "InvalidKeyError",
    "InvalidTTLError",
    "LoaderTimeoutError",
    "MemoryStore",
    "NamespacePolicy",
    "NamespaceStats",
    "RedisStore",
    "SerializationError",
    "Store",
    "StoreError",
    "SyncInEventLoopError",
    "SyncToolCache",
    "UnhashableArgumentsError",
    "ValueTooLargeError",
    "__version__",
    "redact_url",
    "stable_hash",
]
