"""Is an entry fresh, due for an early refresh, stale but servable, or expired? One pure answer.

Every reader asks :func:`entry_state` (``get``, ``get_many``, ``get_or_set``, promotion,
stale-while-revalidate and XFetch early refresh); what each does with the answer is its own
decision: ``get`` serves fresh entries only, ``get_or_set`` also serves a stale one while one
refresh runs. No I/O, no clock, no randomness: the caller passes ``now`` and, for XFetch, the
window its draw gave.
"""

from __future__ import annotations

import enum
from typing import Protocol

__all__ = ["EntryState", "Timed", "entry_state"]


class EntryState(enum.Enum):
    """Where an entry is in its lifetime at a given moment."""

    FRESH = "fresh"  # before expires_at (or it never expires)
    REFRESH_DUE = "refresh_due"  # still fresh, but inside the early-refresh window
    STALE_SERVABLE = "stale_servable"  # past expires_at, inside its stale_ttl grace period
    EXPIRED = "expired"  # past its hard expiry: nobody may use it


class Timed(Protocol):
    """The two instants that decide freshness (an ``Envelope``, or its undecoded header)."""

    @property
    def expires_at(self) -> float | None: ...

    @property
    def stale_until(self) -> float | None: ...


_FRESH, _REFRESH_DUE = EntryState.FRESH, EntryState.REFRESH_DUE
_STALE_SERVABLE, _EXPIRED = EntryState.STALE_SERVABLE, EntryState.EXPIRED


def entry_state(entry: Timed, now: float, refresh_window: float = 0.0) -> EntryState:
    """The state of ``entry`` at ``now`` (wall-clock seconds, as entries are written).

    ``refresh_window`` is the early-refresh policy: a fresh entry within that many seconds of
    its expiry is :attr:`~EntryState.REFRESH_DUE` (XFetch draws it per read; 0 never refreshes
    early). An entry that never expires is always fresh.
    """
    expires_at = entry.expires_at
    if expires_at is None:
        return _FRESH
    if now < expires_at:
        return _REFRESH_DUE if now + refresh_window >= expires_at else _FRESH
    stale_until = entry.stale_until
    if stale_until is not None and now < stale_until:
        return _STALE_SERVABLE
    return _EXPIRED
