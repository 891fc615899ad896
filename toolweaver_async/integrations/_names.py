"""Framework namespaces (tuples, collection names with '/') as valid cache namespace names."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence

__all__ = ["READABLE_CHARS", "namespace_name"]

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
# 64 characters are allowed: "<base>." + readable part + "-" + 12 hex digits of the hash
READABLE_CHARS = 36


def namespace_name(base: str, parts: Sequence[str]) -> str:
    """A cache namespace for ``parts``: readable, valid, and distinct for distinct ``parts``
    (the hash is of the exact parts as a JSON array, so ``("a:b",)`` and ``("a", "b")`` and
    every spelling the readable part flattens stay apart)."""
    exact = json.dumps(list(parts), ensure_ascii=False).encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(exact, digest_size=6).hexdigest()
    readable = _UNSAFE.sub("_", ".".join(parts)).strip("._")[:READABLE_CHARS] or "root"
    return f"{base}.{readable}-{digest}"
