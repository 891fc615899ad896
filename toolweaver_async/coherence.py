"""Cross-process coherence: when the memory layer may trust what it holds.

Every process has its own memory layer, and other processes change the slower stores behind its
back. :class:`MemoryCoherence` decides, per cache, how long a memory entry may be served:

* ``live``: every invalidation channel (Redis server-assisted client-side caching, see
  :mod:`toolweaver_async.stores.redis.tracking`) is subscribed and answering its heartbeat. Each
  reported change drops the matching memory entries, so an entry is served until its TTL or the
  next change to it, by any client.
* ``connecting`` / ``reconnecting``: a channel exists but is not known to be live. Entries are
  served for at most ``coherence_window`` seconds after they were stored.
* ``window``: no channel can exist (memory + file, the embedded default): the same cap, always,
  so processes sharing a ``cache_dir`` see each other's writes within the window.
* ``local``: memory is the only store, so nothing else can change it.
* ``off``: ``coherence_window=None``; entries are trusted until their TTL (single-process use).

Changing mode flushes: going live empties the memory layer (nothing stored before was vouched
for), and so does losing a live channel (a change may already have been missed). The cap is
folded into each entry's expiry when it is stored (``MemoryStore.trust_for``), so the hit path
pays nothing for any of this.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Any

from .config import CacheConfig
from .invalidation import ChangeSink, InvalidationChannel, ReadTracker
from .stores.base import LaneWritingStore, Store
from .stores.memory import MemoryStore
from .stores.redis.channels import RedisChannels

__all__ = [
    "ChangeSink",
    "InvalidationChannel",
    "MemoryCoherence",
    "ReadTracker",
    "coherence_for",
]

logger = logging.getLogger("toolweaver_async.coherence")


class MemoryCoherence:
    """The coherence state of one cache's memory layer, driven by its invalidation channels."""

    def __init__(
        self,
        memory: MemoryStore | None,
        reads: ReadTracker,
        *,
        window: float | None,
        channels: Sequence[InvalidationChannel] = (),
        shared: bool = False,
    ) -> None:
        self._memory = memory
        self._reads = reads
        self.window = window
        self._channels = list(channels) if window is not None and memory is not None else []
        self._live: set[int] = set()
        self._live_event = asyncio.Event()
        self._started = False
        self.invalidations = 0  # keys, namespaces and flushes reported by the channels
        self.entries_dropped = 0  # memory entries those reports removed
        self.flushes = 0  # times the memory layer was emptied by a mode change or a FLUSHDB
        self.channel_losses = 0
        self.last_error: str | None = None
        if window is None or memory is None:
            self.mode = "off" if memory is not None else "local"
        elif self._channels:
            self.mode = "connecting"
        elif shared:
            self.mode = "window"
        else:
            self.mode = "local"
        if memory is not None and self.mode not in ("off", "local"):
            memory.window = window
        if memory is not None and self.mode in ("connecting", "window"):
            memory.trust_for = window

    # -- lifetime -----------------------------------------------------------------------------
    def start(self) -> None:
        """Start every channel (idempotent); the memory layer stays capped until all are live."""
        if self._started:
            return
        self._started = True
        for channel in self._channels:
            channel.start(self)

    async def wait_live(self, within: float) -> bool:
        """Wait up to ``within`` seconds for every channel to be live; ``True`` when they are."""
        if not self._channels:
            return False
        try:
            async with asyncio.timeout(within):
                await self._live_event.wait()
        except TimeoutError:
            return False
        return True

    async def aclose(self) -> None:
        for channel in self._channels:
            try:
                await channel.aclose()
            except Exception as exc:  # closing must go on with the other channels
                logger.warning("closing invalidation channel %s failed: %s", channel.name, exc)

    # -- ChangeSink ---------------------------------------------------------------------------
    def keys_changed(self, changes: Iterable[tuple[str, str]]) -> None:
        memory = self._memory
        if memory is None:
            return
        reads = self._reads
        for namespace, key in changes:
            self.invalidations += 1
            reads.wrote(namespace, key)
            if memory.discard(namespace, key):
                self.entries_dropped += 1

    def namespace_changed(self, namespace: str) -> None:
        self.invalidations += 1
        self._reads.wrote_everything()
        if self._memory is not None:
            self.entries_dropped += self._memory.discard_namespace(namespace)

    def everything_changed(self) -> None:
        self.invalidations += 1
        self._flush()

    def channel_live(self, channel: InvalidationChannel) -> None:
        self._live.add(id(channel))
        if self.mode == "live" or len(self._live) < len(self._channels):
            return
        if self._memory is not None:
            self._memory.trust_for = None
        self._flush()  # whatever was stored before now was stored unvouched
        self.mode = "live"
        self.last_error = None
        self._live_event.set()
        logger.info("memory coherence live (%d channel(s))", len(self._channels))

    def channel_lost(
        self, channel: InvalidationChannel, reason: str, proof_age: float | None = None
    ) -> None:
        self._live.discard(id(channel))
        self.last_error = f"{channel.name}: {reason}"
        if self.mode != "live":
            return
        self.channel_losses += 1
        self.mode = "reconnecting"
        self._live_event.clear()
        if self._memory is not None and self.window is not None:
            # Entries stored while live were uncapped, and changes made since the last proof of
            # delivery may have been missed: each may be served until that proof + the window
            # (our own writes made during the outage stay readable that long too).
            self._memory.trust_for = self.window
            remaining = 0.0 if proof_age is None else self.window - proof_age
            self._reads.wrote_everything()
            self._memory.expire_all_within(remaining)
            self.flushes += 1
        logger.warning(
            "memory coherence lost (%s); memory entries now live at most %s s",
            self.last_error,
            self.window,
        )

    def channel_unsupported(self, channel: InvalidationChannel, reason: str) -> None:
        self.channel_lost(channel, reason)
        self.mode = "window"
        logger.warning(
            "memory coherence: %s; memory entries live at most %s s", reason, self.window
        )

    # -- introspection ------------------------------------------------------------------------
    def counters(self) -> dict[str, int]:
        return {
            "invalidations": self.invalidations,
            "entries_dropped": self.entries_dropped,
            "flushes": self.flushes,
            "channel_losses": self.channel_losses,
        }

    def describe(self) -> dict[str, Any]:
        """For ``health_check()``: the mode, the window, each channel's state, the counters."""
        return {
            "mode": self.mode,
            "window": self.window,
            "last_error": self.last_error,
            "channels": [channel.describe() for channel in self._channels],
            **self.counters(),
        }

    def _flush(self) -> None:
        self._reads.wrote_everything()
        if self._memory is not None:
            self._memory.discard_all()
        self.flushes += 1


def coherence_for(
    config: CacheConfig,
    memory: MemoryStore | None,
    reads: ReadTracker,
    stores: Sequence[Store],
) -> MemoryCoherence:
    """The coherence of a chain: a Redis invalidation channel when Redis is in it (tracking
    for the Redis store's write lane, if it has one), the window when another shared store
    (files) is, nothing to do for memory alone."""
    store_names = [store.name for store in stores]
    channels: list[InvalidationChannel] = []
    if memory is not None and config.coherence_window is not None and "redis" in store_names:
        lane = next((s.write_lane for s in stores if isinstance(s, LaneWritingStore)), None)
        channels.append(RedisChannels(config, lane=lane if lane and lane.claim() else None))
    return MemoryCoherence(
        memory,
        reads,
        window=config.coherence_window,
        channels=channels,
        shared=any(name != "memory" for name in store_names),
    )
