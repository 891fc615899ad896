"""Which decoded values no caller can mutate, so the memory layer may hand out one object.

Copy-on-read exists so that a caller mutating a result cannot corrupt the cache. A value that
cannot be mutated needs no copy: it is decoded once and the same object is returned on every
memory hit (a 1 KB decode costs several microseconds; returning the memo, a fraction of one).
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import uuid
from typing import Any

import msgspec

__all__ = ["is_immutable"]

_SCALARS = frozenset(
    {
        str,
        bytes,
        int,
        float,
        bool,
        type(None),
        complex,
        decimal.Decimal,
        uuid.UUID,
        datetime.datetime,
        datetime.date,
        datetime.time,
        datetime.timedelta,
    }
)
# Deeper than this is judged mutable (a copy each hit): the check stays cheap and bounded.
_MAX_DEPTH = 32


def is_immutable(value: Any, _depth: int = 0) -> bool:
    """True for str, bytes, numbers, bool, None, dates and times, and tuples, frozensets,
    frozen msgspec Structs and frozen dataclasses made only of such values."""
    cls = value.__class__
    if cls in _SCALARS:
        return True
    if _depth >= _MAX_DEPTH:
        return False
    if cls is tuple or cls is frozenset:
        return all(is_immutable(item, _depth + 1) for item in value)
    if isinstance(value, msgspec.Struct):
        if not value.__struct_config__.frozen:
            return False
        return all(is_immutable(getattr(value, f), _depth + 1) for f in value.__struct_fields__)
    params = getattr(cls, "__dataclass_params__", None)
    if params is not None and params.frozen:
        return all(
            is_immutable(getattr(value, f.name), _depth + 1) for f in dataclasses.fields(value)
        )
    return False
