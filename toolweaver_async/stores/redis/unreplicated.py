"""Writes a primary acknowledged that its replicas may not have yet: what a failover can lose.

Replication is asynchronous: a primary answers a write before its replicas have it, so a replica
promoted after the primary died may lack the last writes and serve the value before them. The
store records, per primary, the keys it wrote or deleted there; a record is dropped once that
primary has answered another write ``lag`` seconds later (it was alive well after, so the write
had time to replicate). A primary that dies keeps its records however long the failover takes.

When the store notices that a primary was replaced (a failover, a slot served elsewhere), every
key still recorded for it becomes *suspect*: the store refuses reads of it (the chain reads the
next store and keeps that value in memory for the coherence window at most) until it has removed
what the new primary holds of that key *if it is older than the write it lost* (one script per
key: the entry's created-at against the lost write's). Not the value again, nor a blind delete:
another process may have written a newer value to the new primary since, which must stay.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Final

import msgspec

from ...errors import StoreError

__all__ = ["ROLL_BACK_IF_OLDER", "UnreplicatedWrites", "written_at"]

logger = logging.getLogger(__name__)

Name = tuple[str, str]  # (namespace, key)
# ``repair(namespace, key, stamp)``: remove the key's entry on the current primary if it was
# created before ``stamp``; raises StoreError when the primary cannot be reached.
Repair = Callable[[str, str, float], Awaitable[None]]

# Entries are msgpack arrays whose fourth element is the created-at time (see Envelope in
# serialization.py). Bytes that are no such entry go too: nothing of ours can be lost by that.
ROLL_BACK_IF_OLDER: Final = """
local data = redis.call('GET', KEYS[1])
if not data then return 0 end
local ok, entry = pcall(cmsgpack.unpack, data)
if ok and type(entry) == 'table' and type(entry[4]) == 'number'
   and entry[4] >= tonumber(ARGV[1]) then return 0 end
