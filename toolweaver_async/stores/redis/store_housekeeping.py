"""Housekeeping of the Redis store: invalidating a namespace (a new generation), clearing the
key prefix, listing live entries, and removing dead generations in the background.

Each degrades rather than fails where the server allows less: out of memory, a refused ``INCR``
unlinks the live generation instead; with ``SCAN`` refused by ACL, ``clear`` invalidates every
known namespace and listing shows the other stores' entries only; a refused ``UNLINK`` becomes
``DEL``; a generation counter holding foreign bytes is repaired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Any, Final

from redis.exceptions import NoPermissionError, ResponseError

from ...errors import StoreError
from ..base import EntryPage
from .client import DRIVER_ERRORS as _DRIVER_ERRORS
from .client import store_error as _store_error
from .keyspace import Namespace as _Namespace
from .keyspace import glob_escape
from .keyspace import is_counter as _is_counter
from .store_core import _STANDALONE, RedisStoreCore
from .store_core import refused_as_full as _refused_as_full

__all__ = ["RedisStoreHousekeeping"]

logger = logging.getLogger(__name__)

_SCAN_COUNT: Final = 1000
_UNLINK_BATCH: Final = 500


class RedisStoreHousekeeping(RedisStoreCore):
    """Invalidation, clear, listing and background clean-up of a standalone or Sentinel
    keyspace; on a cluster each is handed to the cluster engine."""

    async def invalidate(self, namespace: str) -> None:
        """Make every entry of ``namespace`` unreadable at once (one ``INCR``), in every process.

        The old generation's keys are removed in the background, best effort; anything missed
        is unreadable anyway and expires with its TTL. On a cluster: one ``INCR`` per stripe.
        """
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                await engine.invalidate(namespace)
                return
        ns = self._namespace(namespace)
        try:
            try:
                number = await self._execute("INCR", ns.gen_key)
            except ResponseError as exc:
                if not _holds_no_integer(exc):
                    raise
                number = await self._repair_counter(ns)
        except _DRIVER_ERRORS as exc:
            if _refused_as_full(exc):
                await self._unlink_live_generation(ns)
            raise _store_error("invalidate", exc, self._secrets) from exc
        ns.observe(str(number).encode())
        self._schedule_cleanup(f"{ns.base}{int(number) - 1}:*")

    async def _repair_counter(self, ns: _Namespace) -> int:
        """Replace a generation counter that holds no integer with one above every generation
        it can have held (generations never go backwards): the wall clock in milliseconds,
        far beyond any count of invalidations, or one more than the last number seen."""
        number = max(int(time.time() * 1000), ns.generation.number + 1)
        await self._execute("SET", ns.gen_key, number)
        logger.warning("redis generation counter %r repaired (now %d)", ns.gen_key, number)
        return number

    async def _unlink_live_generation(self, ns: _Namespace) -> None:
        """Out of memory, Redis refuses ``INCR`` but still scans and unlinks: remove the live
        generation's entries instead, so no process reads them until the invalidation lands."""
        with contextlib.suppress(StoreError, *_DRIVER_ERRORS):
            seen = ns.observe(await self._execute("GET", ns.gen_key))
            await self._unlink_matching(f"{seen.prefix}*", keep_counters=False)

    async def clear(self) -> None:
        """Remove every entry under this store's key prefix, and nothing else; never FLUSHDB.

        Generation counters stay: generations must never go backwards (see the module
        docstring). Entries written while the scan runs may survive it. On a cluster every
        primary is scanned.
        """
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                await engine.clear()
                return
        try:
            if "SCAN" not in self._refused:
                try:
                    counters = await self._unlink_matching(f"{self._prefix}:*", keep_counters=True)
                except NoPermissionError as exc:
                    self._refuse("SCAN", exc, "clear() invalidates every namespace it knows")
                else:
                    if counters:
                        await self._repair_counters(counters)
                    return
        except _DRIVER_ERRORS as exc:
            raise _store_error("clear", exc, self._secrets) from exc
        # Without SCAN the keys cannot be found: make every namespace this store has used or
        # been configured with unreadable instead (a new generation each).
        for namespace in dict.fromkeys([*self._known_namespaces, *self._namespaces]):
            await self.invalidate(namespace)

    async def _repair_counters(self, counters: list[bytes]) -> None:
        """Give every counter among ``counters`` that holds no integer a valid one again."""
        values = await self._execute("MGET", *counters)
        for counter, value in zip(counters, values, strict=True):
            if value is None or value.isdigit():
                continue
            name = counter.decode().split(":")[1]
            await self._repair_counter(self._namespace(name))

    # -- listing (AsyncToolCache.keys) ------------------------------------------------------

    async def list_entries(self, namespace: str, prefix: str) -> AsyncIterator[EntryPage]:
        """The live generation's entries whose key starts with ``prefix``: ``SCAN MATCH`` with
        the prefix glob-escaped, then one ``MGET`` per page (with the counter, so a listing
        that an invalidation overtakes stops instead of listing a dead generation)."""
        if self._mode is not _STANDALONE:
            engine = await self._engine()
            if engine is not None:
                async for page in engine.list_entries(namespace, prefix):
                    yield page
                return
        ns = self._namespace(namespace)
        try:
            used = ns.observe(await self._execute("GET", ns.gen_key))
            if not used.readable:
                return
            pattern = used.prefix_bytes + glob_escape(prefix).encode() + b"*"
            skip = len(used.prefix_bytes)
            cursor: Any = 0
            while True:
                cursor, found = await self._execute(
                    "SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT
                )
                if found:
                    raw, *values = await self._execute("MGET", ns.gen_key, *found)
                    seen = ns.observe(raw)
                    if seen.number != used.number or not seen.readable:
                        return  # invalidated meanwhile: nothing listed from here on is live
                    page = []
                    for name, data in zip(found, values, strict=True):
                        try:
                            key = name[skip:].decode()
                        except UnicodeDecodeError:
                            continue  # not a key this library wrote
                        if data is not None:
                            page.append((key, data))
                    if page:
                        yield page
                if int(cursor) == 0:
                    return
        except NoPermissionError as exc:
            self._refuse("SCAN", exc, "keys() lists the other stores' entries only")
        except _DRIVER_ERRORS as exc:
            raise _store_error("list", exc, self._secrets) from exc

    def _schedule_cleanup(self, pattern: str) -> None:
        # One worker drains the queue, so a burst of invalidations costs one SCAN at a time
        # instead of a SCAN per call competing with callers for pooled connections.
        self._stale_patterns.append(pattern)
        if self._closing is None and (self._cleaner is None or self._cleaner.done()):
            self._cleaner = asyncio.get_running_loop().create_task(self._clean_stale())

    async def _clean_stale(self) -> None:
        while self._stale_patterns:
            pattern = self._stale_patterns.pop(0)
            try:
                await self._unlink_matching(pattern, keep_counters=False)
            except _DRIVER_ERRORS as exc:
                logger.debug(
                    "redis cleanup of %s at %s skipped: %s",
                    pattern,
                    self._url,
                    _store_error("cleanup", exc, self._secrets),
                )

    async def _unlink_matching(self, pattern: str, *, keep_counters: bool) -> list[bytes]:
        """Unlink every key matching ``pattern``; the generation counters kept, if asked to."""
        cursor = 0
        kept: list[bytes] = []
        while True:
            cursor, found = await self._execute(
                "SCAN", cursor, "MATCH", pattern, "COUNT", _SCAN_COUNT
            )
            if keep_counters:
                kept += [key for key in found if _is_counter(key)]
                found = [key for key in found if not _is_counter(key)]
            for start in range(0, len(found), _UNLINK_BATCH):
                batch = found[start : start + _UNLINK_BATCH]
                try:
                    await self._execute(self._unlink_command, *batch)
                except NoPermissionError as exc:
                    if self._unlink_command != "UNLINK":
                        raise
                    self._refuse("UNLINK", exc, "DEL removes keys")
                    self._unlink_command = "DEL"
                    await self._execute("DEL", *batch)
            if cursor == 0:
                return kept


def _holds_no_integer(exc: ResponseError) -> bool:
    """Whether ``INCR`` failed because the counter holds bytes that are no integer."""
    return "not an integer" in str(exc)
