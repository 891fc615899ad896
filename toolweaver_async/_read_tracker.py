"""Which keys are being read from a slower store right now, and whether they were written since.

A read that finds a value in Redis or a file copies it into the faster stores (promotion). If
the key was written, deleted or invalidated while that read was out, the value it found may be
older than the write: the read path asks :meth:`ReadTracker.still_current` before promoting.
Writes (``_writes.py``) and the memory layer's coherence (``coherence.py``) report to it.
"""

from __future__ import annotations

__all__ = ["ReadToken", "ReadTracker"]

# (the key's [readers, writes] slot, writes seen when the read began, epoch then)
ReadToken = tuple[list[int], int, int]


class ReadTracker:
    """Knows which keys are being read from a slower store right now, and whether they were
    written meanwhile, so a read never promotes a value older than a concurrent write."""

    __slots__ = ("_epoch", "_inflight")

    def __init__(self) -> None:
        self._inflight: dict[tuple[str, str], list[int]] = {}  # key -> [readers, writes]
        self._epoch = 0  # bumped by invalidate() and clear()

    def begin(self, namespace: str, key: str) -> ReadToken:
        slot = self._inflight.get((namespace, key))
        if slot is None:
            slot = self._inflight[(namespace, key)] = [0, 0]
        slot[0] += 1
        return slot, slot[1], self._epoch

    def still_current(self, token: ReadToken) -> bool:
        slot, writes, epoch = token
        return slot[1] == writes and self._epoch == epoch

    def end(self, namespace: str, key: str, token: ReadToken) -> None:
        slot = token[0]
        slot[0] -= 1
        if slot[0] == 0:
            self._inflight.pop((namespace, key), None)

    def wrote(self, namespace: str, key: str) -> None:
        slot = self._inflight.get((namespace, key))
        if slot is not None:
            slot[1] += 1

    def wrote_everything(self) -> None:
        self._epoch += 1
