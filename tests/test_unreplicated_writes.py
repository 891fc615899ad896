"""The record of writes a primary acknowledged that its replicas may lack: kept until the
primary answered a later write ``lag`` seconds after, turned into suspects when the primary is
replaced, repaired in the background, and cleared by a write that lands on the new primary."""

from __future__ import annotations

import asyncio

from toolweaver_async.errors import StoreError
from toolweaver_async.serialization import EntryCodec
from toolweaver_async.stores.redis.unreplicated import UnreplicatedWrites, written_at
from toolweaver_async.testing import FakeClock

from .polling import eventually

CODEC = EntryCodec(max_value_bytes=1 << 20)


class Repairs:
    """A stand-in for the store's rollback script: records calls, fails while ``down``."""

    def __init__(self) -> None:
        self.done: list[tuple[str, str, float]] = []
        self.down = False
        self.release = asyncio.Event()
        self.release.set()

    async def __call__(self, namespace: str, key: str, stamp: float) -> None:
        await self.release.wait()
        if self.down:
            raise StoreError("down", store="redis")
        self.done.append((namespace, key, stamp))


def entry(key: str, created_at: float) -> bytes:
    return CODEC.encode("ns", key, "value", created_at=created_at, expires_at=None)


async def test_keys_of_a_replaced_primary_are_suspect_until_repaired_on_the_new_one() -> None:
    clock, repairs = FakeClock(), Repairs()
    writes = UnreplicatedWrites(repairs, lag=1.0, clock=clock, wall=clock)
    repairs.release.clear()
    writes.wrote("a", 1, [(("ns", "k1"), entry("k1", 123.5))], current=True)
    writes.wrote("b", 2, [(("ns", "k2"), None)], current=True)
    writes.replaced(lambda primary, slot: primary == "b")
    assert writes.suspects == {("ns", "k1")}
    assert writes.describe() == {"recorded": 1, "suspect": 1, "lost_on_failover": 1}
    repairs.release.set()
    await eventually(lambda: not writes.suspects, within=2.0, what="the repair")
    assert repairs.done == [("ns", "k1", 123.5)]  # removed there if created before our write


async def test_a_repair_that_cannot_reach_the_primary_is_retried() -> None:
    clock, repairs = FakeClock(), Repairs()
    writes = UnreplicatedWrites(repairs, lag=1.0, clock=clock, wall=clock)
    repairs.down = True
    writes.wrote("a", 1, [(("ns", "k"), None)], current=True)
    writes.replaced(lambda primary, slot: False)
    await asyncio.sleep(0.08)  # a failed attempt or two: still suspect
    assert writes.suspects == {("ns", "k")}
    repairs.down = False
    await eventually(lambda: not writes.suspects, within=3.0, what="the retried repair")
    await writes.aclose()


async def test_a_write_the_primary_answered_a_lag_later_is_no_longer_at_risk() -> None:
    clock, repairs = FakeClock(), Repairs()
    writes = UnreplicatedWrites(repairs, lag=1.0, clock=clock, wall=clock)
    writes.wrote("a", 1, [(("ns", "old"), None)], current=True)
    clock.advance(1.5)
    writes.wrote("a", 1, [(("ns", "new"), None)], current=True)  # "a" was alive 1.5 s later
    writes.replaced(lambda primary, slot: False)
    assert writes.suspects == {("ns", "new")}
    await writes.aclose()


async def test_a_primary_that_stops_answering_keeps_its_records_however_long_it_takes() -> None:
    clock, repairs = FakeClock(), Repairs()
    writes = UnreplicatedWrites(repairs, lag=1.0, clock=clock, wall=clock)
    writes.wrote("a", 1, [(("ns", "last"), None)], current=True)
    clock.advance(60)
    writes.wrote("b", 2, [(("ns", "elsewhere"), None)], current=True)  # another primary
    writes.replaced(lambda primary, slot: primary == "b")
    assert writes.suspects == {("ns", "last")}
    await writes.aclose()


async def test_a_write_landing_on_the_current_primary_clears_the_suspect() -> None:
    clock, repairs = FakeClock(), Repairs()
    writes = UnreplicatedWrites(repairs, lag=1.0, clock=clock, wall=clock)
    repairs.release.clear()
    writes.wrote("a", 1, [(("ns", "k"), None)], current=True)
    writes.replaced(lambda primary, slot: False)
    suspects = writes.suspects
    writes.wrote("b", 1, [(("ns", "k"), None)], current=True)
    assert not writes.suspects
    assert suspects is writes.suspects  # the store reads this very set on its hot path
    await writes.aclose()


async def test_a_write_acknowledged_by_a_primary_already_replaced_is_suspect_at_once() -> None:
    clock, repairs = FakeClock(), Repairs()
    writes = UnreplicatedWrites(repairs, lag=1.0, clock=clock, wall=clock)
    repairs.release.clear()
    writes.wrote("a", 1, [(("ns", "k"), None)], current=False)
    assert writes.suspects == {("ns", "k")}
    await writes.aclose()


async def test_the_record_per_primary_is_bounded() -> None:
    clock, repairs = FakeClock(), Repairs()
    writes = UnreplicatedWrites(repairs, lag=1.0, max_keys=3, clock=clock, wall=clock)
    repairs.release.clear()
    writes.wrote("a", 1, [(("ns", f"k{n}"), None) for n in range(10)], current=True)
    writes.replaced(lambda primary, slot: False)
    assert writes.suspects == {("ns", "k7"), ("ns", "k8"), ("ns", "k9")}
    await writes.aclose()


def test_a_write_is_stamped_with_its_entry_created_at_else_the_wall_time() -> None:
    assert written_at(entry("k", 42.25), 99.0) == 42.25
    assert written_at(None, 99.0) == 99.0
    assert written_at(b"\xc1 not msgpack", 99.0) == 99.0
