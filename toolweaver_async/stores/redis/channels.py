"""The invalidation channels of a Redis deployment, seen by the memory coherence as one.

A standalone server or a Sentinel-watched primary needs one channel (:mod:`.tracking`). A Redis
Cluster needs one per primary, since each primary broadcasts only changes to the keys it holds:
the set is live only while every primary has a live channel. The primaries are re-read with
``CLUSTER NODES`` every heartbeat interval, so after a failover (a replica promoted) or a
resharding onto a new primary the set follows: a primary without a channel makes the set
not-live (the memory layer falls back to the coherence window and is flushed when it is live
again); a channel to a node that is no longer a primary is closed.

A primary counts from the moment the cluster lists it, slots or not: a node receiving a slot
being migrated takes writes (``ASK``) before it owns the slot, so it is followed as soon as it
joins as a primary. A failed primary counts while it still holds slots: until its replica takes
them over, nothing vouches for them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection

from ...config import CacheConfig, redact_url
from ...invalidation import ChangeSink, InvalidationChannel
from .tracking import CHANNEL_ERRORS, RedisInvalidationChannel, connector, heartbeat_for
from .write_lane import WriteLane

__all__ = ["RedisChannels", "cluster_primaries"]

logger = logging.getLogger(__name__)

Address = tuple[str, int]
_QUERY_TIMEOUT: Final = 1.0


def cluster_primaries(nodes: str) -> set[Address]:
    """The primaries a ``CLUSTER NODES`` reply names that must each have a channel."""
    primaries: set[Address] = set()
    for line in nodes.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = fields[2].split(",")
        if "master" not in flags or "noaddr" in flags or "handshake" in flags:
            continue
        if "fail" in flags and len(fields) == 8:  # dead and without slots: nothing to follow
            continue
        host, _, port = fields[1].split("@")[0].rpartition(":")
        if host and port.isdigit() and int(port):
            primaries.add((host, int(port)))
    return primaries


class RedisChannels:
    """One channel for a single server; on a cluster, one per primary, refreshed (module doc)."""

    name = "redis"

    def __init__(
        self,
        config: CacheConfig,
        *,
        lane: WriteLane | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._lane = lane  # the store's write lane, tracked by a single server's channel
        self._clock = clock
        window = config.coherence_window
        self._refresh_every = heartbeat_for(1.0 if window is None else window)[0]
        self._seed: RedisInvalidationChannel | None = None
        self._nodes: dict[Address, RedisInvalidationChannel] = {}
        self._live: set[Address] = set()
        self._known: set[Address] | None = None  # primaries at the last refresh
        self._sink: ChangeSink | None = None
        self._task: asyncio.Task[None] | None = None
        self._asking: AbstractConnection | None = None  # for CLUSTER NODES
        self._closing: set[asyncio.Task[None]] = set()
        self._reported_live = False
        self._was_live = False
        self.cluster = config.redis_cluster is True
        self.topology_changes = 0
        self.last_error: str | None = None

    # -- InvalidationChannel --------------------------------------------------------------------
    def start(self, sink: ChangeSink) -> None:
        if self._sink is not None:
            return
        self._sink = sink
        if self.cluster:
            self._follow_cluster()
        else:
            self._seed = RedisInvalidationChannel.from_config(self._config, lane=self._lane)
            self._seed.start(self)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        await self._drop_asking()
        channels = [*self._nodes.values(), *([self._seed] if self._seed else [])]
        self._nodes.clear()
        await asyncio.gather(*(c.aclose() for c in channels), *self._closing)

    def describe(self) -> dict[str, Any]:
        if not self.cluster and self._seed is not None:
            return self._seed.describe()
        state = (
            "live" if self._reported_live else "reconnecting" if self._was_live else "connecting"
        )
        return {
            "name": self.name,
            "address": redact_url(self._config.redis_url),
            "mode": "cluster",
            "state": state,
            "primaries": [self._nodes[a].describe() for a in sorted(self._nodes)],
            "topology_changes": self.topology_changes,
            "last_error": self.last_error,
        }

    # -- ChangeSink of the per-server channels ------------------------------------------------
    def keys_changed(self, changes: Iterable[tuple[str, str]]) -> None:
        if self._sink is not None:
            self._sink.keys_changed(changes)

    def namespace_changed(self, namespace: str) -> None:
        if self._sink is not None:
            self._sink.namespace_changed(namespace)

    def everything_changed(self) -> None:
        if self._sink is not None:
            self._sink.everything_changed()

    def channel_live(self, channel: InvalidationChannel) -> None:
        if channel is self._seed and not self.cluster:
            self._report_live()
            return
        address = self._address_of(channel)
        if address is not None:
            self._live.add(address)
            self._check_live()

    def channel_lost(
        self, channel: InvalidationChannel, reason: str, proof_age: float | None = None
    ) -> None:
        if channel is self._seed and not self.cluster:
            self._report_lost(reason, proof_age)
            return
        address = self._address_of(channel)
        if address is not None:
            self._live.discard(address)
            self._report_lost(f"{address[0]}:{address[1]}: {reason}", proof_age)

    def channel_unsupported(self, channel: InvalidationChannel, reason: str) -> None:
        if channel is self._seed and not self.cluster:
            # The URL names a cluster node: follow every primary instead.
            logger.info("invalidation: %s; following every primary", reason)
            self.cluster = True
            self._follow_cluster()
            return
        address = self._address_of(channel)
        if address is not None:
            self._live.discard(address)
            self._report_lost(reason, None)

    # -- the cluster's primaries ----------------------------------------------------------------
    def _follow_cluster(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._refresh_forever())

    async def _refresh_forever(self) -> None:
        while True:
            try:
                primaries = await self._read_primaries()
            except CHANNEL_ERRORS as exc:
                self.last_error = f"topology: {type(exc).__name__}: {exc}"
            else:
                self._reconcile(primaries)
            await asyncio.sleep(self._refresh_every)

    async def _read_primaries(self) -> set[Address]:
        """``CLUSTER NODES`` from the first node that answers: the one asked last time, then
        the known primaries, then the URL's node. The connection is kept between refreshes."""
        if self._asking is not None:
            try:
                return await self._cluster_nodes(self._asking)
            except CHANNEL_ERRORS:
                await self._drop_asking()
        failure: BaseException = ConnectionError("no cluster node to ask")
        for node in [*sorted(self._known or ()), None]:
            self._asking = connector(self._config, node)()
            try:
                async with asyncio.timeout(_QUERY_TIMEOUT):
                    await self._asking.connect()  # type: ignore[no-untyped-call]
                return await self._cluster_nodes(self._asking)
            except CHANNEL_ERRORS as exc:
                failure = exc
                await self._drop_asking()
        raise failure

    @staticmethod
    async def _cluster_nodes(connection: AbstractConnection) -> set[Address]:
        async with asyncio.timeout(_QUERY_TIMEOUT):
            await connection.send_command("CLUSTER", "NODES")
            reply = await connection.read_response()
        return cluster_primaries(reply.decode() if isinstance(reply, bytes) else str(reply))

    async def _drop_asking(self) -> None:
        connection, self._asking = self._asking, None
        if connection is not None:
            await connection.disconnect(nowait=True)

    def _reconcile(self, primaries: set[Address]) -> None:
        """Close channels to nodes no longer primaries, open one to each new primary."""
        if self._known is not None and primaries != self._known:
            self.topology_changes += 1
            logger.info(
                "invalidation: cluster primaries now %s",
                ", ".join(f"{h}:{p}" for h, p in sorted(primaries)),
            )
        self._known = primaries
        for address in [a for a in self._nodes if a not in primaries]:
            channel = self._nodes.pop(address)
            self._live.discard(address)
            closing = asyncio.get_running_loop().create_task(channel.aclose())
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        added = [a for a in primaries if a not in self._nodes]
        for address in added:
            channel = RedisInvalidationChannel.from_config(self._config, address)
            self._nodes[address] = channel
            channel.start(self)
        if added:
            # Changes made on a primary nobody followed are unknown: trust nothing stored.
            names = ", ".join(f"{h}:{p}" for h, p in sorted(added))
            self._report_lost(f"no channel yet to primary {names}", None)
        self._check_live()

    # -- reporting ------------------------------------------------------------------------------
    def _address_of(self, channel: InvalidationChannel) -> Address | None:
        """The primary ``channel`` follows, ``None`` for a channel already dropped."""
        for address, current in self._nodes.items():
            if current is channel:
                return address
        return None

    def _check_live(self) -> None:
        if self._known and self._live >= self._known and not self._reported_live:
            self._report_live()

    def _report_live(self) -> None:
        self._reported_live = self._was_live = True
        self.last_error = None
        if self._sink is not None:
            self._sink.channel_live(self)

    def _report_lost(self, reason: str, proof_age: float | None) -> None:
        self._reported_live = False
        self.last_error = reason
        if self._sink is not None:
            self._sink.channel_lost(self, reason, proof_age)
