"""One circuit breaker per primary of a Redis Cluster: a dead primary takes out only its slots.

Each primary's round trips go through its own :class:`NodeBatcher`, which asks that node's
breaker before sending and tells it how each round trip ended. A node whose breaker is open is
refused at once, without I/O. The engine marks a failure that concerns one node while another
primary is still trusted as *refused* (see :class:`~toolweaver_async.errors.StoreError`), so the
store's own breaker does not count it: the calls touching that node's slots fall back to the
file and memory stores (their writes journaled), the others keep using Redis. When every
primary is down the failures count again, and the store's breaker opens as for one server.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Hashable, Sequence
from typing import Any, TypeVar

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from ...resilience.breaker import BreakerState, CircuitBreaker
from .batch_requests import ONE_GROUP, PAIR, ReadGroup
from .batching import RoundTripBatcher
from .client import DRIVER_ERRORS
from .expiry import stalled
from .resp import shared_failure

__all__ = ["NodeBatcher", "NodeDown", "failed_node"]

T = TypeVar("T")

_CLOSED = BreakerState.CLOSED  # enum lookups cost ~60 ns on 3.11


class NodeDown(RedisConnectionError):
    """A round trip to one primary failed (the cause is chained), or its breaker refused it."""

    def __init__(self, node: str, message: str) -> None:
        super().__init__(message)
        self.node = node


def failed_node(exc: BaseException | None) -> str | None:
    """The primary a failure concerns, when it concerns one."""
    while exc is not None:
        if isinstance(exc, NodeDown):
            return exc.node
        exc = exc.__cause__
    return None


def _answered(exc: BaseException | None) -> bool:
    """Whether the node answered (an error reply such as MOVED is an answer, not an outage)."""
    while exc is not None:
        if isinstance(exc, ResponseError):
            return True
        exc = exc.__cause__
    return False


class NodeBatcher(RoundTripBatcher):
    """A :class:`RoundTripBatcher` for one primary, behind that primary's breaker.

    While the breaker is closed, a get that joins a shared round trip is not counted on its
    own: the round trip is, once, as a failure of one round trip already was (the breaker
    counts each incident once). One answered round trip is one success, however many gets it
    carried, so the breaker weighs round trips against round trips: ~20-200 callers' worth of
    successes no longer hide a failing node behind its failure rate, and a batched get costs
    no breaker call and no coroutine frame of this class (~0.5 us of a ~10 us get). A call
    that goes out alone, and every call while the breaker is open or half-open (refusals,
    probes), is counted per call, as :meth:`_guarded` does.
    """

    def __init__(
        self,
        connect: Callable[[], Any],
        *,
        node: str,
        breaker: CircuitBreaker,
        **options: Any,
    ) -> None:
        super().__init__(connect, **options)
        self.node = node
        self.breaker = breaker

    def mget(self, keys: Sequence[bytes], group: Hashable = None) -> Awaitable[list[Any]]:
        if self._in_flight and not self._closed and self.breaker.state is _CLOSED:
            # Joins the next shared round trip: its future, counted with it (see the class doc).
            self.requests += 1
            return self._enqueue(ONE_GROUP, ((group, keys),), b"", 0, len(keys))
        return self._guarded_mget(keys, group)

    def mget_pair(self, lead: bytes, key: bytes) -> Awaitable[list[Any]]:
        if self._in_flight and not self._closed and self.breaker.state is _CLOSED:
            self.requests += 1
            return self._enqueue(PAIR, (lead, key), b"", 0, 2)
        return self._guarded_mget((lead, key), lead)

    async def _guarded_mget(self, keys: Sequence[bytes], group: Hashable) -> list[Any]:
        # _guarded written out: one coroutine frame per call instead of three.
        breaker = self.breaker
        if not breaker.allow():
            raise self._refused()
        epoch = breaker.epoch
        try:
            result = await RoundTripBatcher.mget(self, keys, group)
        except DRIVER_ERRORS as exc:
            error = self._failed(exc, epoch)
            if error is exc:
                raise
            raise error from exc
        except BaseException:
            if breaker.epoch == epoch:
                breaker.release()  # cancelled: neither a success nor a failure
            raise
        if breaker.epoch == epoch:
            breaker.record_success()
        return result

    async def mget_groups(self, groups: Sequence[ReadGroup]) -> list[Any]:
        return await self._guarded(super().mget_groups(groups))

    async def pipeline(self, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
        return await self._guarded(super().pipeline(commands))

    async def _guarded(self, call: Awaitable[T]) -> T:
        breaker = self.breaker
        if not breaker.allow():
            if hasattr(call, "close"):
                call.close()  # never started: no I/O at all
            raise self._refused()
        epoch = breaker.epoch
        try:
            result = await call
        except DRIVER_ERRORS as exc:
            error = self._failed(exc, epoch)
            if error is exc:
                raise
            raise error from exc
        except BaseException:
            if breaker.epoch == epoch:
                breaker.release()  # cancelled: neither a success nor a failure
            raise
        if breaker.epoch == epoch:
            breaker.record_success()
        return result

    # -- shared round trips (see RoundTripBatcher._trip_leaving) --------------------------------

    def _trip_leaving(self) -> int | None:
        """The breaker's epoch when it is closed: only then is a round trip counted whole."""
        breaker = self.breaker
        return breaker.epoch if breaker.state is _CLOSED else None

    def _trip_answered(self, token: Any) -> None:
        if token is not None:
            self.breaker.succeeded(token)  # dropped if the breaker changed state since

    def _caller_error(self, error: BaseException) -> BaseException:
        """A caller's share of ``error``: :class:`NodeDown` unless the node answered. While
        the breaker is closed, the first caller's share counts ``error`` once (the others are
        the same incident); the calls counted per call count it themselves."""
        own = super()._caller_error(error)
        if _answered(error):
            return own
        breaker = self.breaker
        if breaker.state is _CLOSED and not stalled(error):
            breaker.record_failure(error)
        down = NodeDown(self.node, f"redis node {self.node}: {type(own).__name__}")
        down.__cause__ = own
        return down

    def _refused(self) -> NodeDown:
        return NodeDown(self.node, f"redis node {self.node}: its circuit breaker is open")

    def _failed(self, exc: BaseException, epoch: int) -> BaseException:
        """Tell the breaker how a call admitted in ``epoch`` failed; the error to raise:
        ``exc`` itself when the node answered (an error reply), else :class:`NodeDown`."""
        breaker = self.breaker
        if _answered(exc):
            if breaker.epoch == epoch:
                breaker.record_success()
            return exc
        if breaker.epoch == epoch:
            if stalled(exc):
                breaker.release()  # this process stalled past the deadline, not the node
            else:
                breaker.record_failure(shared_failure(exc))
        return NodeDown(self.node, f"redis node {self.node}: {type(exc).__name__}")

    @property
    def trusted(self) -> bool:
        """Whether calls to this node go out (its breaker is not open)."""
        return self.breaker.state is not BreakerState.OPEN
