"""The Redis store's operations on a Redis Cluster: per-node batching over a striped keyspace.

Every read and write goes to the primary serving its stripe's slot (see :mod:`.cluster_keys`)
through that node's own :class:`~.batching.RoundTripBatcher`: calls made in one event-loop turn
leave as one pipeline per node, with one ``MGET <counter> <entries...>`` per stripe, so a batch
of 1000 gets costs each primary one round trip. Operations spanning several nodes
(``get_many``, ``set_many``, ``invalidate``) send to all of them at once.

The engine is built in layers, one concept each: :mod:`.cluster_routing` reaches the nodes
(per-node batchers, redirections, slot-table refreshes), :mod:`.cluster_housekeeping` scans
them (invalidate, clear, listing), and this module holds the per-key reads and writes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

from redis.asyncio.cluster import ClusterNode
from redis.asyncio.connection import AbstractConnection

from ...config import BreakerSettings
from ...errors import StoreError
from ...resilience.breaker import BreakerState, CircuitBreaker
from .batching import RoundTripBatcher
from .client import DRIVER_ERRORS
from .cluster_housekeeping import ClusterHousekeeping
from .cluster_nodes import NodeBatcher, failed_node
from .cluster_routing import EAGER_TRIPS_PER_NODE
from .keyspace import DELETE_IF_SAME, raise_first_error
from .lock import RedisLock
from .unreplicated import ROLL_BACK_IF_OLDER, UnreplicatedWrites

__all__ = ["ClusterEngine"]

Entry = tuple[str, bytes, int | None]


class ClusterEngine(ClusterHousekeeping):
    """Gets, sets, deletes, invalidation, clear, listing and locks on a cluster, for
    :class:`~.store.RedisStore`, which owns the engine and translates nothing further:
    every failure leaves here as :class:`StoreError`."""

    def __init__(
        self, *args: Any, node_breakers: BreakerSettings | None = None, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        # One breaker per primary (see cluster_nodes.py), by node name.
        self._node_settings = node_breakers or BreakerSettings()
        self.node_breakers: dict[str, CircuitBreaker] = {}
        # Keys each primary acknowledged recently: a promoted replica may lack them.
        self.unreplicated = UnreplicatedWrites(self._roll_back)
        self._table_seen: object = None

    # -- one breaker per primary ---------------------------------------------------------------

    def _node_batcher(
        self, name: str, connect: Callable[[], AbstractConnection]
    ) -> RoundTripBatcher:
        breaker = self.node_breakers.get(name)
        if breaker is None:
            breaker = self.node_breakers[name] = CircuitBreaker.from_settings(
                self._node_settings, name=f"redis node {name}"
            )
        return NodeBatcher(
            connect,
            node=name,
            breaker=breaker,
            connections=self._connections,
            timeout=self._timeout,
            eager_trips=EAGER_TRIPS_PER_NODE,
        )

    def _failure(self, operation: str, exc: BaseException) -> Exception:
        """As for one server, except that a failure of one primary while another is trusted is
        *refused*: the store's breaker does not count it (the other primaries' slots go on)."""
        error = super()._failure(operation, exc)
        node = failed_node(exc)
        if node is not None and isinstance(error, StoreError) and self._another_trusted(node):
            error.refused = True
            error.written = frozenset()  # of a multi-key write: none, unless write() says
        return error

    def _another_trusted(self, node: str) -> bool:
        for primary in self.client.get_primaries():
            if primary.name != node:
                breaker = self.node_breakers.get(primary.name)
                if breaker is None or breaker.state is not BreakerState.OPEN:
                    return True
        return False

    # -- failover: writes a promoted replica may lack --------------------------------------------

    def _owner(self, slot: int) -> str:
        """The primary serving ``slot`` in the client's slot table now ("" if none)."""
        owners = self.client.nodes_manager.slots_cache.get(slot)
        return owners[0].name if owners else ""

    def _settled(self, slot: int, owner: str) -> bool:
        """After a reply: notice a changed slot table (a failover, a slot moved), turning what
        replaced primaries acknowledged recently into suspects. Whether ``owner``, the
        primary the call was routed to, still serves ``slot``."""
        now = self._owner(slot)
        self._check_table(changed=now != owner)
        return now == owner

    def _check_table(self, *, changed: bool = False) -> None:
        table = self.client.nodes_manager.slots_cache
        if table is not self._table_seen or changed:
            self._table_seen = table
            self.unreplicated.replaced(lambda primary, at: self._owner(at) == primary)

    async def _reload_slots(self) -> None:
        await super()._reload_slots()
        self._check_table()  # at once, before any read reaches a promoted replica

    def _suspect(self, namespace: str, key: str) -> bool:
        suspects = self.unreplicated.suspects
        return bool(suspects) and (namespace, key) in suspects

    async def _roll_back(self, namespace: str, key: str, stamp: float) -> None:
        """Remove ``key``'s entry on its current primary if it was created before ``stamp``."""
        striped = self._namespace(namespace)
        stripe = striped.stripes[striped.stripe_of(key.encode())]
        try:
            await self.client.execute_command(
                "EVAL", ROLL_BACK_IF_OLDER, 1, stripe.generation.prefix + key, repr(stamp)
            )
        except DRIVER_ERRORS as exc:
            raise self._failure("failover repair", exc) from exc

    async def aclose(self) -> None:
        await self.unreplicated.aclose()
        await super().aclose()

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, namespace: str, key: str) -> bytes | None:
        striped = self._namespaces.get(namespace) or self._namespace(namespace)
        key_bytes = key.encode()
        index = striped.stripe_of(key_bytes)
        stripe, slot = striped.stripes[index], striped.slots[index]
        used = stripe.generation
        value: bytes | None
        if not self._started:
            await self.start()
        # The hot path: the primary found once for both _owner and _batcher, and the checks
        # after the reply done inline while nothing changed (the slot table, the suspects).
        table = self.client.nodes_manager.slots_cache
        owners = table.get(slot)
        owner = owners[0].name if owners else ""
        lead, entry = stripe.gen_key_bytes, used.prefix_bytes + key_bytes
        try:
            # The batcher's mget awaited here, not through _mget: one coroutine frame fewer
            # on the hot path (the redirection case is the same).
            try:
                batcher = self._batchers.get(owner) if owners else None
                if batcher is None:
                    batcher = self._batcher(slot)
                raw, value = await batcher.mget_pair(lead, entry)
            except DRIVER_ERRORS as exc:
                raw, value = await self._mget_redirected(exc, (lead, entry))
            table = self.client.nodes_manager.slots_cache
            now = table.get(slot)  # redis-py may have changed the table, or this slot's list
            if table is not self._table_seen or not now or now[0].name != owner:
                self._settled(slot, owner)
            suspects = self.unreplicated.suspects
            if suspects and (namespace, key) in suspects:
                raise _held_back(namespace, key)
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
        if not self._started:
            await self.start()
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
                owners = [self._owner(group[0]) for group in groups]
                replies = await self._mgets(groups)
                for group, owner in zip(groups, owners, strict=True):
                    self._settled(group[0], owner)
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
        if self.unreplicated.suspects:
            for key in keys:
                if self._suspect(namespace, key):
                    raise _held_back(namespace, key)
        return result

    # -- writes --------------------------------------------------------------------------------

    async def write(
        self, operation: str, namespace: str, entries: Sequence[Entry], *, only_new: bool
    ) -> list[bool]:
        """SET each entry; per stripe one pipeline ending in ``GET <counter>`` that proves the
        entries landed in the live generation (else they are moved into it, as standalone).
        When some stripes fail (their primary is down), the others' entries still land, and
        the :class:`StoreError` raised names them in ``written`` (see errors.py)."""
        striped = self._namespace(namespace)
        by_stripe: dict[int, list[int]] = {}
        for position, entry in enumerate(entries):
            by_stripe.setdefault(striped.stripe_of(entry[0].encode()), []).append(position)
        stored = [False] * len(entries)
        pending = list(by_stripe)
        if not self._started:
            await self.start()
        misplaced: dict[int, list[str]] = {}
        failures: list[BaseException] = []
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
                owners = [self._owner(group[0]) for group in groups]
                replies = await self._pipelines(groups, per_node=True)
                moved = []
                for index, reply, owner in zip(pending, replies, owners, strict=True):
                    try:
                        if isinstance(reply, BaseException):
                            raise reply
                        reply = raise_first_error(reply)
                    except DRIVER_ERRORS as exc:
                        failures.append(exc)  # the other stripes' entries still count
                        for position in by_stripe[index]:
                            stored[position] = False  # (a first try's are misplaced)
                        continue
                    sets = reply[1 if misplaced.get(index) else 0 : -1]
                    for position, ok in zip(by_stripe[index], sets, strict=True):
                        stored[position] = bool(ok)
                    slot = striped.slots[index]
                    self.unreplicated.wrote(
                        owner,
                        slot,
                        [
                            ((namespace, entries[p][0]), entries[p][1])
                            for p in by_stripe[index]
                            if stored[p]
                        ],
                        current=self._settled(slot, owner),
                    )
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
            if failures:
                raise failures[0]
        except DRIVER_ERRORS as exc:
            error = self._failure(operation, exc)
            if isinstance(error, StoreError) and (error.written is not None or any(stored)):
                error.written = frozenset(e[0] for e, ok in zip(entries, stored, strict=True) if ok)
            raise error from exc
        return stored

    async def delete(self, namespace: str, key: str) -> bool:
        striped = self._namespace(namespace)
        index = striped.stripe_of(key.encode())
        stripe, slot = striped.stripes[index], striped.slots[index]
        if not self._started:
            await self.start()
        owner = self._owner(slot)
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
        self.unreplicated.wrote(
            owner, slot, [((namespace, key), None)], current=self._settled(slot, owner)
        )
        return bool(removed)

    async def delete_if(self, namespace: str, key: str, data: bytes) -> bool:
        """Remove ``key`` only while it still holds exactly ``data`` (one script on the primary
        serving its stripe, so a write landing since keeps its value)."""
        striped = self._namespace(namespace)
        stripe = striped.stripes[striped.stripe_of(key.encode())]
        try:
            await self.start()
            removed = await self.client.execute_command(
                "EVAL", DELETE_IF_SAME, 1, stripe.generation.prefix + key, data
            )
        except DRIVER_ERRORS as exc:
            raise self._failure("delete_if", exc) from exc
        return bool(removed)

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
            breaker = self.node_breakers.get(node.name)
            nodes.append(
                {
                    "address": node.name,
                    "role": "primary",
                    "slots": slots.get(node.name, 0),
                    "state": node_state,
                    "breaker": "closed" if breaker is None else breaker.state.value,
                }
            )
        return {"mode": "cluster", "nodes": nodes, **self.unreplicated.describe()}

    def lock(self, name: str, *, ttl: float) -> RedisLock:
        """A lock on one key of the cluster (``SET NX``/``EVAL``, routed by the client)."""

        async def command(*args: Any) -> Any:
            try:
                await self.start()
                return await self.client.execute_command(*args)
            except DRIVER_ERRORS as exc:
                raise self._failure(f"lock {args[0]}", exc) from exc

        return RedisLock(command, name, ttl=ttl)


def _held_back(namespace: str, key: str) -> StoreError:
    """A read of a key a failover may have rolled back, refused until it is repaired: the chain
    reads the next store and keeps that value in memory for the coherence window at most."""
    return StoreError(
        f"redis: {namespace}/{key} is being repaired after a failover", store="redis", refused=True
    )
