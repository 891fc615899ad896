"""Which keys are being read from a slower store or written right now, so reads never promote
a value older than a write they overlapped.

A read that finds a value in Redis or a file copies it into the faster stores (promotion). The
value may be older than a write of that key which overlapped the read in any way: one made while
the read was out, and just as well one that began before it and had not reached the slower
stores yet (a write puts its value in memory at once, then waits for the slower stores: a full
write-behind queue, a Redis call in flight; memory may lose the new value meanwhile to LRU
eviction, the coherence window or a flush, and the read then finds the older value below).
Copied into memory, that older value would be served after the write returned. The read path
asks :meth:`ReadTracker.still_current` before promoting; writes (``_writes.py``) report their
start and end, the memory layer's coherence (``coherence.py``) the changes other processes made.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["ReadToken", "ReadTracker", "Writing"]

# Per key: [reads out, writes begun, writes not yet finished].
_Slot = list[int]
# (the key's slot, writes begun when the read began or -1 if one was still out, epoch then)
ReadToken = tuple[_Slot, int, int]


class Writing:
    """One write (or removal) in flight; :meth:`ReadTracker.written` ends it, once."""

    __slots__ = ("everything", "slots")

    def __init__(self, slots: list[tuple[tuple[str, str], _Slot]], everything: bool) -> None:
        self.slots: list[tuple[tuple[str, str], _Slot]] | None = slots
        self.everything = everything


class ReadTracker:
    """Knows which keys are being read from a slower store and which are being written, so a
    read never promotes a value older than a write it overlapped."""

    __slots__ = ("_epoch", "_inflight", "_wide")

    def __init__(self) -> None:
        self._inflight: dict[tuple[str, str], _Slot] = {}
        self._epoch = 0  # bumped by invalidate() and clear(), here and in other processes
        self._wide = 0  # invalidations and clears of this process not yet finished

    # -- reads -------------------------------------------------------------------------------

    def begin(self, namespace: str, key: str) -> ReadToken:
        slot = self._inflight.get((namespace, key))
        if slot is None:
            slot = self._inflight[(namespace, key)] = [0, 0, 0]
        slot[0] += 1
        # A write still out when the read begins: what the read finds may be what it replaces.
        return slot, -1 if slot[2] or self._wide else slot[1], self._epoch

    def still_current(self, token: ReadToken) -> bool:
        """No write of the key overlapped the read so far: what it found may be promoted."""
        slot, writes, epoch = token
        return slot[1] == writes and self._epoch == epoch

    def end(self, namespace: str, key: str, token: ReadToken) -> None:
        slot = token[0]
        slot[0] -= 1
        if not slot[0] and not slot[2]:
            self._inflight.pop((namespace, key), None)

    # -- changes -----------------------------------------------------------------------------

    def wrote(self, namespace: str, key: str) -> None:
        """A change of ``key`` made elsewhere (another process), or about to be made here."""
        slot = self._inflight.get((namespace, key))
        if slot is not None:
            slot[1] += 1

    def wrote_everything(self) -> None:
        """Every key may have changed (an invalidation or flush reported by a channel)."""
        self._epoch += 1

    def writing(self, namespace: str, keys: Iterable[str]) -> Writing:
        """Writes of ``keys`` begin: until :meth:`written`, no read of them promotes."""
        inflight = self._inflight
        slots: list[tuple[tuple[str, str], _Slot]] = []
        for key in keys:
            k = (namespace, key)
            slot = inflight.get(k)
            if slot is None:
                slot = inflight[k] = [0, 0, 0]
            slot[1] += 1
            slot[2] += 1
            slots.append((k, slot))
        return Writing(slots, False)

    def writing_everything(self) -> Writing:
        """An invalidation or clear begins: until :meth:`written`, no read promotes."""
        self._epoch += 1
        self._wide += 1
        return Writing([], True)

    def written(self, writing: Writing) -> None:
        """``writing`` has reached every store it will reach (a second call does nothing)."""
        slots = writing.slots
        if slots is None:
            return
        writing.slots = None
        if writing.everything:
            self._wide -= 1
        inflight = self._inflight
        for k, slot in slots:
            slot[2] -= 1
            if not slot[0] and not slot[2]:
                inflight.pop(k, None)
