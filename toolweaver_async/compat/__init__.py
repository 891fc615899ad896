"""ToolWeaver's names, async: ``RedisCache``, ``ToolCache`` and a view of the breaker.

Port a ToolWeaver agent by importing from here and adding ``await``; see
``docs/migrating-from-toolweaver.md`` for the table of old and new calls.
"""

from .breaker_view import CircuitBreakerView
from .redis_cache import RedisCache
from .tool_cache import ToolCache

__all__ = ["CircuitBreakerView", "RedisCache", "ToolCache"]