return redis.call('DEL', KEYS[1])
"""

# Repairs run this many at a time; a failed one is retried after a growing pause.
_REPAIRS_AT_ONCE: Final = 64
_RETRY_FIRST, _RETRY_MAX = 0.05, 1.0

# How long a primary must have answered after a write for that write to count as replicated:
# replication lag on a healthy link is milliseconds; a second leaves room for a loaded host.
DEFAULT_LAG: Final = 1.0
# Records kept per primary at most (the oldest go first): a primary that stops answering keeps
# its last writes for as long as the failover takes, bounded.
DEFAULT_MAX_KEYS: Final = 50_000


class UnreplicatedWrites:
    """Per primary, the keys written there within the last ``lag`` seconds of its answers;
    the suspects a failover left; and who to tell about them. One event loop owns it."""

    __slots__ = (
        "_by_primary",
        "_clock",
        "_lag",
        "_max_keys",
        "_repair",
        "_repairing",
        "_to_repair",
        "_wall",
        "lost",
        "suspects",
    )

    def __init__(
        self,
        repair: Repair,
        *,
        lag: float = DEFAULT_LAG,
        max_keys: int = DEFAULT_MAX_KEYS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._repair = repair
        self._lag = lag
        self._max_keys = max_keys
        self._clock = clock
        self._wall = wall
        # primary -> {name: (acknowledged at, slot, bytes written or None, wall time)}, in
        # acknowledgement order. The bytes are those the cache already holds; kept a second.
        self._by_primary: dict[Hashable, dict[Name, tuple[float, int, bytes | None, float]]] = {}
        # Keys whose value on the current primary may be older than this store's last write.
        self.suspects: set[Name] = set()
        self._to_repair: dict[Name, float] = {}
        self._repairing: asyncio.Task[None] | None = None
        self.lost = 0  # keys found suspect, for health reports

    def wrote(
        self,
        primary: Hashable,
        slot: int,
        writes: Iterable[tuple[Name, bytes | None]],
        *,
        current: bool,
    ) -> None:
        """``primary`` acknowledged ``writes`` (name and bytes set, or None for a delete) in
        ``slot``. ``current``: it still serves that slot now; if not, they may be lost."""
        wall = self._wall()
        if not current:
            self._suspect([(name, written_at(data, wall)) for name, data in writes])
            return
        now = self._clock()
        records = self._by_primary.get(primary)
        if records is None:
            records = self._by_primary[primary] = {}
        suspects = self.suspects
        for name, data in writes:
            records.pop(name, None)  # re-inserted last: the dict stays in time order
            records[name] = (now, slot, data, wall)
            if suspects:
                suspects.discard(name)  # the current primary has this store's latest now
        # The primary answered now: what it acknowledged `lag` ago has replicated.
        horizon = now - self._lag
        while records:
            name = next(iter(records))
            if records[name][0] > horizon and len(records) <= self._max_keys:
                break
            del records[name]

    def replaced(self, still_serves: Callable[[Hashable, int], bool]) -> None:
        """The topology changed: keys recorded for a primary that no longer serves their slot
        become suspect, and are repaired on the new primary in the background."""
        lost: list[tuple[Name, float]] = []
        for primary in list(self._by_primary):
            records = self._by_primary[primary]
            gone = [
                name for name, record in records.items() if not still_serves(primary, record[1])
            ]
            for name in gone:
                _, _, data, wall = records.pop(name)
                lost.append((name, written_at(data, wall)))
            if not records:
                del self._by_primary[primary]
        if lost:
            logger.warning(
                "a redis primary was replaced: %d keys it acknowledged recently may be missing "
                "on its successor; they are deleted there before being read again",
                len(lost),
            )
            self._suspect(lost)

    def _suspect(self, lost: list[tuple[Name, float]]) -> None:
        to_repair = self._to_repair
        for name, stamp in lost:
            self.suspects.add(name)
            to_repair[name] = max(stamp, to_repair.get(name, stamp))
        self.lost += len(lost)
        if self._repairing is None or self._repairing.done():
            self._repairing = asyncio.get_running_loop().create_task(self._repair_all())

    async def _repair_all(self) -> None:
        """Repair every suspect key on the current primary, retrying those it cannot reach."""
        pause = _RETRY_FIRST
        while self._to_repair:
            batch = list(self._to_repair.items())[:_REPAIRS_AT_ONCE]
            outcomes = await asyncio.gather(
                *(self._repair(name[0], name[1], stamp) for name, stamp in batch),
                return_exceptions=True,
            )
            failed = False
            for (name, stamp), outcome in zip(batch, outcomes, strict=True):
                if isinstance(outcome, StoreError):
                    failed = True
                    continue
                if isinstance(outcome, BaseException):
                    logger.error("repairing %r after a failover failed", name, exc_info=outcome)
                if self._to_repair.get(name) == stamp:  # else lost again meanwhile: once more
                    del self._to_repair[name]
                    self.suspects.discard(name)
            if failed:
                await asyncio.sleep(pause)
                pause = min(pause * 2, _RETRY_MAX)
            else:
                pause = _RETRY_FIRST

    async def aclose(self) -> None:
        """Stop repairing (what is left stays suspect for this store's lifetime)."""
        task = self._repairing
        if task is not None and not task.done():
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    def describe(self) -> dict[str, int]:
        """Plain data for health reports."""
        return {
            "recorded": sum(map(len, self._by_primary.values())),
            "suspect": len(self.suspects),
            "lost_on_failover": self.lost,
        }


def written_at(data: bytes | None, wall: float) -> float:
    """When the write of ``data`` happened, as entries record it: the entry's created-at,
    else (a delete, bytes that are no entry) ``wall``, the wall time it was acknowledged."""
    if data is not None:
        try:
            entry = msgspec.msgpack.decode(data)
        except msgspec.DecodeError:
            return wall
        if isinstance(entry, list) and len(entry) > 3 and isinstance(entry[3], int | float):
            return float(entry[3])
    return wall
