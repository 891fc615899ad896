"""The write path: entry lifetime (ttl, jitter, stale grace) and the fan-out to every store.

A write is encoded once, put into memory at once, and sent to every slower store concurrently
(:meth:`WritePath.on_every_layer`), so that a caller cancelled mid-write never leaves some stores
with the new value and some with the old. Values a loader produced may land in the slower stores
behind the caller's back (write-behind); this module tracks them, so a later write, delete or
clear of the same keys waits for them instead of being overtaken.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from ._chain import Chain
from ._read_tracker import ReadTracker, Writing
from .config import NamespacePolicy
from .errors import InvalidTTLError
from .keys import check_key
from .resilience.guard import FAILED, GuardedStore, Unreachable, answered_at_once
from .resilience.missed_writes import WriteScope
from .serialization import EntryCodec
from .stats import StatsRecorder
from .stores.base import ConditionalDeleteStore, StoreItem
from .stores.file_behind import QueuedWritesStore, WriteBehindFileStore

__all__ = ["WritePath"]

FlightKey = tuple[str, str]


async def _settle(writes: asyncio.Future[Any]) -> None:
    """Wait for writes a cancelled caller left running (a task, so aclose can stop them)."""
    try:
        await writes
    except asyncio.CancelledError:
        writes.cancel()
        raise


class WritePath:
    """Writes, deletes and invalidations through the chain, and the loaded values still
    landing in the slower stores (``landing``)."""

    def __init__(
        self,
        chain: Chain,
        *,
        codec: EntryCodec,
        clock: Callable[[], float],
        random: Callable[[], float],
        stats: StatsRecorder,
        policy: Callable[[str], NamespacePolicy],
        tracker: ReadTracker,
        check_namespace: Callable[[str], None],
        adopt: Callable[[asyncio.Future[Any]], None],
    ) -> None:
        self.memory = chain.memory
        self.layers = chain.layers
        self._missed = chain.missed
        self._tracks_missed = any(m is not None for m in chain.missed)
        # Layers whose writes only join a queue (the file store's write-behind): a write needs
        # no task for them. They take the write first, in the caller's task, so their queue
        # (latest wins) has callers' order: queued after the Redis call ended, a write whose
        # call timed out at an outage replaced a later caller's write the open breaker had
        # answered at once, and the file store kept the older value.
        queues = [isinstance(g.store, QueuedWritesStore) for g in chain.layers]
        self._queue_first: list[int] | None = (
            sorted(range(len(queues)), key=lambda i: not queues[i]) if any(queues) else None
        )
        self._queues = queues
        for index, layer in enumerate(chain.layers):
            if isinstance(layer.store, WriteBehindFileStore):
                layer.store.write_failed = functools.partial(self._refused_behind, index)
        # Stores that promotions copy into (every one but the last) and that can take a
        # copy back: removals reach them a second time, see _remove_again_from_copies.
        self._copy_targets = [
            index
            for index, g in enumerate(chain.layers[:-1])
            if isinstance(g.store, ConditionalDeleteStore)
        ]
        self._codec = codec
        self._clock = clock
        self._random = random
        self._stats = stats
        self._policy = policy
        self._tracker = tracker
        self._check_namespace = check_namespace
        self._adopt = adopt
        # Loaded values on their way to the slower stores, by key (see write_loaded).
        self.landing: dict[FlightKey, asyncio.Task[Any]] = {}

    # -- entry lifetime ----------------------------------------------------------------------

    def encode(
        self, namespace: str, key: str, value: Any, ttl: float | None
    ) -> tuple[bytes, float | None]:
        """Entry bytes and how long stores may keep them."""
        policy = self._policy(namespace)
        if ttl is None:
            fresh_for = policy.ttl
        else:
            if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not ttl > 0:
                raise InvalidTTLError(f"ttl must be a number of seconds > 0, got {ttl!r}")
            fresh_for = float(ttl)
        if fresh_for is not None and policy.ttl_jitter > 0:
            # keys written together must not all expire together
            fresh_for *= 1.0 - policy.ttl_jitter * self._random()
        now = self._clock()
        expires_at = None if fresh_for is None else now + fresh_for
        stale_until = None
        if expires_at is not None and policy.stale_ttl > 0:
            stale_until = expires_at + policy.stale_ttl
        data = self._codec.encode(
            namespace, key, value, created_at=now, expires_at=expires_at, stale_until=stale_until
        )
        hard = stale_until if stale_until is not None else expires_at
        return data, None if hard is None else hard - now

    # -- writes ------------------------------------------------------------------------------

    def set_now(
        self, key: str, value: Any, *, namespace: str, ttl: float | None
    ) -> Awaitable[list[Any]]:
        """The part of ``set`` that happens at once (checks, the one encode, memory); returns
        the writes to the slower stores, still to be awaited."""
        return self._set_now(key, value, namespace, ttl)[0]

    def _set_now(
        self, key: str, value: Any, namespace: str, ttl: float | None
    ) -> tuple[Awaitable[list[Any]], Writing]:
        key = check_key(key)
        self._check_namespace(namespace)
        data, store_ttl = self.encode(namespace, key, value, ttl)
        writing = self._tracker.writing(namespace, (key,))
        self._stats.counters(namespace).sets += 1
        if self.memory is not None:
            self.memory.put(namespace, key, data, store_ttl)
        writes = self.on_every_layer(
            lambda g: g.set(namespace, key, data, store_ttl),
            namespace,
            (namespace, ((key, data),)),
            queueable=True,
            writing=writing,
        )
        return writes, writing

    async def set_many(self, mapping: Mapping[str, Any], namespace: str, ttl: float | None) -> None:
        """Every item, all encoded first, so one bad value writes nothing."""
        if self.landing:
            await self.settle(namespace)
        items: list[StoreItem] = []
        for key, value in mapping.items():
            key = check_key(key)
            data, store_ttl = self.encode(namespace, key, value, ttl)
            items.append((key, data, store_ttl))
        if not items:
            return
        self._stats.counters(namespace).sets += len(items)
        writing = self._tracker.writing(namespace, [key for key, _data, _ttl in items])
        if self.memory is not None:
            for key, data, store_ttl in items:
                self.memory.put(namespace, key, data, store_ttl)
        written = [(key, data) for key, data, _ttl in items]
        await self.on_every_layer(
            lambda g: g.set_many(namespace, items),
            namespace,
            (namespace, written),
            queueable=True,
            writing=writing,
        )

    async def delete(self, namespace: str, key: str) -> bool:
        """Remove ``key`` from every store (callers made way first, see :meth:`make_way`)."""
        tracker = self._tracker
        writing = tracker.writing(namespace, (key,))  # until the second pass is done too
        try:
            self._stats.counters(namespace).deletes += 1
            removed = self.memory.discard(namespace, key) if self.memory is not None else False
            answers = await self.on_every_layer(
                lambda g: g.delete(namespace, key),
                namespace,
                (namespace, ((key, None),)),
                writing=tracker.writing(namespace, (key,)),
            )
            if self._copy_targets:
                await self._remove_again_from_copies(lambda g: g.delete(namespace, key), answers)
        finally:
            self._tracker.written(writing)
        return removed or any(a is True for a in answers)

    async def invalidate(self, namespace: str) -> None:
        """Make every entry of ``namespace`` unreadable in every store (after make_way)."""
        tracker = self._tracker
        writing = tracker.writing_everything()  # until the second pass is done too
        try:
            if self.memory is not None:
                self.memory.discard_namespace(namespace)
            answers = await self.on_every_layer(
                lambda g: g.invalidate(namespace),
                namespace,
                (namespace, None),
                writing=tracker.writing_everything(),
            )
            if self._copy_targets:
                await self._remove_again_from_copies(lambda g: g.invalidate(namespace), answers)
        finally:
            self._tracker.written(writing)

    async def _remove_again_from_copies(
        self, op: Callable[[GuardedStore], Awaitable[Any]], answers: list[Any]
    ) -> None:
        """Once every store answered a removal, repeat it where promotions copy into (Redis).

        Another process may have read the old value from a slower store (the file store)
        before the removal reached it and be copying it up: a copy landing before this
        second pass is removed by it; one landing after finds the slower store already
        without it and takes itself back (``_promotion.promote_checked``). A store that missed
        the first pass (journaled) gets it from its journal instead."""
        for index in self._copy_targets:
            if not isinstance(answers[index], Unreachable):
                await op(self.layers[index])

    async def clear(self) -> None:
        """Remove every entry of this cache from every store (after make_way)."""
        writing = self._tracker.writing_everything()
        if self.memory is not None:
            self.memory.discard_all()
        await self.on_every_layer(lambda g: g.clear(), None, (None, None), writing=writing)

    async def on_every_layer(
        self,
        op: Callable[[GuardedStore], Awaitable[Any]],
        namespace: str | None,
        scope: WriteScope,
        *,
        queueable: bool = False,
        writing: Writing | None = None,
    ) -> list[Any]:
        """Run ``op`` on every remote layer concurrently; failures are counted, not raised.

        A caller cancelled mid-write never leaves some stores with the new value and some with
        the old: one layer's write runs in the caller's own task, so it has started (a Redis
        write cut short is journaled, a file write finishes in its thread); several run
        shielded and finish in the background (aclose still stops them). ``queueable``: a
        write, which stores that queue writes take without I/O (no task for them).
        ``writing`` (from the read tracker) ends once every store got the write: when this
        returns, or when the writes a cancelled caller left running have finished."""
        layers = self.layers
        if not layers:
            if writing is not None:
                self._tracker.written(writing)
            return []
        queue_first = self._queue_first if queueable else None
        left_running: list[asyncio.Future[Any]] = []  # by a cancelled caller
        try:
            calls = [op(g) for g in layers]
            if queue_first is not None and (
                sum(
                    not queued and not answered_at_once(call)
                    for queued, call in zip(self._queues, calls, strict=True)
                )
                <= 1
            ):
                answers = await self._queues_first(calls, queue_first, left_running)
            elif sum(not answered_at_once(call) for call in calls) <= 1:
                # At most one store does I/O (the others journaled the write or were skipped):
                # it runs in the caller's task, as a lone store's write does.
                answers = [await call for call in calls]
            else:
                # gather wraps each write in a task that has not started yet: cancelling them with
                # the caller would skip those stores altogether.
                writes = asyncio.gather(*calls)
                try:
                    answers = list(await asyncio.shield(writes))
                except asyncio.CancelledError:
                    if not writes.done():
                        left_running.append(writes)
                        self._adopt(asyncio.ensure_future(_settle(writes)))
                    raise
        except BaseException:
            # Cancelled mid-write: whether each store got it is unknown, so every store that
            # keeps no journal counts as having missed it (a miss there, never an older value).
            self._note_missed(scope, None)
            for missed in self._missed:
                if missed is not None:
                    missed.save_soon()
            raise
        finally:
            if writing is not None:
                self._written_when_landed(writing, left_running)
        if self._tracks_missed:
            self._note_missed(scope, answers)
            for missed in self._missed:
                if missed is not None and missed.unsaved_marks:
                    # On disk before the write is acknowledged: a restart must not serve
                    # what this store missed (resilience/missed_writes_log.py).
                    await missed.save()
        if namespace is not None and FAILED in answers:
            counters = self._stats.counters(namespace)
            for layer, answer in zip(layers, answers, strict=True):
                if answer is FAILED:
                    counters.errors[layer.name] += 1
        return answers

    async def _queues_first(
        self,
        calls: list[Awaitable[Any]],
        order: list[int],
        left_running: list[asyncio.Future[Any]],
    ) -> list[Any]:
        """Await ``calls`` one by one in ``order`` (the queueing stores first, see
        ``__init__``): at most one does I/O, so none needs a task. Cancelled meanwhile, the
        calls not yet awaited still run, in the background (added to ``left_running``): the
        write reaches every store, as with ``gather``."""
        answers: list[Any] = [None] * len(calls)
        for done, index in enumerate(order):
            try:
                answers[index] = await calls[index]
            except asyncio.CancelledError:
                for rest in order[done + 1 :]:
                    task = asyncio.ensure_future(calls[rest])
                    self._adopt(task)
                    left_running.append(task)
                raise
        return answers

    def _written_when_landed(
        self, writing: Writing, left_running: list[asyncio.Future[Any]]
    ) -> None:
        """End ``writing`` now, or once the writes a cancelled caller left running are done:
        until then a read may still find the value they replace below."""
        if not left_running:
            self._tracker.written(writing)
            return
        landed = (
            left_running[0]
            if len(left_running) == 1
            else asyncio.gather(*left_running, return_exceptions=True)
        )
        landed.add_done_callback(lambda _landed: self._tracker.written(writing))

    def _note_missed(self, scope: WriteScope, answers: list[Any] | None) -> None:
        """Record, per store without a journal, whether the write of ``scope`` reached it:
        a store that did not (failed, skipped by its breaker, unknown after a cancel) must
        not serve what it holds for that scope until a later write of it does
        (resilience/missed_writes.py). Marked only on a miss, so a read racing a write that
        lands still reads the store, as it would have an instant earlier."""
        for index, missed in enumerate(self._missed):
            if missed is None:
                continue
            if answers is None or isinstance(answers[index], Unreachable):
                missed.mark(scope)
            else:
                missed.lift(scope)

    def _refused_behind(
        self, index: int, namespace: str, refused: int, entries: Sequence[tuple[str, bytes]]
    ) -> None:
        """A queued write the store refused after its caller returned (disk full, read-only,
        a write past the deadline): counted as that store's error, and the key marked as
        missed with the bytes it carried, so an older entry there is never served (the
        write, should it land after all, is)."""
        layer = self.layers[index]
        self._stats.counters(namespace).errors[layer.name] += refused
        missed = self._missed[index]
        if missed is not None and entries:
            missed.mark((namespace, entries))
            missed.save_soon()  # logged, so a restart does not serve the older entry either

    # -- write-behind ------------------------------------------------------------------------

    def write_loaded(
        self, key: str, value: Any, *, namespace: str, ttl: float | None
    ) -> Awaitable[Any] | None:
        """Cache a loaded value. With a memory layer it is readable in this process at once:
        the writes to the slower stores land in the background, tracked in ``landing``, and
        ``None`` is returned. Without one, the writes are returned, still to be awaited."""
        remote_writes, writing = self._set_now(key, value, namespace, ttl)
        if self.memory is None:
            return remote_writes
        flight = (namespace, key)
        landing = asyncio.ensure_future(remote_writes)
        self._adopt(landing)
        self.landing[flight] = landing
        landing.add_done_callback(lambda done: self._landed(flight, done, writing))
        return None

    def _landed(self, flight: FlightKey, done: asyncio.Task[Any], writing: Writing) -> None:
        if self.landing.get(flight) is done:
            del self.landing[flight]
        if done.cancelled():
            # Cancelled before it began (aclose), the write never ended its own tracking.
            self._tracker.written(writing)

    async def make_way(self, namespace: str | None = None, key: str | None = None) -> None:
        """Before a write of ``key`` (of all of ``namespace``, of everything): reads in flight
        stop promoting what they found, and loaded values still landing arrive first."""
        if namespace is not None and key is not None:
            self._tracker.wrote(namespace, key)
        if self.landing:
            await self.settle(namespace, key)

    async def settle(self, namespace: str | None = None, key: str | None = None) -> None:
        """Wait until loaded values of ``key`` (of ``namespace``, of anything) have reached
        the slower stores, so a later write, delete or clear is not overtaken by them."""
        if key is not None:
            found = self.landing.get((namespace or "", key))
            tasks = [] if found is None else [found]
        else:
            tasks = [t for f, t in self.landing.items() if namespace is None or f[0] == namespace]
        if tasks:
            await asyncio.wait(tasks)  # never cancels them, even when this caller is cancelled
