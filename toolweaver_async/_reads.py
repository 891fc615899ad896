"""The read path: the memory layer's fast path and its memos, read-through and promotion.

A read asks the in-process memory first (synchronously: no locks, tasks or awaits), then each
slower store in order; the first usable entry is copied into the faster stores (promotion,
never overwriting) unless a write of that key overlapped the read, begun during it or still
reaching the slower stores when it began (:class:`ReadTracker`). ``AsyncToolCache.get``
inlines the memory hit itself; everything else about reading lives here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import msgspec

from ._chain import Chain
from ._immutable import is_immutable
from ._promotion import Promoter
from ._read_tracker import ReadToken, ReadTracker
from .config import MAX_TRACKED_NAMESPACES, NamespacePolicy
from .freshness import EntryState, entry_state
from .keys import check_key
from .resilience.guard import FAILED, GuardedStore, Unreachable
from .serialization import EntryCodec, Envelope, PayloadDecodeError, TypeMismatchError
from .stats import NamespaceCounters, StatsRecorder
from .stores.base import ConditionalDeleteStore
from .stores.memory import MemoryEntry, MemoryStore

__all__ = ["MISSING", "WRONG_TYPE", "NamespaceReads", "ReadPath", "ReadTracker"]

# No usable entry in memory: read on.
MISSING: Any = object()


class _WrongType:
    """Marks an entry that is ours and fresh but does not decode into the requested type."""


_WRONG_TYPE = _WrongType()
WRONG_TYPE: Any = _WRONG_TYPE  # the same marker, untyped, where values of any type flow

_STALE_SERVABLE, _EXPIRED = EntryState.STALE_SERVABLE, EntryState.EXPIRED


class NamespaceReads:
    """What a read needs about one namespace, found with one dict lookup per call."""

    __slots__ = ("counters", "hits", "share")

    def __init__(self, counters: NamespaceCounters, share: bool) -> None:
        self.counters = counters
        self.hits = counters.hits
        self.share = share  # NamespacePolicy.share_objects


class ReadPath:
    """Reads ``key`` through the chain: memory, then each slower store, promoting hits.

    ``namespaces`` and ``decode_any`` are public so that ``AsyncToolCache.get`` can inline the
    memory hit against them.
    """

    def __init__(
        self,
        chain: Chain,
        *,
        codec: EntryCodec,
        clock: Callable[[], float],
        stats: StatsRecorder,
        policy: Callable[[str], NamespacePolicy],
        check_namespace: Callable[[str], None],
        spawn: Callable[[Awaitable[Any]], None],
    ) -> None:
        self.memory = chain.memory
        self.layers = chain.layers
        # What each layer missed: its entries of those keys are read as misses.
        self._missed = chain.missed
        # Until what earlier runs' stores missed is loaded (connect() does it; else the first
        # read through waits for it), nothing from those stores may be served.
        self._missed_loading = any(m is not None and not m.loaded for m in chain.missed)
        self.tracker = ReadTracker()
        self.namespaces: dict[str, NamespaceReads] = {}
        self._codec = codec
        self.decode_any = codec.payload_decoder(None)
        self._clock = clock
        self._stats = stats
        self._policy = policy
        self._check_namespace = check_namespace
        self._spawn = spawn
        self._promoter = Promoter(chain.memory, chain.layers, codec=codec, clock=clock, spawn=spawn)
        # Redis alone: one store that bounds its calls itself, no memory layer, and no record
        # of missed writes (its outage journal keeps it from serving what it missed).
        alone = self.layers[0] if self.memory is None and len(self.layers) == 1 else None
        self._alone = (
            alone if alone is not None and alone.direct and self._missed == [None] else None
        )
        # What AsyncToolCache.get reads the slower stores with: read_through, or its lean form.
        self.read = self.read_through if self._alone is None else self._read_alone

    async def _load_missed(self) -> None:
        for missed in self._missed:
            if missed is not None:
                await missed.load()
        self._missed_loading = False

    def reads_of(self, namespace: str) -> NamespaceReads:
        """The read state of ``namespace``, made (and the name checked) on its first read."""
        reads = self.namespaces.get(namespace)
        if reads is None:
            self._check_namespace(namespace)
            if len(self.namespaces) >= MAX_TRACKED_NAMESPACES:
                self.namespaces.clear()  # a memo for the hot path: bounded, rebuilt on demand
            share = self._policy(namespace).share_objects
            reads = NamespaceReads(self._stats.counters(namespace), share)
            self.namespaces[namespace] = reads
        return reads

    # -- memory ------------------------------------------------------------------------------

    def from_memory(
        self, memory: MemoryStore, namespace: str, key: str, type_: Any, reads: NamespaceReads
    ) -> Any:
        """The value of a fresh memory entry of ``key``, ``WRONG_TYPE``, or ``MISSING``."""
        now = self._clock()
        entry = memory.lookup_entry(namespace, key, now)
        if entry is None:
            return MISSING
        header = entry.header
        if header is None:
            header = self._check_memory_entry(memory, entry, namespace, key, reads.counters)
            if header is None:
                return MISSING
        state = entry_state(header, now)
        if state is _STALE_SERVABLE or state is _EXPIRED:
            return MISSING  # stale: only get_or_set may serve it, and only while it refreshes
        shared = entry.shared
        if shared is not None and (shared[0] is type_ or shared[0] == type_):
            reads.hits["memory"] += 1
            return shared[1]
        try:
            value = (self.decode_any if type_ is None else self._codec.payload_decoder(type_))(
                header.payload
            )
        except PayloadDecodeError as exc:
            if isinstance(exc, msgspec.ValidationError):
                reads.counters.type_mismatches += 1
                return WRONG_TYPE
            reads.counters.corrupt += 1
            memory.discard(namespace, key)
            return MISSING
        if reads.share or is_immutable(value):
            entry.shared = (type_, value)
        reads.hits["memory"] += 1
        return value

    def _check_memory_entry(
        self,
        memory: MemoryStore,
        entry: MemoryEntry,
        namespace: str,
        key: str,
        counters: NamespaceCounters,
    ) -> Any:
        """The entry's envelope, with its payload still encoded, checked once and kept on the
        entry; ``None`` (and the entry removed) when the bytes are not this key's entry."""
        try:
            header = self._codec.decode_header(entry.data)
        except Exception:
            header = None
        if header is None or header.key != key or header.namespace != namespace:
            counters.corrupt += 1
            memory.discard(namespace, key)
            return None
        entry.header = header
        return header

    def peek_entry(
        self, namespace: str, key: str, type_: Any, counters: NamespaceCounters
    ) -> Envelope[Any] | None:
        """The memory entry of ``key``, fresh or stale (until its hard expiry)."""
        memory = self.memory
        data = memory.lookup(namespace, key) if memory is not None else None
        if data is None:
            return None
        found = self.usable(data, namespace, key, type_, counters, None, until_hard_expiry=True)
        return None if isinstance(found, _WrongType) else found

    # -- the slower stores -------------------------------------------------------------------

    async def read_entry(
        self, namespace: str, key: str, type_: Any, counters: NamespaceCounters
    ) -> tuple[Envelope[Any], str] | None:
        """The first entry of ``key`` in the slower stores, fresh or stale, and the name of
        its store; promoted like a ``get`` hit (a fresh one replaces a stale memory copy)."""
        return await self.read_through(namespace, key, type_, counters, until_hard_expiry=True)

    async def _read_alone(
        self,
        namespace: str,
        key: str,
        type_: Any,
        counters: NamespaceCounters,
        until_hard_expiry: bool = False,
    ) -> tuple[Envelope[Any], str] | None:
        """:meth:`read_through` when the chain is one store that bounds its calls itself and
        nothing else (Redis alone, as benchmarks and some deployments run it): nothing faster
        to promote into, hence no read tracking, and the store awaited in this frame rather
        than through the guard's (see ``GuardedCalls.admit``). ``AsyncToolCache.get`` calls it
        directly (:attr:`read`): each check and frame here is a few percent of a batched get."""
        layer = self._alone
        assert layer is not None
        epoch = layer.admit_get(namespace, key)
        if epoch is None:
            return None
        try:
            data = await layer.store.get(namespace, key)
        except BaseException as exc:
            if layer.settle(exc, epoch) is FAILED:
                counters.errors[layer.name] += 1
            return None
        layer.breaker.succeeded(epoch)
        if data is None:
            return None
        envelope = self.usable(data, namespace, key, type_, counters, layer, until_hard_expiry)
        if envelope is None or isinstance(envelope, _WrongType):
            return None
        if not until_hard_expiry:  # get_or_set counts the hit once it decides to serve it
            counters.hits[layer.name] += 1
        return envelope, layer.name

    async def read_through(
        self,
        namespace: str,
        key: str,
        type_: Any,
        counters: NamespaceCounters,
        *,
        until_hard_expiry: bool = False,
    ) -> tuple[Envelope[Any], str] | None:
        """The first usable entry of ``key`` in the slower stores and its store's name,
        promoted into the faster ones. Fresh entries only, unless ``until_hard_expiry`` (what
        get_or_set serves while it refreshes). An entry of another type ends the search."""
        if self._alone is not None:
            return await self._read_alone(namespace, key, type_, counters, until_hard_expiry)
        if self._missed_loading:
            await self._load_missed()
        layers = self.layers
        if self.memory is None and len(layers) == 1:
            # Nothing faster to promote into (a file store alone), so no read tracking.
            layer = layers[0]
            missed = self._missed[0]
            if missed and missed.holds_back(namespace, key):
                return None
            data = await layer.get(namespace, key)
            if data is None or isinstance(data, Unreachable):
                if data is FAILED:
                    counters.errors[layer.name] += 1
                return None
            if missed and not missed.trusts(namespace, key, data):
                return None
            envelope = self.usable(
                data, namespace, key, type_, counters, layer, until_hard_expiry=until_hard_expiry
            )
            if envelope is None or isinstance(envelope, _WrongType):
                return None
            if not until_hard_expiry:  # get_or_set counts the hit once it decides to serve it
                counters.hits[layer.name] += 1
            return envelope, layer.name
        tracker = self.tracker
        token = tracker.begin(namespace, key)
        vouched = True  # no faster store was passed over (see promote)
        try:
            for index, layer in enumerate(layers):
                missed = self._missed[index]
                if missed and missed.holds_back(namespace, key):
                    continue  # it missed a write of this key: what it holds may be older
                data = await layer.get(namespace, key)
                if isinstance(data, Unreachable):
                    if data is FAILED:
                        counters.errors[layer.name] += 1
                    vouched = False
                    continue
                if data is None:
                    continue
                if missed and not missed.trusts(namespace, key, data):
                    continue  # older than the write it missed: not served
                envelope = self.usable(
                    data,
                    namespace,
                    key,
                    type_,
                    counters,
                    layer,
                    until_hard_expiry=until_hard_expiry,
                )
                if envelope is None:
                    continue
                if isinstance(envelope, _WrongType):
                    return None  # the entry is there, in another shape: slower stores agree
                if not until_hard_expiry:  # get_or_set counts the hit once it serves it
                    counters.hits[layer.name] += 1
                if tracker.still_current(token):
                    self._promoter.drop_stale_memory_copy(namespace, key, envelope)
                    self._promoter.promote(index, namespace, key, data, envelope, vouched=vouched)
                return envelope, layer.name
            return None
        finally:
            tracker.end(namespace, key, token)

    async def get_many(self, keys: Iterable[str], namespace: str, type_: Any) -> dict[str, Any]:
        """The hits among ``keys`` (misses are left out), one round trip per store."""
        reads = self.reads_of(namespace)
        counters = reads.counters
        found: dict[str, Any] = {}
        missing: list[str] = []
        memory = self.memory
        for key in dict.fromkeys(check_key(k) for k in keys):
            value = MISSING
            if memory is not None:
                value = self.from_memory(memory, namespace, key, type_, reads)
            if value is MISSING:
                missing.append(key)
            elif value is WRONG_TYPE:
                counters.misses += 1
            else:
                found[key] = value
        # As in read_through: a key written (or invalidated by another process) while this
        # read is out must not have the older value found here promoted over the change.
        tracker = self.tracker
        tokens = {key: tracker.begin(namespace, key) for key in missing}
        try:
            return await self._get_many_through(missing, namespace, type_, counters, found, tokens)
        finally:
            for key, token in tokens.items():
                tracker.end(namespace, key, token)

    async def _get_many_through(
        self,
        missing: list[str],
        namespace: str,
        type_: Any,
        counters: NamespaceCounters,
        found: dict[str, Any],
        tokens: dict[str, ReadToken],
    ) -> dict[str, Any]:
        if self._missed_loading:
            await self._load_missed()
        vouched = True
        for index, layer in enumerate(self.layers):
            if not missing:
                break
            missed = self._missed[index]
            held_back: list[str] = []
            asked = missing
            if missed:
                held_back = [k for k in missing if missed.holds_back(namespace, k)]
                if held_back:
                    asked = [k for k in missing if not missed.holds_back(namespace, k)]
                    if not asked:
                        continue
            answers = await layer.get_many(namespace, asked)
            if isinstance(answers, Unreachable):
                if answers is FAILED:
                    counters.errors[layer.name] += 1
                vouched = False
                continue
            still_missing = held_back
            for key, data in zip(asked, answers, strict=True):
                if data is not None and missed and not missed.trusts(namespace, key, data):
                    data = None  # older than the write it missed: not served
                envelope = (
                    None
                    if data is None
                    else self.usable(data, namespace, key, type_, counters, layer)
                )
                if envelope is None or data is None:
                    still_missing.append(key)
                    continue
                if isinstance(envelope, _WrongType):
                    counters.misses += 1
                    continue
                counters.hits[layer.name] += 1
                found[key] = envelope.payload
                if self.tracker.still_current(tokens[key]):
                    self._promoter.promote(index, namespace, key, data, envelope, vouched=vouched)
            missing = still_missing
        counters.misses += len(missing)
        return found

    def usable(
        self,
        data: bytes,
        namespace: str,
        key: str,
        type_: Any,
        counters: NamespaceCounters,
        layer: GuardedStore | None,
        until_hard_expiry: bool = False,
    ) -> Envelope[Any] | _WrongType | None:
        """The decoded entry when it is ours, for this key, and fresh (or, with
        ``until_hard_expiry``, not yet past its grace period); ``WRONG_TYPE`` when it is ours
        but does not fit ``type_``; else ``None`` (a corrupt entry is removed from its store)."""
        try:
            envelope = self._codec.decode(data, type_)
        except TypeMismatchError:
            counters.type_mismatches += 1
            return _WRONG_TYPE
        except Exception:
            envelope = None
        if envelope is None or envelope.key != key or envelope.namespace != namespace:
            counters.corrupt += 1
            self._remove_corrupt(namespace, key, layer, data)
            return None
        # FRESH settled inline, as in AsyncToolCache.get: a call fewer per slower-store hit.
        expires_at = envelope.expires_at
        if expires_at is None or (now := self._clock()) < expires_at:
            return envelope
        state = entry_state(envelope, now)
        if state is _EXPIRED or (state is _STALE_SERVABLE and not until_hard_expiry):
            return None
        return envelope

    def _remove_corrupt(
        self, namespace: str, key: str, layer: GuardedStore | None, data: bytes
    ) -> None:
        """Remove the corrupt ``data`` found under ``key``, and only it: the removal runs
        later (a task), and a write landing before it must survive. A store that cannot
        compare and delete keeps the broken entry, a counted miss until the next write."""
        if layer is None:
            if self.memory is not None:
                self.memory.discard_if(namespace, key, data)
        elif isinstance(layer.store, ConditionalDeleteStore):
            self._spawn(layer.attempt(layer.store.delete_if, namespace, key, data))
