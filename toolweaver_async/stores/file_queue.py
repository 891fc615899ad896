"""The write-behind file store's queue, as other parts see it: what one queued entry holds, the
capability of reporting a queue, and how the chain reads its depth for stats and health."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

__all__ = ["QueuedEntry", "QueuedWritesStore", "first_failure", "queue_depth"]


@runtime_checkable
class QueuedWritesStore(Protocol):
    """A store whose writes land behind the caller; reports its queue for stats and health."""

    @property
    def queued_writes(self) -> dict[str, int]: ...


class QueuedEntry:
    """One entry waiting for its batch: its namespace folder, bytes, expiry and size."""

    __slots__ = ("data", "expires_at", "folder", "seq", "size")

    def __init__(self, folder: str, data: bytes, expires_at: float, size: int, seq: int) -> None:
        self.folder = folder
        self.data = data
        self.expires_at = expires_at
        self.size = size
        self.seq = seq  # the order writes were queued in (a rewrite keeps its place, not this)


def first_failure(failed: list[tuple[int, str]]) -> tuple[int, str]:
    """(how many failed, the first failure's reason) of a batch's failed rows."""
    return len(failed), failed[0][1]


def queue_depth(stores: Sequence[Any]) -> dict[str, int]:
    """The write queue of the first store that has one (empty when none does)."""
    for store in stores:
        if isinstance(store, QueuedWritesStore):
            return store.queued_writes
    return {}
