"""entry_state: the one answer to "may this entry be served, and should it be refreshed?"."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from toolweaver_async.freshness import EntryState, entry_state
from toolweaver_async.serialization import EntryCodec

FRESH, DUE = EntryState.FRESH, EntryState.REFRESH_DUE
STALE, EXPIRED = EntryState.STALE_SERVABLE, EntryState.EXPIRED


@dataclass(frozen=True)
class Entry:
    expires_at: float | None
    stale_until: float | None = None


# (expires_at, stale_until, now, refresh window, expected state)
TABLE = [
    (None, None, 0.0, 0.0, FRESH),  # never expires
    (None, None, 1e12, 50.0, FRESH),  # never expires, whatever the window
    (100.0, None, 0.0, 0.0, FRESH),
    (100.0, None, 99.999, 0.0, FRESH),  # a zero window never refreshes early
    (100.0, None, 100.0, 0.0, EXPIRED),  # expiry is exclusive: at expires_at it is over
    (100.0, None, 150.0, 0.0, EXPIRED),  # no grace period
    (100.0, None, 89.0, 10.0, FRESH),  # just outside the window
    (100.0, None, 90.0, 10.0, DUE),  # the window's edge is inside
    (100.0, None, 99.0, 10.0, DUE),
    (100.0, 130.0, 99.0, 10.0, DUE),
    (100.0, 130.0, 100.0, 0.0, STALE),  # past expiry, inside the grace period
    (100.0, 130.0, 100.0, 1e9, STALE),  # a stale entry is never "due early"
    (100.0, 130.0, 129.999, 0.0, STALE),
    (100.0, 130.0, 130.0, 0.0, EXPIRED),  # the grace period's end is exclusive too
    (100.0, 130.0, 500.0, 0.0, EXPIRED),
]


@pytest.mark.parametrize(("expires_at", "stale_until", "now", "window", "expected"), TABLE)
def test_entry_state_table(
    expires_at: float | None,
    stale_until: float | None,
    now: float,
    window: float,
    expected: EntryState,
) -> None:
    assert entry_state(Entry(expires_at, stale_until), now, window) is expected


def test_entry_state_reads_envelopes_and_undecoded_headers_alike() -> None:
    codec = EntryCodec(max_value_bytes=1 << 20)
    data = codec.encode("ns", "k", [1, 2], created_at=0.0, expires_at=10.0, stale_until=20.0)
    for entry in (codec.decode(data), codec.decode_header(data)):
        assert entry_state(entry, 5.0) is FRESH
        assert entry_state(entry, 5.0, refresh_window=5.0) is DUE
        assert entry_state(entry, 15.0) is STALE
        assert entry_state(entry, 20.0) is EXPIRED
