"""Where entries live in Redis: physical key names, namespace generations, and small helpers.

Physical keys are ``<prefix>:<namespace>:<generation>:<key>``, with the namespace's generation
counter at ``<prefix>:<namespace>:gen``. On a Redis Cluster a namespace is split into stripes
(see :mod:`.cluster_keys`), each a :class:`Namespace` whose base carries a hash tag:
``<prefix>:<namespace>:{<tag>}:<generation>:<key>`` and ``<prefix>:<namespace>:{<tag>}:gen``, so
an entry and the counter it is checked against always share a slot.
"""

from __future__ import annotations

import logging
from typing import Any, Final

__all__ = ["Generation", "Namespace", "glob_escape", "is_counter", "raise_first_error"]

logger = logging.getLogger("toolweaver_async.stores.redis")


class Generation:
    """One generation of a namespace as this process last saw it (immutable, swapped whole)."""

    __slots__ = ("number", "prefix", "prefix_bytes", "raw", "readable")

    def __init__(self, base: str, number: int, raw: Any, *, readable: bool = True) -> None:
        self.number = number
        self.raw = raw  # the counter's reply as seen on the wire: None, b"3" ...
        self.prefix = f"{base}{number}:"
        self.prefix_bytes = self.prefix.encode()
        # False while the counter holds bytes that are no integer (written by something else):
        # nothing of the namespace can be trusted, so reads miss until invalidate or clear.
        self.readable = readable


class Namespace:
    """Precomputed key parts of one namespace (or one stripe of it, with ``tag``) and the
    generation this process last saw."""

    __slots__ = ("base", "gen_key", "gen_key_bytes", "generation")

    def __init__(self, prefix: str, name: str, tag: str | None = None) -> None:
        self.base = f"{prefix}:{name}:" if tag is None else f"{prefix}:{name}:{{{tag}}}:"
        self.gen_key = f"{self.base}gen"
        self.gen_key_bytes = self.gen_key.encode()
        # Never seen: guess 0 (the counter is usually absent); the first reply corrects it.
        self.generation = Generation(self.base, 0, None)

    def observe(self, raw: Any) -> Generation:
        """Adopt the counter value ``raw`` from a reply and return the generation it names."""
        current = self.generation
        if raw == current.raw:
            return current
        try:
            number = 0 if raw is None else int(raw)
        except (TypeError, ValueError):
            if current.readable:
                logger.warning(
                    "redis generation counter %r holds %d bytes that are no integer: reads of "
                    "that namespace miss until invalidate() or clear() repairs it",
                    self.gen_key,
                    len(raw) if isinstance(raw, bytes) else -1,
                )
            # Writes keep going to the last good generation (nobody reads it meanwhile); a
            # raw value that matches nothing sends every reply back here.
            self.generation = Generation(self.base, current.number, object(), readable=False)
            return self.generation
        observed = Generation(self.base, number, raw)
        self.generation = observed
        return observed


def raise_first_error(replies: list[Any]) -> list[Any]:
    """``replies`` of a pipeline, or the first command error among them raised."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern (``SCAN MATCH``, ``KEYS``)."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def is_counter(key: bytes | str) -> bool:
    """A generation counter: ``<prefix>:<namespace>:gen`` (two colons) or, on a cluster,
    ``<prefix>:<namespace>:{<tag>}:gen`` (three); entry keys have more colons than either."""
    raw = key.encode() if isinstance(key, str) else key
    if not raw.endswith(b":gen"):
        return False
    colons = raw.count(b":")
    return colons == 2 or (colons == 3 and raw.endswith(b"}:gen"))


# Compare-and-delete: a corrupt entry is removed only if no write replaced it since it was read.
DELETE_IF_SAME: Final = (
    "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end "
    "return 0"
)
