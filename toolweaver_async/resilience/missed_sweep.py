"""Once the file store answers again, withdraw for every process what it missed writes of.

This process never serves what its file store missed (:mod:`.missed_writes`), but a write or
delete skipped while the store's breaker was open never touched the disk, so the entry it was
replacing is still there for every other process sharing the folder, and so are the entries of
marks an earlier run left. So when the breaker closes again, and once when the chain opens
with marks loaded, a background sweep goes through the marks: each marked key's entry is
withdrawn unless it holds exactly the bytes the missed write carried or was written after the
mark (the disk step is :mod:`toolweaver_async.stores.file_sweep`), and the mark is lifted, since
nothing older remains. A namespace (or everything) marked as a whole, by a missed invalidate or
clear or by too many keys, gets the same judgement for every entry file it holds.

Each mark is lifted only if no newer missed write renewed it while it was judged (its
generation, see :class:`~.missed_writes.Stamp`). A key that cannot be judged yet (a write of it
this process asked has not returned) is left for another round; a step that fails or finds the
breaker open again ends the sweep with the rest of the marks kept, for the next sweep. The
sweep's steps go through the store's guard like any call, so its failures count against the
store. What it did is counted for ``health_check()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar

from ..stores.file_sweep import Swept, SweptNames
from .breaker import BreakerState
from .guard import GuardedStore
from .guarded_calls import Unreachable
from .missed_writes import KeyMark, MissedWrites, Stamp

__all__ = ["MissedSweep", "SweepingStore"]

T = TypeVar("T")

logger = logging.getLogger("toolweaver_async.cache")

# Keys asked of the store per guarded call: one write-lane step each.
_KEYS_PER_CALL = 64
# Rounds one sweep makes while keys are left busy (a write of them still on its way).
_ROUNDS = 4
_LIFTS = frozenset({Swept.ABSENT, Swept.WITHDRAWN, Swept.LANDED, Swept.NEWER})


class SweepingStore(Protocol):
    """A store that can withdraw what it holds for marked keys (the file store)."""

    async def sweep_missed(
        self,
        namespace: str,
        marks: Sequence[tuple[str, bytes | None, int]],
        current: Callable[[str], bool] | None = None,
    ) -> list[Swept]: ...

    async def sweep_namespace(self, namespace: str | None, at_ns: int) -> SweptNames | None: ...


class _Ended(Exception):
    """The sweep stops here: the store did not answer, or the breaker opened again."""


class MissedSweep:
    """The background sweep of one store's marks; :meth:`on_breaker` is its breaker listener."""

    def __init__(self, missed: MissedWrites, layer: GuardedStore, store: SweepingStore) -> None:
        self.missed = missed
        self._layer = layer
        self._store = store
        self._task: asyncio.Task[None] | None = None
        self._again = False
        self._closed = False
        self.counts = dict.fromkeys(("withdrawn", "kept", "refused", "sweeps", "failed"), 0)

    def describe(self) -> dict[str, int]:
        """For ``health_check()``: marks standing now, and what the sweeps did so far."""
        counts = self.counts
        return {
            "missed_marked": len(self.missed),
            "missed_withdrawn": counts["withdrawn"],
            "missed_kept": counts["kept"],
            "missed_refused": counts["refused"],
            "missed_sweeps": counts["sweeps"],
            "missed_sweeps_failed": counts["failed"],
        }

    def on_breaker(self, _name: str, _old: BreakerState, new: BreakerState) -> None:
        """The breaker closed: the store answers again."""
        if new is BreakerState.CLOSED:
            self.start()

    def start(self) -> None:
        """Sweep in the background (again once the running sweep ends, if one is running)."""
        if self._closed or not self.missed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # told outside any loop: the next close or open sweeps
            return
        if self._task is not None and not self._task.done():
            self._again = True
            return
        self._task = loop.create_task(self._run())

    async def idle(self) -> None:
        """Wait for the running sweep (if any) to end."""
        while self._task is not None and not self._task.done():
            await asyncio.wait([self._task])

    async def aclose(self) -> None:
        """Stop sweeping (a step already on the worker thread finishes there)."""
        self._closed = True
        task = self._task
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        await self.missed.load()
        lifted = False
        try:
            for _round in range(_ROUNDS):
                self._again = False
                self.counts["sweeps"] += 1
                busy, changed = await self._sweep()
                lifted = lifted or changed
                if not (busy or self._again) or self._closed:
                    break
        except _Ended:
            self.counts["failed"] += 1
            logger.info(
                "file store: sweep of missed writes stopped (%s); %d marks kept",
                self._layer.last_error or "breaker open",
                len(self.missed),
            )
        except Exception:  # a bug: logged, the marks stay (they only cost misses here)
            self.counts["failed"] += 1
            logger.exception("file store: sweep of missed writes failed")
        finally:
            if lifted:
                self.missed.save_soon()  # lifts ride along; a lost one only costs misses

    async def _sweep(self) -> tuple[bool, bool]:
        """One pass over the marks; (keys left busy, marks lifted)."""
        pending = self.missed.pending()
        busy = lifted = False
        if pending.everything is not None:
            return await self._sweep_whole(None, pending.everything)
        for namespace, stamp in pending.namespaces:
            left, changed = await self._sweep_whole(namespace, stamp)
            busy, lifted = busy or left, lifted or changed
        for namespace, marks in pending.keys:
            for start in range(0, len(marks), _KEYS_PER_CALL):
                left, changed = await self._sweep_keys(
                    namespace, marks[start : start + _KEYS_PER_CALL]
                )
                busy, lifted = busy or left, lifted or changed
        return busy, lifted

    async def _sweep_keys(self, namespace: str, marks: list[KeyMark]) -> tuple[bool, bool]:
        stamps = {mark.key: mark.stamp.generation for mark in marks}

        def current(key: str) -> bool:
            return self.missed.generation_of(namespace, key) == stamps[key]

        judged = await self._call(
            self._store.sweep_missed,
            namespace,
            [(mark.key, mark.digest, mark.stamp.at_ns) for mark in marks],
            current,
        )
        busy = lifted = False
        for mark, swept in zip(marks, judged, strict=True):
            self.counts["withdrawn"] += swept is Swept.WITHDRAWN
            self.counts["kept"] += swept is Swept.LANDED or swept is Swept.NEWER
            self.counts["refused"] += swept is Swept.REFUSED
            busy = busy or swept is Swept.BUSY
            if swept in _LIFTS:
                gone = self.missed.lift_swept(namespace, mark.key, mark.stamp.generation)
                lifted = lifted or gone
        return busy, lifted

    async def _sweep_whole(self, namespace: str | None, stamp: Stamp) -> tuple[bool, bool]:
        """Sweep a namespace (None: everything) marked as a whole; (busy, mark lifted)."""
        counts = await self._call(self._store.sweep_namespace, namespace, stamp.at_ns)
        if counts is None:  # writes of it still queued here: judged by a later round
            return True, False
        withdrawn, kept, refused = counts
        self.counts["withdrawn"] += withdrawn
        self.counts["kept"] += kept
        self.counts["refused"] += refused
        return False, not refused and self.missed.lift_swept(namespace, None, stamp.generation)

    async def _call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``fn(*args)`` through the store's guard; the sweep ends when it does not answer."""
        if self._closed:
            raise _Ended
        outcome = await self._layer.attempt(fn, *args)
        if isinstance(outcome, Unreachable):
            raise _Ended
        return outcome
