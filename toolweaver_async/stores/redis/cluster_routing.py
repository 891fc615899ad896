"""How the cluster engine reaches the nodes of a Redis Cluster: one round-trip batcher per
primary, reads and pipelines grouped by slot and sent to every node at once, and redirections.

A command answered ``MOVED``/``ASK`` (a slot moving, a replica promoted) is run again through
the ``RedisCluster`` client, which owns the slot table and follows the redirection; a node that
fails or refuses connections makes the engine ask the cluster for a fresh slot table (at most
every 100 ms), so the slots of a dead primary reach its promoted replica as soon as the cluster
names it, while the other primaries keep answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError

from ...config import MAX_TRACKED_NAMESPACES
from .batching import RoundTripBatcher
from .client import DRIVER_ERRORS, store_error
from .cluster_keys import StripedNamespace

__all__ = ["ClusterRouting"]

logger = logging.getLogger(__name__)

_REFRESH_INTERVAL: Final = 0.1
# Round trips per node started without waiting for a full batch (see the batcher): one, so the
# calls of a busy turn leave as one pipeline per node. A full batch still takes another connection.
EAGER_TRIPS_PER_NODE: Final = 1


def _redirected(exc: BaseException | None) -> bool:
    """A reply telling us to ask elsewhere or again (MOVED, ASK, TRYAGAIN), not a failure."""
    while exc is not None:
        if isinstance(exc, AskError | TryAgainError):  # MovedError is an AskError
            return True
        if isinstance(exc, ResponseError):
            return False
        exc = exc.__cause__
    return False


class ClusterRouting:
    """The connection side of :class:`~.cluster.ClusterEngine`: lifetime, per-node batchers,
    slot-grouped reads and pipelines, and slot-table refreshes after failures."""

    def __init__(
        self,
        client: RedisCluster,
        *,
        prefix: str,
        secrets: tuple[str, ...],
        url: str,
        command_timeout: float,
        connections: int,
    ) -> None:
        self.client = client
        self._prefix = prefix
        self._secrets = secrets
        self._url = url
        self._timeout = command_timeout
        self._connections = connections
        self._batchers: dict[str, RoundTripBatcher] = {}
        self._namespaces: dict[str, StripedNamespace] = {}
        self._started = False
        self._refresh: asyncio.Task[None] | None = None
        self._refreshed_at = 0.0
        self._cleanups: set[asyncio.Task[None]] = set()
        self.failed_nodes: dict[str, str] = {}  # node name -> last error, until it answers

    # -- lifetime ------------------------------------------------------------------------------

    async def start(self) -> None:
        """Read the slot table from the cluster (once; later refreshes are automatic)."""
        if not self._started:
            try:
                await self.client.initialize()
            except DRIVER_ERRORS as exc:
                raise store_error("cluster discovery", exc, self._secrets) from exc
            self._started = True

    async def aclose(self) -> None:
        for task in [*self._cleanups, *([self._refresh] if self._refresh else [])]:
            task.cancel()
        await asyncio.gather(*self._cleanups, return_exceptions=True)
        for batcher in self._batchers.values():
            await batcher.aclose()
        try:
            await self.client.aclose()
        except DRIVER_ERRORS as exc:
            logger.debug("closing redis cluster client for %s: %s", self._url, type(exc).__name__)

    def primaries(self) -> list[tuple[str, int]]:
        """``(host, port)`` of every primary in the current slot table."""
        return [(node.host, int(node.port)) for node in self.client.get_primaries()]

    # -- routing -------------------------------------------------------------------------------

    def _batcher(self, slot: int) -> RoundTripBatcher:
        node = self.client.nodes_manager.get_node_from_slot(slot)
        batcher = self._batchers.get(node.name)
        if batcher is None:

            def connect() -> AbstractConnection:
                # Like the client's connections to this node, without a per-read socket
                # timeout: the batcher bounds each whole round trip instead.
                options = {**node.connection_kwargs, "socket_timeout": None}
                conn: AbstractConnection = node.connection_class(**options)
                return conn

            batcher = self._node_batcher(node.name, connect)
            self._batchers[node.name] = batcher
        return batcher

    def _node_batcher(
        self, name: str, connect: Callable[[], AbstractConnection]
    ) -> RoundTripBatcher:
        """The batcher for primary ``name`` (the engine puts each behind its node's breaker)."""
        return RoundTripBatcher(
            connect,
            connections=self._connections,
            timeout=self._timeout,
            eager_trips=EAGER_TRIPS_PER_NODE,
        )

    async def _mget(self, slot: int, keys: Sequence[bytes]) -> list[Any]:
        if not self._started:
            await self.start()
        try:
            return await self._batcher(slot).mget(keys, slot)
        except DRIVER_ERRORS as exc:
            return await self._mget_redirected(exc, keys)

    async def _mget_redirected(self, exc: BaseException, keys: Sequence[bytes]) -> list[Any]:
        """After ``exc`` failed an ``MGET`` of ``keys``: re-run it through the cluster client
        when ``exc`` is a redirection (which the client follows), else raise ``exc``."""
        if not _redirected(exc):
            raise exc
        self._schedule_refresh()
        reply: list[Any] = await self.client.execute_command("MGET", *keys)
        return reply

    def _by_node(
        self, groups: Sequence[tuple[int, Any]]
    ) -> tuple[dict[int, list[int]], dict[int, RoundTripBatcher]]:
        """The positions of ``groups`` (each led by its slot) per node, and each node's batcher."""
        by_node: dict[int, list[int]] = {}
        batchers: dict[int, RoundTripBatcher] = {}
        for position, (slot, _) in enumerate(groups):
            batcher = self._batcher(slot)
            by_node.setdefault(id(batcher), []).append(position)
            batchers[id(batcher)] = batcher
        return by_node, batchers

    async def _mgets(self, groups: Sequence[tuple[int, Sequence[bytes]]]) -> list[list[Any]]:
        """One ``MGET`` per (slot, keys) group, one pipeline per node, all nodes at once."""
        if not self._started:
            await self.start()
        by_node, batchers = self._by_node(groups)
        results: list[Any] = [None] * len(groups)

        async def on_node(node: int) -> None:
            positions = by_node[node]
            replies = await batchers[node].mget_groups(
                [(groups[p][0], groups[p][1]) for p in positions]
            )
            for position, reply in zip(positions, replies, strict=True):
                if isinstance(reply, Exception):
                    if not _redirected(reply):
                        raise reply
                    self._schedule_refresh()
                    reply = await self.client.execute_command("MGET", *groups[position][1])
                results[position] = reply

        await _all(on_node(node) for node in by_node)
        return results

    async def _pipeline(self, slot: int, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        reply: list[Any] = (await self._pipelines([(slot, commands)]))[0]
        return reply

    async def _pipelines(
        self, groups: Sequence[tuple[int, Sequence[tuple[Any, ...]]]], *, per_node: bool = False
    ) -> list[Any]:
        """Each group's commands (all in one slot), one pipeline per node, all nodes at once;
        a group answered with a redirection is run again through the cluster client.
        ``per_node``: a node's failure becomes the reply of each of its groups (the others'
        replies are kept) instead of failing the whole call."""
        if not self._started:
            await self.start()
        by_node, batchers = self._by_node(groups)
        results: list[Any] = [None] * len(groups)

        async def on_node(node: int) -> None:
            try:
                await run_on_node(node)
            except DRIVER_ERRORS as exc:
                if not per_node:
                    raise
                for position in by_node[node]:
                    if results[position] is None:
                        results[position] = exc

        async def run_on_node(node: int) -> None:
            positions = by_node[node]
            commands = [command for p in positions for command in groups[p][1]]
            replies = await batchers[node].pipeline(commands)
            offset = 0
            for position in positions:
                count = len(groups[position][1])
                reply = replies[offset : offset + count]
                offset += count
                if any(_redirected(r) for r in reply if isinstance(r, Exception)):
                    self._schedule_refresh()
                    pipe = self.client.pipeline(transaction=False)
                    for command in groups[position][1]:
                        pipe.execute_command(*command)
                    reply = await pipe.execute(raise_on_error=False)
                results[position] = reply

        await _all(on_node(node) for node in by_node)
        return results

    async def _ping_node(self, node: ClusterNode) -> None:
        await self._on_node(node, "PING")

    async def _on_node(self, node: ClusterNode, *args: Any) -> Any:
        """One command on one node (the client answers ``{node name: reply}``)."""
        reply = await self.client.execute_command(*args, target_nodes=node)
        if isinstance(reply, dict) and node.name in reply:
            return reply[node.name]
        if args[0] == "SCAN":  # ({node name: cursor}, keys)
            cursors, keys = reply
            return cursors[node.name], keys
        return reply

    # -- failures and topology -----------------------------------------------------------------

    def _failure(self, operation: str, exc: BaseException) -> Exception:
        if not isinstance(exc, ResponseError) or isinstance(exc, ClusterDownError):
            self._schedule_refresh()  # a node failed or refused: maybe the topology changed
        return store_error(operation, exc, self._secrets)

    def _schedule_refresh(self) -> None:
        now = time.monotonic()
        if self._refresh is not None and not self._refresh.done():
            return
        if now - self._refreshed_at < _REFRESH_INTERVAL:
            return
        self._refreshed_at = now
        self._refresh = asyncio.get_running_loop().create_task(self._reload_slots())

    async def _reload_slots(self) -> None:
        try:
            await self.client.nodes_manager.initialize()
        except DRIVER_ERRORS as exc:
            logger.debug("redis cluster slot refresh from %s failed: %s", self._url, exc)
            return
        live = {node.name for node in self.client.get_primaries()}
        for name in [name for name in self._batchers if name not in live]:
            await self._batchers.pop(name).aclose()

    def _namespace(self, namespace: str) -> StripedNamespace:
        striped = self._namespaces.get(namespace)
        if striped is None:
            if len(self._namespaces) >= MAX_TRACKED_NAMESPACES:  # bounded memo, as standalone's
                del self._namespaces[next(iter(self._namespaces))]
            striped = self._namespaces[namespace] = StripedNamespace(self._prefix, namespace)
        return striped


async def _all(work: Any) -> None:
    """Run the awaitables of ``work`` together; the first failure is raised once all ended."""
    tasks: list[Awaitable[None]] = list(work)
    if len(tasks) == 1:
        await tasks[0]
        return
    outcomes = await asyncio.gather(*tasks, return_exceptions=True)
    for outcome in outcomes:
        if isinstance(outcome, BaseException):
            raise outcome
