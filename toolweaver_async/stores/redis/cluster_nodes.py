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
from .batch_requests import ReadGroup
from .batching import RoundTripBatcher
from .client import DRIVER_ERRORS
from .expiry import stalled
from .resp import shared_failure

__all__ = ["NodeBatcher", "NodeDown", "failed_node"]

T = TypeVar("T")


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
    """A :class:`RoundTripBatcher` for one primary, behind that primary's breaker."""

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

    async def mget(self, keys: Sequence[bytes], group: Hashable = None) -> list[Any]:
        # The hot path of a cluster get, so _guarded is written out here: one coroutine
        # frame per call instead of three (the batcher's mget is then the round trip's future).
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
