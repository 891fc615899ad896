"""Invalidation channel: Redis tells this process of every change to the cache's keys.

Redis server-assisted client-side caching in broadcast mode, over RESP2, on one dedicated
connection per server::

    CLIENT ID                                  -> n
    CLIENT TRACKING on REDIRECT n BCAST PREFIX <prefix>:
    SUBSCRIBE __redis__:invalidate

From then on Redis pushes the name of every key under ``<prefix>:`` that any client changes
(SET, DEL, INCR of a generation counter, expiry, eviction), and a null for FLUSHDB/FLUSHALL. The
connection redirects to itself, so tracking and subscription live and die together. Why this and
not an explicit PUBLISH beside each write: it costs writers nothing (Redis sends one message per
event-loop turn for all keys changed in it), it also sees writers that are not us (an operator's
DEL, FLUSHDB, expiry, eviction), and a lost connection is detected instead of silently missing
messages.

Our own writes: given the store's :class:`~.write_lane.WriteLane`, the tracking is turned on for
that lane instead (with ``NOLOOP``, redirected here), so the store's own sets and deletes do not
come back and the writer keeps its memory copy; the lane's liveness is then checked at every
heartbeat too (see that module). Without a lane (a cluster node, a store that has none) the
connection tracks for itself and our writes come back: the writer drops its memory copy when the
echo arrives and re-reads it once from Redis.

Liveness: a PING every ``heartbeat`` seconds travels the same connection as the invalidations,
so its PONG proves every change made before it has been delivered. A PING unanswered for
``heartbeat_timeout`` seconds, a closed socket or any error ends the session: the sink is told the
channel is lost (the memory layer falls back to the coherence window), and a new session starts
after a short backoff. Each new session is a fresh subscription, so a server restart (another
``run_id``) needs nothing special: the sink flushes whatever it stored while the channel was down.

One channel follows one server. A Redis Cluster needs one per primary (each primary broadcasts
only the keys it holds): a channel opened from the configured URL refuses a cluster node
(``unsupported``), and :mod:`.channels` then runs one ``node`` channel per primary, each of which
also refuses a node that is not (or no longer) a primary.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import RedisError

from ...config import CacheConfig, redact_url
from ...invalidation import ChangeSink
from .store import build_client
from .write_lane import LaneHeartbeat, WriteLane, run_id_of

__all__ = ["RedisInvalidationChannel"]

logger = logging.getLogger(__name__)

CHANNEL: Final = "__redis__:invalidate"
CHANNEL_ERRORS: Final = (RedisError, OSError, TimeoutError, ValueError, IndexError, TypeError)
_BACKOFF_FIRST: Final = 0.05
_BACKOFF_MAX: Final = 1.0


def heartbeat_for(window: float) -> tuple[float, float]:
    """(PING interval, PONG deadline) for a coherence ``window``: a silent loss is noticed
    within interval + deadline + interval <= max(window, 0.25 s)."""
    interval = max(window / 5, 0.05)
    return interval, max(window - 2 * interval, 0.15)


def connector(
    config: CacheConfig, node: tuple[str, int] | None = None
) -> Callable[[], AbstractConnection]:
    """Opens a bare connection to ``config.redis_url`` (or to ``node``, same credentials and
    TLS) without a per-read socket timeout: channels idle between messages, and their
    heartbeat bounds how long silence may last."""
    client = build_client(
        config.redis_url,
        password=config.redis_password,
        connect_timeout=config.redis_connect_timeout,
        command_timeout=config.redis_command_timeout,
        pool_size=1,
        tls_verify=config.redis_tls_verify,
    )
    pool = client.connection_pool
    options = {**pool.connection_kwargs, "socket_timeout": None}
    if node is not None:
        options.update(host=node[0], port=node[1])

    def connect() -> AbstractConnection:
        connection: AbstractConnection = pool.connection_class(**options)
        return connection

    return connect


class _Unsupported(Exception):
    """This server cannot vouch for the whole cache: stay in window mode, do not retry."""


class RedisInvalidationChannel:
    """Follows every change to keys under ``<prefix>:`` on one Redis server (see module doc)."""

    name = "redis"

    def __init__(
        self,
        connect: Callable[[], AbstractConnection],
        *,
        key_prefix: str,
        address: str,
        window: float,
        open_timeout: float = 1.0,
        cluster_node: bool = False,
        lane: WriteLane | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._connect = connect
        self._lane = lane if not cluster_node else None
        self._cluster_node = cluster_node
        self._prefix = f"{key_prefix}:".encode()
        self._address = address
        self._heartbeat, self._heartbeat_timeout = heartbeat_for(window)
        self._open_timeout = open_timeout
        self._clock = clock
        self._task: asyncio.Task[None] | None = None
        self._connection: AbstractConnection | None = None
        self.state = "stopped"
        self.run_id: str | None = None
        self.server_restarts = 0
        self.sessions = 0
        self.last_error: str | None = None
        # when the last answered PING was sent (or the subscription confirmed): every change
        # made before then has been delivered
        self._vouched_at: float | None = None

    @classmethod
    def from_config(
        cls,
        config: CacheConfig,
        node: tuple[str, int] | None = None,
        lane: WriteLane | None = None,
    ) -> RedisInvalidationChannel:
        """A channel to ``config.redis_url`` (or to one cluster ``node``, a primary) with the
        cache's credentials, TLS and timeouts, tracking for ``lane`` when one is given."""
        window = config.coherence_window
        address = redact_url(config.redis_url) if node is None else f"{node[0]}:{node[1]}"
        return cls(
            connector(config, node),
            key_prefix=config.key_prefix,
            address=address,
            window=1.0 if window is None else window,
            open_timeout=config.redis_connect_timeout + 4 * config.redis_command_timeout,
            cluster_node=node is not None,
            lane=lane,
        )

    # -- lifetime -------------------------------------------------------------------------------
    def start(self, sink: ChangeSink) -> None:
        if self._task is None:
            self.state = "connecting"
            self._task = asyncio.get_running_loop().create_task(self._run(sink))

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.state = "stopped"

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": self._address,
            "state": self.state,
            "run_id": self.run_id,
            "sessions": self.sessions,
            "server_restarts": self.server_restarts,
            "last_error": self.last_error,
            "own_writes": "left out (NOLOOP lane)" if self._lane is not None else "echoed",
        }

    # -- sessions -------------------------------------------------------------------------------
    async def _run(self, sink: ChangeSink) -> None:
        backoff = _BACKOFF_FIRST
        while True:
            connection = self._connect()
            live = False
            reason = "connection closed"
            try:
                await self._open(connection)
                live = True
                self.state = "live"
                self.sessions += 1
                sink.channel_live(self)
                backoff = _BACKOFF_FIRST
                await self._listen(connection, sink)
            except _Unsupported as exc:
                self.state = "unsupported"
                self.last_error = str(exc)
                sink.channel_unsupported(self, f"{self._address} is {exc}")
                return
            except CHANNEL_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"
            finally:
                # CancelledError passes through: aclose() is stopping us.
                await connection.disconnect(nowait=True)
            self.last_error = reason
            self.state = "reconnecting"
            proof = self._vouched_at
            sink.channel_lost(self, reason, None if proof is None else self._clock() - proof)
            self._vouched_at = None
            if live:
                logger.info("invalidation channel to %s lost: %s", self._address, reason)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, _BACKOFF_MAX)

    async def _open(self, connection: AbstractConnection) -> None:
        """Connect, turn on broadcast tracking redirected to this very connection, subscribe."""
        async with asyncio.timeout(self._open_timeout):
            await connection.connect()  # type: ignore[no-untyped-call]
            await connection.send_command("CLIENT", "ID")
            client_id = await connection.read_response()
            await connection.send_command("INFO", "server")
            self._note_run_id(await connection.read_response())
            await connection.send_command("INFO", "cluster")
            clustered = b"cluster_enabled:1" in await connection.read_response()
            if clustered and not self._cluster_node:
                # This server broadcasts only the keys it holds: one channel per primary is
                # needed, and vouching for the whole cache from one would be a silent gap.
                raise _Unsupported("a Redis Cluster node: one channel per primary needed")
            if self._cluster_node:
                # A replica (say, a primary demoted by a failover) takes no writes of its
                # own: its channel would vouch for nothing; retry until the topology moves on.
                await connection.send_command("ROLE")
                role = await connection.read_response()
                if not role or role[0] != b"master":
                    raise RedisError(f"{self._address} is not a primary")
            if self._lane is None:
                tracking = ("CLIENT", "TRACKING", "on", "REDIRECT", client_id, "BCAST", "PREFIX")
                await connection.send_command(*tracking, self._prefix)
                await connection.read_response()
            await connection.send_command("SUBSCRIBE", CHANNEL)
            await connection.read_response()
            if self._lane is not None:
                # After subscribing: what the lane's tracking reports from now on is read.
                await self._lane.track(client_id, self._prefix, self.run_id)
            self._vouched_at = self._clock()

    def _note_run_id(self, info: Any) -> None:
        run_id = run_id_of(info)
        if run_id is not None:
            if self.run_id is not None and run_id != self.run_id:
                self.server_restarts += 1
            self.run_id = run_id

    async def _listen(self, connection: AbstractConnection, sink: ChangeSink) -> None:
        """Deliver invalidations until the connection fails or a PONG is overdue."""
        started = self._clock() if self._vouched_at is None else self._vouched_at
        lane = (
            None
            if self._lane is None
            else LaneHeartbeat(self._lane, deadline=self._heartbeat_timeout, started=started)
        )
        try:
            await self._listen_until_lost(connection, sink, lane, started)
        finally:
            if lane is not None:
                await lane.aclose()

    async def _listen_until_lost(
        self,
        connection: AbstractConnection,
        sink: ChangeSink,
        lane: LaneHeartbeat | None,
        channel_vouched: float,
    ) -> None:
        pings: deque[float] = deque()
        clock = self._clock
        next_ping = clock()
        while True:
            now = clock()
            if lane is not None:
                lane.check(now)
            # Every change made before this is delivered (the lane's too, when it has one).
            self._vouched_at = (
                channel_vouched if lane is None else min(channel_vouched, lane.vouched_at)
            )
            if now >= next_ping:
                await connection.send_command("PING")
                pings.append(now)
                if lane is not None:
                    lane.ping(now)
                next_ping = now + self._heartbeat
            overdue = bool(pings) and now - pings[0] > self._heartbeat_timeout
            # When overdue, one short read first: after the loop was starved, a PONG may sit
            # read but unparsed (the previous read's timeout fired before it was parsed).
            reply = await connection.read_response(
                timeout=0.01 if overdue else max(next_ping - now, 0.001),
                disconnect_on_error=False,
            )
            if overdue and reply is None:
                raise TimeoutError(f"no PONG within {self._heartbeat_timeout:.2f} s")
            if reply is None:  # nothing within the timeout: time for the next PING
                continue
            kind = reply[0]
            if kind == b"message":
                self._deliver(reply[2], sink)
            elif kind == b"pong":
                channel_vouched = pings.popleft()

    def _deliver(self, keys: list[bytes] | None, sink: ChangeSink) -> None:
        """``<prefix>:<ns>:<generation>:<key>`` names an entry, ``<prefix>:<ns>:gen`` a
        namespace's generation counter (invalidate), ``None`` a flushed database; on a cluster
        a stripe's ``{<tag>}:`` comes after the namespace. Lock keys (``<prefix>:!lock:...``)
        and anything else are not memory entries."""
        if keys is None:
            sink.everything_changed()
            return
        skip = len(self._prefix)
        changed: list[tuple[str, str]] = []
        for raw in keys:
            namespace, sep, rest = raw[skip:].partition(b":")
            if not sep or namespace.startswith(b"!"):
                continue
            if rest.startswith(b"{"):  # a cluster stripe: <ns>:{<tag>}:<generation>:<key>
                rest = rest.partition(b"}:")[2]
            if rest == b"gen":
                sink.namespace_changed(namespace.decode())
                continue
            generation, sep, key = rest.partition(b":")
            if sep and generation.isdigit():
                changed.append((namespace.decode(), key.decode(errors="replace")))
        if changed:
            sink.keys_changed(changed)
