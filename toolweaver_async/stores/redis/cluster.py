"""The Redis store's operations on a Redis Cluster: per-node batching over a striped keyspace.

Every read and write goes to the primary serving its stripe's slot (see :mod:`.cluster_keys`)
through that node's own :class:`~.batching.RoundTripBatcher`: calls made in one event-loop turn
leave as one pipeline per node, with one ``MGET <counter> <entries...>`` per stripe, so a batch
of 1000 gets costs each primary one round trip. Operations spanning several nodes
(``get_many``, ``set_many``, ``invalidate``) send to all of them at once.

Topology is the client's: ``redis.asyncio.cluster.RedisCluster`` owns the slot table. A command
answered ``MOVED``/``ASK`` (a slot moving, a replica promoted) is run again through that client,
which follows the redirection; a node that fails or refuses connections makes this engine ask
the cluster for a fresh slot table (at most every 100 ms), so the slots of a dead primary reach
its promoted replica as soon as the cluster names it, while the other primaries keep answering.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, Final

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import AskError, ClusterDownError, ResponseError, TryAgainError

from ..base import EntryPage
from .batching import RoundTripBatcher
from .client import DRIVER_ERRORS, store_error
from .cluster_keys import StripedNamespace
from .keyspace import glob_escape, is_counter, raise_first_error
from .lock import RedisLock

__all__ = ["ClusterEngine"]

logger = logging.getLogger(__name__)

_REFRESH_INTERVAL: Final = 0.1
_SCAN_COUNT: Final = 1000
Entry = tuple[str, bytes, int | None]


def _redirected(exc: BaseException | None) -> bool:
    """A reply telling us to ask elsewhere or again (MOVED, ASK, TRYAGAIN), not a failure."""
    while exc is not None:
        if isinstance(exc, AskError | TryAgainError):  # MovedError is an AskError
            return True
        if isinstance(exc, ResponseError):
            return False
        exc = exc.__cause__
    return False


class ClusterEngine:
    """Gets, sets, deletes, invalidation, clear, listing and locks on a cluster, for
    :class:`~.store.RedisStore`, which owns the engine and translates nothing further:
    every failure leaves here as :class:`StoreError`."""

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

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> bytes | None:
        striped = self._namespace(namespace)
        key_bytes = key.encode()
        index = striped.stripe_of(key_bytes)
        stripe, slot = striped.stripes[index], striped.slots[index]
        used = stripe.generation
        value: bytes | None
        try:
            raw, value = await self._mget(
                slot, (stripe.gen_key_bytes, used.prefix_bytes + key_bytes)
            )
            if raw == used.raw:
                return value
            seen = stripe.observe(raw)
            if not seen.readable:
                return None  # the counter holds foreign bytes: a miss until it is repaired
            if seen.number == used.number:
                return value
            raw, value = await self._mget(
                slot, (stripe.gen_key_bytes, seen.prefix_bytes + key_bytes)
            )
        except DRIVER_ERRORS as exc:
            raise self._failure("get", exc) from exc
        again = stripe.observe(raw)
        if again.number != seen.number or not again.readable:
            return None
        return value

    async def get_many(self, namespace: str, keys: Sequence[str]) -> list[bytes | None]:
        striped = self._namespace(namespace)
        by_stripe: dict[int, list[int]] = {}
        encoded = [key.encode() for key in keys]
        for position, key_bytes in enumerate(encoded):
            by_stripe.setdefault(striped.stripe_of(key_bytes), []).append(position)
        result: list[bytes | None] = [None] * len(keys)
        pending = list(by_stripe)
        try:
            for attempt in range(2):
                used = {index: striped.stripes[index].generation for index in pending}
                groups = [
                    (
                        striped.slots[index],
                        [
                            striped.stripes[index].gen_key_bytes,
                            *[used[index].prefix_bytes + encoded[p] for p in by_stripe[index]],
                        ],
                    )
                    for index in pending
                ]
                replies = await self._mgets(groups)
                moved = []
                for index, reply in zip(pending, replies, strict=True):
                    seen = striped.stripes[index].observe(reply[0])
                    if not seen.readable:
                        continue  # foreign bytes in the counter: misses until repaired
                    if seen.number == used[index].number:
                        for position, value in zip(by_stripe[index], reply[1:], strict=True):
                            result[position] = value
                    elif attempt == 0:
                        moved.append(index)
                    # else: invalidated again between the two reads: misses
                if not moved:
                    break
                pending = moved
        except DRIVER_ERRORS as exc:
            raise self._failure("get_many", exc) from exc
        return result

    # -- writes --------------------------------------------------------------------------------

    async def write(
        self, operation: str, namespace: str, entries: Sequence[Entry], *, only_new: bool
    ) -> list[bool]:
        """SET each entry; per stripe one pipeline ending in ``GET <counter>`` that proves the
        entries landed in the live generation (else they are moved into it, as standalone)."""
        striped = self._namespace(namespace)
        by_stripe: dict[int, list[int]] = {}
        for position, entry in enumerate(entries):
            by_stripe.setdefault(striped.stripe_of(entry[0].encode()), []).append(position)
        stored = [False] * len(entries)
        pending = list(by_stripe)
        misplaced: dict[int, list[str]] = {}
        try:
            for attempt in range(2):
                used = {index: striped.stripes[index].generation for index in pending}
                groups = []
                for index in pending:
                    commands: list[tuple[Any, ...]] = []
                    if misplaced.get(index):
                        commands.append(("UNLINK", *misplaced[index]))
                    for position in by_stripe[index]:
                        key, data, px = entries[position]
                        args: tuple[Any, ...] = ("SET", used[index].prefix + key, data)
                        if px is not None:
                            args += ("PX", px)
                        if only_new:
                            args += ("NX",)
                        commands.append(args)
                    commands.append(("GET", striped.stripes[index].gen_key))
                    groups.append((striped.slots[index], commands))
                replies = await self._pipelines(groups)
                moved = []
                for index, reply in zip(pending, replies, strict=True):
                    reply = raise_first_error(reply)
                    sets = reply[1 if misplaced.get(index) else 0 : -1]
                    for position, ok in zip(by_stripe[index], sets, strict=True):
                        stored[position] = bool(ok)
                    seen = striped.stripes[index].observe(reply[-1])
                    if seen.number != used[index].number and attempt == 0:
                        moved.append(index)
                        misplaced[index] = [
                            used[index].prefix + entries[p][0]
                            for p in by_stripe[index]
                            if stored[p]
                        ]
                if not moved:
                    break
                pending = moved
        except DRIVER_ERRORS as exc:
            raise self._failure(operation, exc) from exc
        return stored

    async def delete(self, namespace: str, key: str) -> bool:
        striped = self._namespace(namespace)
        index = striped.stripe_of(key.encode())
        stripe, slot = striped.stripes[index], striped.slots[index]
        try:
            used = stripe.generation
            removed, raw = raise_first_error(
                await self._pipeline(slot, [("UNLINK", used.prefix + key), ("GET", stripe.gen_key)])
            )
            seen = stripe.observe(raw)
            if seen.number != used.number:
                removed, raw = raise_first_error(
                    await self._pipeline(
                        slot, [("UNLINK", seen.prefix + key), ("GET", stripe.gen_key)]
                    )
                )
                stripe.observe(raw)
        except DRIVER_ERRORS as exc:
            raise self._failure("delete", exc) from exc
        return bool(removed)

    async def invalidate(self, namespace: str) -> None:
        """``INCR`` every stripe's counter (one pipeline per node), then drop the dead
        generations' entries in the background, best effort."""
        striped = self._namespace(namespace)
        groups = [
            (slot, [("INCR", s.gen_key)])
            for s, slot in zip(striped.stripes, striped.slots, strict=True)
        ]
        try:
            replies = await self._pipelines(groups)
            for stripe, reply in zip(striped.stripes, replies, strict=True):
                (number,) = raise_first_error(reply)
                stripe.observe(str(number).encode())
        except DRIVER_ERRORS as exc:
            raise self._failure("invalidate", exc) from exc
        task = asyncio.get_running_loop().create_task(self._drop_dead_generations(striped))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def clear(self) -> None:
        """SCAN every primary for this prefix and unlink all but the generation counters."""
        try:
            await self._unlink_scanned(f"{self._prefix}:*", lambda key: not is_counter(key))
        except DRIVER_ERRORS as exc:
            raise self._failure("clear", exc) from exc

    async def ping(self) -> None:
        """Every primary answers ``PING``; else :class:`StoreError` naming the first failure."""
        try:
            await self.start()
            await asyncio.gather(*(self._ping_node(node) for node in self.client.get_primaries()))
        except DRIVER_ERRORS as exc:
            raise self._failure("ping", exc) from exc

    async def describe(self) -> dict[str, Any]:
        """Mode and per-primary state (address, slots served, answering or the error)."""
        nodes = []
        slots: dict[str, int] = {}
        for owners in self.client.nodes_manager.slots_cache.values():
            if owners:
                slots[owners[0].name] = slots.get(owners[0].name, 0) + 1
        primaries = self.client.get_primaries()

        async def state(node: ClusterNode) -> str:
            try:
                await self._ping_node(node)
            except DRIVER_ERRORS as exc:
                return f"failed: {type(exc).__name__}: {exc}"
            return "ok"

        states = await asyncio.gather(*(state(node) for node in primaries))
        for node, node_state in zip(primaries, states, strict=True):
            nodes.append(
                {
                    "address": node.name,
                    "role": "primary",
                    "slots": slots.get(node.name, 0),
                    "state": node_state,
                }
            )
        return {"mode": "cluster", "nodes": nodes}

    async def list_entries(self, namespace: str, prefix: str) -> AsyncIterator[EntryPage]:
        """Live entries of ``namespace`` whose key starts with ``prefix``, a page per scan
        step per primary; a stripe invalidated meanwhile is left out from then on."""
        striped = self._namespace(namespace)
        try:
            await self._mgets(
                [
                    (slot, [s.gen_key_bytes])
                    for s, slot in zip(striped.stripes, striped.slots, strict=True)
                ]
            )
            generations = [stripe.generation.number for stripe in striped.stripes]
            wanted = glob_escape(prefix).encode()
            base = f"{self._prefix}:{namespace}:".encode()
            for node in self.client.get_primaries():
                cursor: Any = 0
                while True:
                    cursor, found = await self._on_node(
                        node, "SCAN", cursor, "MATCH", base + b"*:" + wanted + b"*",
                        "COUNT", _SCAN_COUNT,
                    )  # fmt: skip
                    page = await self._live_entries(striped, generations, base, prefix, found)
                    if page:
                        yield page
                    if int(cursor) == 0:
                        break
        except DRIVER_ERRORS as exc:
            raise self._failure("list", exc) from exc

    def lock(self, name: str, *, ttl: float) -> RedisLock:
        """A lock on one key of the cluster (``SET NX``/``EVAL``, routed by the client)."""

        async def command(*args: Any) -> Any:
            try:
                await self.start()
                return await self.client.execute_command(*args)
            except DRIVER_ERRORS as exc:
                raise self._failure(f"lock {args[0]}", exc) from exc

        return RedisLock(command, name, ttl=ttl)

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

            batcher = RoundTripBatcher(
                connect, connections=self._connections, timeout=self._timeout
            )
            self._batchers[node.name] = batcher
        return batcher

    async def _mget(self, slot: int, keys: Sequence[bytes]) -> list[Any]:
        if not self._started:
            await self.start()
        try:
            return await self._batcher(slot).mget(keys, slot)
        except DRIVER_ERRORS as exc:
            if not _redirected(exc):
                raise
        self._schedule_refresh()
        reply: list[Any] = await self.client.execute_command("MGET", *keys)
        return reply

    async def _mgets(self, groups: Sequence[tuple[int, Sequence[bytes]]]) -> list[list[Any]]:
        """One ``MGET`` per (slot, keys) group, one pipeline per node, all nodes at once."""
        if not self._started:
            await self.start()
        by_node: dict[int, list[int]] = {}
        batchers: dict[int, RoundTripBatcher] = {}
        for position, (slot, _) in enumerate(groups):
            batcher = self._batcher(slot)
            by_node.setdefault(id(batcher), []).append(position)
            batchers[id(batcher)] = batcher
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
        return (await self._pipelines([(slot, commands)]))[0]

    async def _pipelines(
        self, groups: Sequence[tuple[int, Sequence[tuple[Any, ...]]]]
    ) -> list[list[Any]]:
        """Each group's commands (all in one slot), one pipeline per node, all nodes at once;
        a group answered with a redirection is run again through the cluster client."""
        if not self._started:
            await self.start()
        by_node: dict[int, list[int]] = {}
        batchers: dict[int, RoundTripBatcher] = {}
        for position, (slot, _) in enumerate(groups):
            batcher = self._batcher(slot)
            by_node.setdefault(id(batcher), []).append(position)
            batchers[id(batcher)] = batcher
        results: list[Any] = [None] * len(groups)

        async def on_node(node: int) -> None:
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

    # -- scanning ------------------------------------------------------------------------------

    async def _unlink_scanned(self, pattern: str, keep: Callable[[bytes], bool]) -> None:
        """SCAN every primary for ``pattern`` and unlink the keys ``keep`` selects, one
        ``UNLINK`` per slot (a multi-key command may not span slots)."""
        await self.start()
        for node in self.client.get_primaries():
            cursor: Any = 0
            while True:
                cursor, found = await self._on_node(
                    node, "SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT
                )
                by_slot: dict[int, list[bytes]] = {}
                for key in found:
                    if keep(key):
                        by_slot.setdefault(self.client.keyslot(key), []).append(key)
                if by_slot:
                    # Best effort: a key whose slot moved meanwhile answers MOVED and stays.
                    await self._pipelines(
                        [(slot, [("UNLINK", *keys)]) for slot, keys in by_slot.items()]
                    )
                if int(cursor) == 0:
                    break

    async def _drop_dead_generations(self, striped: StripedNamespace) -> None:
        generations = {stripe.base.encode(): stripe.generation.number for stripe in striped.stripes}

        def dead(key: bytes) -> bool:
            base, _, rest = key.partition(b"}:")
            number, colon, _ = rest.partition(b":")
            live = generations.get(base + b"}:")
            return bool(colon) and live is not None and number.isdigit() and int(number) < live

        try:
            await self._unlink_scanned(f"{self._prefix}:{striped.name}:*", dead)
        except DRIVER_ERRORS as exc:
            logger.debug("redis cleanup of %s at %s skipped: %s", striped.name, self._url, exc)

    async def _live_entries(
        self,
        striped: StripedNamespace,
        generations: list[int],
        base: bytes,
        prefix: str,
        found: list[bytes],
    ) -> EntryPage:
        keys_by_stripe: dict[int, list[tuple[bytes, str]]] = {}
        for name in found:
            tag_part, _, rest = name[len(base) :].partition(b"}:")
            number, colon, key_bytes = rest.partition(b":")
            index = striped.stripe_by_tag(tag_part[1:])
            if index is None or not colon or number != str(generations[index]).encode():
                continue
            try:
                key = key_bytes.decode()
            except UnicodeDecodeError:
                continue  # not a key this library wrote
            if key.startswith(prefix):
                keys_by_stripe.setdefault(index, []).append((name, key))
        stripes = list(keys_by_stripe)
        replies = await self._mgets(
            [
                (
                    striped.slots[i],
                    [striped.stripes[i].gen_key_bytes, *[n for n, _ in keys_by_stripe[i]]],
                )
                for i in stripes
            ]
        )
        page = []
        for index, reply in zip(stripes, replies, strict=True):
            seen = striped.stripes[index].observe(reply[0])
            if seen.number != generations[index] or not seen.readable:
                continue  # invalidated meanwhile: nothing listed from this stripe is live
            for (_, key), data in zip(keys_by_stripe[index], reply[1:], strict=True):
                if data is not None:
                    page.append((key, data))
        return page

    def _namespace(self, namespace: str) -> StripedNamespace:
        striped = self._namespaces.get(namespace)
        if striped is None:
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
