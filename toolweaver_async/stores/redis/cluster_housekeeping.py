"""Cluster housekeeping: invalidating a namespace on every stripe, clearing the prefix, listing
live entries, and dropping dead generations; each scans every primary.

Apart from the engine's reads and writes because scanning walks nodes, not slots: every primary
is asked with ``SCAN`` and what it finds is regrouped by slot before anything is unlinked or read.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any, Final

from ..base import EntryPage
from .client import DRIVER_ERRORS
from .cluster_keys import StripedNamespace
from .cluster_routing import ClusterRouting
from .keyspace import glob_escape, is_counter, raise_first_error

__all__ = ["ClusterHousekeeping"]

logger = logging.getLogger(__name__)

_SCAN_COUNT: Final = 1000


class ClusterHousekeeping(ClusterRouting):
    """Invalidation, clear, listing and background clean-up of a cluster's keyspace."""

    async def invalidate(self, namespace: str) -> None:
        """``INCR`` every stripe's counter (one pipeline per node), then drop the dead
        generations' entries in the background, best effort."""
        striped = self._namespace(namespace)
        groups = [
            (slot, [("INCR", s.gen_key)])
            for s, slot in zip(striped.stripes, striped.slots, strict=True)
        ]
        try:
            replies = await self._pipelines(groups)
            for stripe, reply in zip(striped.stripes, replies, strict=True):
                (number,) = raise_first_error(reply)
                stripe.observe(str(number).encode())
        except DRIVER_ERRORS as exc:
            raise self._failure("invalidate", exc) from exc
        task = asyncio.get_running_loop().create_task(self._drop_dead_generations(striped))
        self._cleanups.add(task)
        task.add_done_callback(self._cleanups.discard)

    async def clear(self) -> None:
        """SCAN every primary for this prefix and unlink all but the generation counters."""
        try:
            await self._unlink_scanned(f"{self._prefix}:*", lambda key: not is_counter(key))
        except DRIVER_ERRORS as exc:
            raise self._failure("clear", exc) from exc

    async def list_entries(self, namespace: str, prefix: str) -> AsyncIterator[EntryPage]:
        """Live entries of ``namespace`` whose key starts with ``prefix``, a page per scan
        step per primary; a stripe invalidated meanwhile is left out from then on."""
        striped = self._namespace(namespace)
        try:
            await self._mgets(
                [
                    (slot, [s.gen_key_bytes])
                    for s, slot in zip(striped.stripes, striped.slots, strict=True)
                ]
            )
            generations = [stripe.generation.number for stripe in striped.stripes]
            wanted = glob_escape(prefix).encode()
            base = f"{self._prefix}:{namespace}:".encode()
            for node in self.client.get_primaries():
                cursor: Any = 0
                while True:
                    cursor, found = await self._on_node(
                        node, "SCAN", cursor, "MATCH", base + b"*:" + wanted + b"*",
                        "COUNT", _SCAN_COUNT,
                    )  # fmt: skip
                    page = await self._live_entries(striped, generations, base, prefix, found)
                    if page:
                        yield page
                    if int(cursor) == 0:
                        break
        except DRIVER_ERRORS as exc:
            raise self._failure("list", exc) from exc

    # -- scanning ------------------------------------------------------------------------------

    async def _unlink_scanned(self, pattern: str, keep: Callable[[bytes], bool]) -> None:
        """SCAN every primary for ``pattern`` and unlink the keys ``keep`` selects, one
        ``UNLINK`` per slot (a multi-key command may not span slots)."""
        await self.start()
        for node in self.client.get_primaries():
            cursor: Any = 0
            while True:
                cursor, found = await self._on_node(
                    node, "SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT
                )
                by_slot: dict[int, list[bytes]] = {}
                for key in found:
                    if keep(key):
                        by_slot.setdefault(self.client.keyslot(key), []).append(key)
                if by_slot:
                    # Best effort: a key whose slot moved meanwhile answers MOVED and stays.
                    await self._pipelines(
                        [(slot, [("UNLINK", *keys)]) for slot, keys in by_slot.items()]
                    )
                if int(cursor) == 0:
                    break

    async def _drop_dead_generations(self, striped: StripedNamespace) -> None:
        generations = {stripe.base.encode(): stripe.generation.number for stripe in striped.stripes}

        def dead(key: bytes) -> bool:
            base, _, rest = key.partition(b"}:")
            number, colon, _ = rest.partition(b":")
            live = generations.get(base + b"}:")
            return bool(colon) and live is not None and number.isdigit() and int(number) < live

        try:
            await self._unlink_scanned(f"{self._prefix}:{striped.name}:*", dead)
        except DRIVER_ERRORS as exc:
            logger.debug("redis cleanup of %s at %s skipped: %s", striped.name, self._url, exc)

    async def _live_entries(
        self,
        striped: StripedNamespace,
        generations: list[int],
        base: bytes,
        prefix: str,
        found: list[bytes],
    ) -> EntryPage:
        keys_by_stripe: dict[int, list[tuple[bytes, str]]] = {}
        for name in found:
            tag_part, _, rest = name[len(base) :].partition(b"}:")
            number, colon, key_bytes = rest.partition(b":")
            index = striped.stripe_by_tag(tag_part[1:])
            if index is None or not colon or number != str(generations[index]).encode():
                continue
            try:
                key = key_bytes.decode()
            except UnicodeDecodeError:
                continue  # not a key this library wrote
            if key.startswith(prefix):
                keys_by_stripe.setdefault(index, []).append((name, key))
        stripes = list(keys_by_stripe)
        replies = await self._mgets(
            [
                (
                    striped.slots[i],
                    [striped.stripes[i].gen_key_bytes, *[n for n, _ in keys_by_stripe[i]]],
                )
                for i in stripes
            ]
        )
        page = []
        for index, reply in zip(stripes, replies, strict=True):
            seen = striped.stripes[index].observe(reply[0])
            if seen.number != generations[index] or not seen.readable:
                continue  # invalidated meanwhile: nothing listed from this stripe is live
            for (_, key), data in zip(keys_by_stripe[index], reply[1:], strict=True):
                if data is not None:
                    page.append((key, data))
        return page
