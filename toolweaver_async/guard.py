"""A store behind its circuit breaker: the one place where store failures are absorbed.

Every call either returns the store's answer or one of two markers: :data:`SKIPPED` (the breaker
refused, no I/O happened) or :data:`FAILED` (the store raised; the breaker counted it). The
coordinator never sees a store exception.
"""

from __future__ import annotations

import enum
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from .breaker import CircuitBreaker
from .stores.base import Store, StoreItem

__all__ = ["FAILED", "SKIPPED", "GuardedStore", "Unreachable"]

T = TypeVar("T")
logger = logging.getLogger("toolweaver_async.cache")


class Unreachable(enum.Enum):
    """Why a guarded call has no answer."""

    SKIPPED = "skipped"
    FAILED = "failed"


SKIPPED = Unreachable.SKIPPED
FAILED = Unreachable.FAILED


class GuardedStore:
    """Wraps one store with its breaker; records outcomes and the last error for health."""

    __slots__ = ("breaker", "last_error", "name", "store")

    def __init__(self, store: Store, breaker: CircuitBreaker) -> None:
        self.store = store
        self.breaker = breaker
        self.name = store.name
        self.last_error: str | None = None

    async def attempt(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T | Unreachable:
        """Run ``fn(*args)`` if the breaker allows it; never raises what the store raised."""
        breaker = self.breaker
        if not breaker.allow():
            return SKIPPED
        started = time.monotonic()
        try:
            result = await fn(*args)
        except Exception as exc:
            breaker.record_failure()
            self.last_error = f"{type(exc).__name__}: {exc}"
            logger.debug("%s store call failed: %s", self.name, self.last_error)
            return FAILED
        except BaseException:
            breaker.release()  # cancelled: neither a success nor a failure
            raise
        breaker.record_success(time.monotonic() - started)
        return result

    def get(self, namespace: str, key: str) -> Awaitable[bytes | Unreachable | None]:
        return self.attempt(self.store.get, namespace, key)

    def get_many(
        self, namespace: str, keys: Sequence[str]
    ) -> Awaitable[list[bytes | None] | Unreachable]:
        return self.attempt(self.store.get_many, namespace, keys)

    def set(
        self, namespace: str, key: str, data: bytes, ttl: float | None
    ) -> Awaitable[Unreachable | None]:
        return self.attempt(self.store.set, namespace, key, data, ttl)

    def add(
        self, namespace: str, key: str, data: bytes, ttl: float | None
    ) -> Awaitable[bool | Unreachable]:
        return self.attempt(self.store.add, namespace, key, data, ttl)

    def set_many(self, namespace: str, items: Sequence[StoreItem]) -> Awaitable[Unreachable | None]:
        return self.attempt(self.store.set_many, namespace, items)

    def delete(self, namespace: str, key: str) -> Awaitable[bool | Unreachable]:
        return self.attempt(self.store.delete, namespace, key)

    def invalidate(self, namespace: str) -> Awaitable[Unreachable | None]:
        return self.attempt(self.store.invalidate, namespace)

    def clear(self) -> Awaitable[Unreachable | None]:
        return self.attempt(self.store.clear)
