"""How a namespace spreads over a Redis Cluster without one hot slot.

A namespace is split into :data:`STRIPES` stripes. A key belongs to stripe ``crc16(key) % STRIPES``;
each stripe has its own generation counter, and its entries and counter share one hash tag, so
a read is still one ``MGET <counter> <entry>`` in one slot, checked atomically as on a single
server. ``invalidate`` increments every stripe's counter.

Why stripes and not the alternatives: one counter per namespace (or a hash tag per namespace)
puts every read of that namespace on one slot, one node; a counter cached client-side and
revalidated every few milliseconds costs no hot slot but lets another process read a dead
generation for that long. With stripes the check stays exact and a namespace's traffic spreads
over 64 slots. Their tags are chosen so the 64 slots fall evenly over the slot space (one per
256-slot range), hence evenly over the primaries of a cluster with ranges assigned as
``redis-cli --cluster create`` does; a per-namespace seed keeps namespaces on different slots.
"""

from __future__ import annotations

import binascii
import functools
from typing import Final

from .keyspace import Namespace

__all__ = ["STRIPES", "StripedNamespace", "key_slot", "stripe_tags"]

STRIPES: Final = 64
_SLOTS: Final = 16384
_MASK: Final = STRIPES - 1


def key_slot(key: bytes) -> int:
    """The cluster slot of ``key`` (CRC16 of its hash tag, or of the whole key)."""
    start = key.find(b"{")
    if start >= 0:
        end = key.find(b"}", start + 1)
        if end > start + 1:
            key = key[start + 1 : end]
    return binascii.crc_hqx(key, 0) % _SLOTS


@functools.cache
def stripe_tags(seed: int) -> tuple[str, ...]:
    """For each stripe a short hash tag whose slot lies in that stripe's 256-slot range:
    candidates ``<seed>.<n>`` fill the ranges as they fall (~300 CRCs, well under 1 ms)."""
    tags: list[str | None] = [None] * STRIPES
    missing = STRIPES
    width = _SLOTS // STRIPES
    candidate = 0
    while missing:
        tag = f"{seed}.{candidate}"
        stripe = key_slot(tag.encode()) // width
        if tags[stripe] is None:
            tags[stripe] = tag
            missing -= 1
        candidate += 1
    return tuple(tag for tag in tags if tag is not None)


class StripedNamespace:
    """A namespace on a cluster: its stripes (each a :class:`Namespace` with a tagged base)
    and the slot each stripe lives in."""

    __slots__ = ("name", "slots", "stripes")

    def __init__(self, prefix: str, name: str) -> None:
        tags = stripe_tags(binascii.crc_hqx(f"{prefix}:{name}".encode(), 0) % 1000)
        self.name = name
        self.stripes = [Namespace(prefix, name, tag) for tag in tags]
        self.slots = [key_slot(tag.encode()) for tag in tags]

    @staticmethod
    def stripe_of(key: bytes) -> int:
        return binascii.crc_hqx(key, 0) & _MASK

    def stripe_by_tag(self, tag: bytes) -> int | None:
        """The stripe whose hash tag is ``tag`` (from a scanned key name), if any."""
        text = tag.decode("ascii", "replace")
        for index, stripe in enumerate(self.stripes):
            if stripe.base.endswith(f"{{{text}}}:"):
                return index
        return None
