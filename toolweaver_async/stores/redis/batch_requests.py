"""What the round-trip batcher keeps track of: one caller's share of a batch, and one round trip
on the wire with the callers it serves.

Plain slotted records, apart from the batcher's scheduling logic so each reads on its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Sequence
from typing import Any

__all__ = ["InFlightRoundTrip", "ReadGroup", "Request"]

# Keys read together in one MGET, and the group that may share that MGET with other callers
# (``None``: the one group of a standalone server).
ReadGroup = tuple[Hashable, Sequence[bytes]]


class Request:
    """One caller's share of a batch: groups of MGET keys, or packed pipeline commands and
    their count. ``grouped``: the caller wants one reply per group (errors in place) rather
    than the values of its single group."""

    __slots__ = ("commands", "count", "deadline", "future", "grouped", "reads", "weight")

    def __init__(
        self,
        future: asyncio.Future[list[Any]],
        deadline: float,
        reads: Sequence[ReadGroup] | None,
        commands: bytes,
        count: int,
        grouped: bool,
        weight: int,
    ) -> None:
        self.future = future
        self.deadline = deadline
        self.reads = reads
        self.commands = commands
        self.count = count
        self.grouped = grouped
        self.weight = weight  # keys or commands it adds to a batch (see the batcher)


class InFlightRoundTrip:
    """A round trip on the wire: who runs it, until when, and for whom (None: a lone call)."""

    __slots__ = ("cancelling", "deadline", "expired", "requests", "stalled", "task", "timeout")

    def __init__(
        self, task: asyncio.Task[Any], deadline: float, requests: list[Request] | None
    ) -> None:
        self.task = task
        self.deadline = deadline
        self.requests = requests
        self.cancelling = task.cancelling()
        self.expired = False
        self.stalled = False  # expired by a watchdog that ran late: this process was stalled
        # The timeout its callers share, made when the first of them (or the trip) expires.
        self.timeout: TimeoutError | None = None
