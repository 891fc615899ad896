"""ToolWeaver's view of a circuit breaker: ``failures``, ``state`` as a string, ``is_available()``.

A read-through view of the real :class:`~toolweaver_async.CircuitBreaker` of a store, so code that
printed or checked ToolWeaver's breaker keeps working while the library's breaker decides.
"""

from __future__ import annotations

from ..resilience.breaker import BreakerState, CircuitBreaker

__all__ = ["CircuitBreakerView"]


class CircuitBreakerView:
    """The attributes ToolWeaver's ``CircuitBreaker`` had, read live from ``breaker``.

    ``state`` is ``"CLOSED"``, ``"OPEN"`` or ``"HALF_OPEN"`` as ToolWeaver spelled it;
    ``breaker`` is the library's own breaker, for everything else.
    """

    __slots__ = ("breaker", "failure_threshold")

    def __init__(self, breaker: CircuitBreaker, *, failure_threshold: int) -> None:
        self.breaker = breaker
        self.failure_threshold = failure_threshold

    @property
    def state(self) -> str:
        return self.breaker.state.name

    @property
    def failures(self) -> int:
        """Failures in a row since the last success (ToolWeaver's counter)."""
        return self.breaker.consecutive_failures

    @property
    def recovery_timeout(self) -> float:
        """Seconds the breaker stays open before it lets a probe through (it grows while
        probes keep failing)."""
        return self.breaker.current_recovery_timeout

    def is_available(self) -> bool:
        """``True`` unless the breaker refuses calls (open, its open period not over)."""
        return self.breaker.state is not BreakerState.OPEN

    def record_failure(self) -> None:
        self.breaker.record_failure()

    def reset(self) -> None:
        self.breaker.reset()

    def __repr__(self) -> str:
        return f"CircuitBreakerView(state={self.state!r}, failures={self.failures})"
