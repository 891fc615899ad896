"""The public surface: every name in __all__ exists and is importable from the top."""

from __future__ import annotations

import toolweaver_async


def test_all_names_are_exported_and_exist() -> None:
    for name in toolweaver_async.__all__:
        assert hasattr(toolweaver_async, name), name
    assert sorted(toolweaver_async.__all__) == sorted(set(toolweaver_async.__all__))


def test_design_names_are_public() -> None:
    required = {
        "AsyncToolCache",
        "CacheConfig",
        "NamespacePolicy",
        "CircuitBreaker",
        "BreakerState",
        "CacheStats",
        "CacheError",
        "SerializationError",
        "ValueTooLargeError",
        "ConfigError",
        "BreakerOpenError",
    }
    assert required <= set(toolweaver_async.__all__)


def test_every_error_derives_from_cache_error() -> None:
    errors = [getattr(toolweaver_async, n) for n in toolweaver_async.__all__ if n.endswith("Error")]
    assert len(errors) >= 8
    for error in errors:
        assert issubclass(error, toolweaver_async.CacheError), error
