"""What a call that ran out of time fails with: the batcher's watchdog expires calls here.

Every caller gets its own error (see :func:`~.resp.own_error`), caused by one shared timeout:
the one of its round trip, or of the watchdog pass that expired it while it was still queued.
A breaker counts that shared timeout once (``StoreError.incident``), however many callers it
failed, and not at all when it is a :class:`StalledTimeout`.
"""

from __future__ import annotations

from collections.abc import Callable

from .batch_requests import InFlightRoundTrip, Request
from .resp import own_error

__all__ = ["StalledTimeout", "expire", "stalled", "timeout_error", "trip_timeout"]


class StalledTimeout(TimeoutError):
    """No reply by the deadline, but this process was stalled past it (its loop ran the
    watchdog more than half a timeout late): evidence against this process, not the server."""


def stalled(exc: BaseException | None) -> bool:
    """Whether ``exc`` (or what caused it) is a :class:`StalledTimeout`."""
    while exc is not None:
        if isinstance(exc, StalledTimeout):
            return True
        exc = exc.__cause__
    return False


def timeout_error(seconds: float, stalled: bool) -> TimeoutError:
    """A fresh timeout of ``seconds``, a :class:`StalledTimeout` when the loop was stalled."""
    timeout = StalledTimeout if stalled else TimeoutError
    return timeout(f"no reply from redis within {seconds} s")


def trip_timeout(trip: InFlightRoundTrip, seconds: float, stalled: bool) -> TimeoutError:
    """The one timeout every caller of ``trip`` fails with (made at its first expiry)."""
    if trip.timeout is None:
        trip.timeout = timeout_error(seconds, stalled)
    return trip.timeout


def expire(
    requests: list[Request],
    due: float,
    seconds: float,
    stalled: bool,
    trip: InFlightRoundTrip | None,
    error: Callable[[BaseException], BaseException] = own_error,
) -> list[float]:
    """Time out the calls of ``requests`` due by ``due``; the next deadline, if any (calls in
    order of arrival have deadlines in the same order). The calls expired together share one
    failure: one incident, not many; so do all the calls of one round ``trip``, whenever each
    of them expires. Each caller raises ``error(shared)`` (its own exception by default)."""
    shared: TimeoutError | None = None
    for request in requests:
        if request.future.done():
            continue
        if request.deadline > due:
            return [request.deadline]
        if shared is None:
            shared = (
                trip_timeout(trip, seconds, stalled)
                if trip is not None
                else timeout_error(seconds, stalled)
            )
        request.future.set_exception(error(shared))
    return []
