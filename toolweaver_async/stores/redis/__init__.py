"""The Redis store: one client per cache, batched round trips, and a cross-process key lock."""

from .store import RedisStore

__all__ = ["RedisStore"]
