"""The contracts between invalidation channels and the memory coherence they drive.

Kept apart from :mod:`toolweaver_async.coherence` so that channels (which report to a
:class:`ChangeSink`) and the coherence (which owns the channels) need not import each other.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["ChangeSink", "InvalidationChannel", "ReadTracker"]


class ReadTracker(Protocol):
    """The coordinator's record of reads in flight: a read that began before a change must not
    copy what it found into memory (it may be the value the change replaced)."""

    def wrote(self, namespace: str, key: str) -> None: ...

    def wrote_everything(self) -> None: ...


class ChangeSink(Protocol):
    """What an invalidation channel reports to."""

    def keys_changed(self, changes: Iterable[tuple[str, str]]) -> None: ...

    def namespace_changed(self, namespace: str) -> None: ...

    def everything_changed(self) -> None: ...

    def channel_live(self, channel: InvalidationChannel) -> None: ...

    def channel_lost(
        self, channel: InvalidationChannel, reason: str, proof_age: float | None
    ) -> None:
        """``proof_age``: how many seconds ago every change made until then was known delivered
        (the last heartbeat answered), ``None`` when unknown."""
        ...

    def channel_unsupported(self, channel: InvalidationChannel, reason: str) -> None:
        """The channel can never vouch for the whole cache on its own (say, a cluster node)."""
        ...


class InvalidationChannel(Protocol):
    """A feed of changes to the cache's keys made by any client."""

    name: str

    def start(self, sink: ChangeSink) -> None:
        """Begin following changes in the background; report state changes to ``sink``."""
        ...

    async def aclose(self) -> None: ...

    def describe(self) -> dict[str, Any]: ...
