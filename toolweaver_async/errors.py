"""The one exception hierarchy of toolweaver-async.

Callers catch :class:`CacheError`; nothing raised by the library escapes it except ``ValueError``
and ``TypeError`` subclasses that are *also* ``CacheError``\\ s, so both styles of ``except`` work::

    CacheError
    ├── ConfigError                 a configuration or URL that cannot work (also ValueError)
    ├── InvalidTTLError             ttl <= 0 or not a number (also ValueError)
    ├── InvalidKeyError             a key that is not a string (also TypeError)
    ├── SerializationError          a value msgspec cannot encode (also TypeError)
    │   └── UnhashableArgumentsError  decorator arguments with no stable hash
    ├── ValueTooLargeError          an encoded value over ``max_value_bytes`` (also ValueError)
    ├── BreakerOpenError            a guarded call refused while its breaker is open
    ├── CacheClosedError            a load cut short because its cache was closed
    ├── LoaderTimeoutError          waited too long for another process's loader
    ├── SyncInEventLoopError        a blocking call on a running loop's thread (also RuntimeError)
    └── StoreError                  a store failed; absorbed by the chain, never raised by get/set
        └── CorruptEntryError       bytes in a store that are not one of our entries

Store failures are translated into :class:`StoreError` at one seam per store
(``raise ... from exc``) and absorbed by :class:`~toolweaver_async.AsyncToolCache`; they reach
users only through the stores' own API, ``health_check()`` and ``stats()``.
"""

from __future__ import annotations

__all__ = [
    "BreakerOpenError",
    "CacheClosedError",
    "CacheError",
    "ConfigError",
    "CorruptEntryError",
    "InvalidKeyError",
    "InvalidTTLError",
    "LoaderTimeoutError",
    "SerializationError",
    "StoreError",
    "SyncInEventLoopError",
    "UnhashableArgumentsError",
    "ValueTooLargeError",
]


class CacheError(Exception):
    """Base class of every error this library raises."""


class ConfigError(CacheError, ValueError):
    """A configuration value, environment variable or URL that cannot work."""


class InvalidTTLError(CacheError, ValueError):
    """A ``ttl`` that is not a positive number of seconds."""


class InvalidKeyError(CacheError, TypeError):
    """A cache key that is not a ``str``."""


class SerializationError(CacheError, TypeError):
    """A value that msgspec cannot encode; nothing was written anywhere."""

    def __init__(self, message: str, *, key: str | None = None, value_type: str | None = None):
        super().__init__(message)
        self.key = key
        self.value_type = value_type


class UnhashableArgumentsError(SerializationError):
    """Arguments of a ``@cached`` function that cannot be hashed into a stable key."""


class ValueTooLargeError(CacheError, ValueError):
    """An encoded value larger than the configured ``max_value_bytes``; nothing was written."""

    def __init__(self, message: str, *, key: str, size: int, limit: int):
        super().__init__(message)
        self.key = key
        self.size = size
        self.limit = limit


class BreakerOpenError(CacheError):
    """A call refused by an open (or saturated half-open) circuit breaker."""


class CacheClosedError(CacheError):
    """A ``get_or_set`` whose shared load was cancelled because the cache closed under it."""


class LoaderTimeoutError(CacheError):
    """Waited longer than allowed for a value another process was loading."""


class SyncInEventLoopError(CacheError, RuntimeError):
    """A blocking call (``SyncToolCache``, an adapter's sync method) made on the thread of a
    running event loop: waiting there would block that loop, or deadlock it. Await the async
    API instead, or make the call from a worker thread."""


class StoreError(CacheError):
    """A store could not do what was asked (I/O, network, timeout); the chain absorbs it.

    ``refused``: the store answered at once and refused this one call (a read-only or full
    disk, no permission to write). It is not down, so its breaker does not count the call:
    reads it can still serve go on being served.

    ``stalled``: the call ran out of time while this process was stalled (its event loop
    blocked or starved of CPU past the deadline). That says nothing about the store, so its
    breaker does not count the call either.

    ``incident``: the one failure this call shared with others (a batched round trip that
    failed fails all its callers), which the breaker counts once; ``None`` when it is its own.

    ``written``: when the store answers per node (a cluster) and only part of it failed, the
    keys of a multi-key write that did land all the same (empty: none); ``None`` when the store
    cannot tell. The caller keeps only the others pending, and may go on with other keys.
    """

    def __init__(
        self,
        message: str,
        *,
        store: str = "",
        refused: bool = False,
        stalled: bool = False,
        incident: object | None = None,
    ):
        super().__init__(message)
        self.store = store
        self.refused = refused
        self.stalled = stalled
        self.incident = incident
        self.written: frozenset[str] | None = None


class CorruptEntryError(StoreError):
    """Bytes under one of our keys that do not decode as an entry."""
