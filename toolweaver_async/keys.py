"""Key building: validation, stable hashing of call arguments, and ToolWeaver's key shapes.

A stable hash is the same for equal arguments in every process and every run: arguments are
msgpack-encoded with deterministic ordering (dict keys and sets sorted) and hashed with BLAKE2b.
"""

from __future__ import annotations

import hashlib
import inspect
import reprlib
from collections.abc import Callable, Mapping
from typing import Any

import msgspec

from .errors import InvalidKeyError, UnhashableArgumentsError

__all__ = [
    "catalog_key",
    "check_key",
    "embedding_key",
    "function_key",
    "named_key",
    "result_key",
    "search_key",
    "stable_hash",
    "tool_key",
]

_deterministic = msgspec.msgpack.Encoder(order="deterministic")


def check_key(key: object) -> str:
    """``key`` itself when it is a ``str`` (a subclass comes back as a plain ``str``, whatever
    its ``__str__`` says); an ``InvalidKeyError`` otherwise. Any string is a valid key: stores
    hash or length-prefix it, so no character needs checking."""
    if type(key) is not str:
        if isinstance(key, str):
            return str.__str__(key)
        # reprlib: a bounded repr; a plain repr of a deeply nested key raises RecursionError
        shown = reprlib.repr(key)
        raise InvalidKeyError(f"cache keys must be str, got {type(key).__qualname__}: {shown}")
    return key


def stable_hash(value: Any) -> str:
    """A 32-hex-digit hash of ``value`` that is equal for equal values in any process.

    Dict key order does not matter; values msgspec cannot encode (cyclic or too deeply nested
    ones included) raise ``UnhashableArgumentsError`` naming the type.
    """
    try:
        encoded = _deterministic.encode(value)
    except (TypeError, ValueError, OverflowError, RecursionError, msgspec.EncodeError) as exc:
        raise UnhashableArgumentsError(
            f"cannot build a stable cache key: {exc}", value_type=type(value).__qualname__
        ) from exc
    return hashlib.blake2b(encoded, digest_size=16).hexdigest()


def function_key(fn: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> str:
    """``<module>.<qualname>:<hash of the bound arguments>``.

    Arguments are bound to the signature with defaults applied, so ``f(1, b=2)``, ``f(a=1, b=2)``
    and ``f(1)`` (when ``b`` defaults to 2) share one key.
    """
    name = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
    try:
        bound = inspect.signature(fn).bind(*args, **kwargs)
        bound.apply_defaults()
        arguments: Any = dict(bound.arguments)
    except (TypeError, ValueError):  # no signature, or arguments that do not fit it
        arguments = [list(args), dict(kwargs)]
    return named_key(name, arguments)


def named_key(name: str, arguments: Any) -> str:
    """``<name>:<stable hash of arguments>``, with an error that says how to get around
    arguments that cannot be hashed."""
    try:
        digest = stable_hash(arguments)
    except UnhashableArgumentsError as exc:
        raise UnhashableArgumentsError(
            f"cannot build a cache key for {name}: {exc}; pass key= to @cached to build it",
            value_type=exc.value_type,
        ) from exc
    return f"{name}:{digest}"


# ToolWeaver's ToolCache key shapes, kept so existing tooling and dashboards still match.
def catalog_key(catalog_hash: str) -> str:
    return f"catalog:v2:{catalog_hash}"


def search_key(query_hash: str, catalog_version: str, top_k: int) -> str:
    return f"search:{query_hash}:{catalog_version}:{top_k}"


def embedding_key(text_hash: str, model_name: str) -> str:
    return f"embedding:{text_hash}:{model_name}"


def tool_key(tool_name: str, version: str) -> str:
    return f"tool:{tool_name}:v{version}"


def result_key(tool_name: str, args: Any) -> str:
    return f"result:{tool_name}:{stable_hash(args)}"
