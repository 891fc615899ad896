"""Running an ``AsyncToolCache``'s coroutines to completion for synchronous callers.

One :class:`CacheBridge` per cache (shared by ``SyncToolCache`` and every adapter of that cache,
see :func:`bridge_for`) decides *where* a blocking call runs:

- on the thread of a running event loop it refuses with :class:`SyncInEventLoopError`: waiting
  there would block the very loop that must do the work (a deadlock, or a frozen agent);
- when the cache already lives on a loop that runs in another thread (an adapter's async
  method ran there, or ``loop=`` named it), the call is handed to that loop: Redis connections
  and the cache's tasks belong to the loop that made them;
- otherwise on the bridge's own loop, started on first use in a **daemon** thread running an
  anyio :class:`~anyio.from_thread.BlockingPortal`, so a forgotten ``close()`` never keeps the
  interpreter from exiting (``start_blocking_portal`` joins its thread when its context ends,
  and older anyio releases ran it on a non-daemon executor thread; a daemon thread of our own
  is the same portal without either). ``close()`` stops it; so does garbage collection or exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

from .errors import SyncInEventLoopError

if TYPE_CHECKING:
    from .cache import AsyncToolCache

__all__ = ["CacheBridge", "LoopThread", "bridge_for", "refuse_inside_loop"]

T = TypeVar("T")


def refuse_inside_loop(what: str) -> None:
    """Raise :class:`SyncInEventLoopError` when called on a running event loop's thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    raise SyncInEventLoopError(
        f"{what} blocks, and this thread runs an event loop: await the async API here "
        "(AsyncToolCache, or the adapter's a* methods), or call it from a worker thread"
    )


class LoopThread:
    """An event loop in a daemon thread, behind an anyio blocking portal."""

    def __init__(self, name: str = "toolweaver-sync") -> None:
        self._name = name
        self._lock = threading.Lock()
        self._portal: BlockingPortal | None = None
        self._thread: threading.Thread | None = None
        self._stop: anyio.Event | None = None
        self.loop: asyncio.AbstractEventLoop | None = None

    def portal(self) -> BlockingPortal:
        """The running portal, started on first use."""
        portal = self._portal
        if portal is not None:
            return portal
        with self._lock:
            if self._portal is None:
                self._start()
            assert self._portal is not None
            return self._portal

    def _start(self) -> None:
        ready: list[BaseException | None] = []
        started = threading.Event()

        async def serve() -> None:
            try:
                async with BlockingPortal() as portal:
                    self._portal = portal
                    self.loop = asyncio.get_running_loop()
                    self._stop = anyio.Event()
                    ready.append(None)
                    started.set()
                    await self._stop.wait()
            except BaseException as exc:  # reported to the starting thread
                if not started.is_set():
                    ready.append(exc)
                    started.set()
                raise

        thread = threading.Thread(target=lambda: anyio.run(serve), name=self._name, daemon=True)
        thread.start()
        started.wait()
        if ready and ready[0] is not None:
            raise ready[0]
        self._thread = thread

    def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        return self.portal().call(fn, *args)

    def stop(self, timeout: float = 5.0) -> None:
        """Let the loop finish and its thread end (waiting at most ``timeout`` seconds)."""
        with self._lock:
            portal, thread, stop = self._portal, self._thread, self._stop
            self._portal = self._thread = self._stop = self.loop = None
        if portal is None or stop is None or thread is None:
            return
        if thread is threading.current_thread():
            return  # stopping from inside the loop: it ends when this call returns
        with contextlib.suppress(RuntimeError):  # the loop is already gone
            portal.call(stop.set)
        thread.join(timeout)


class CacheBridge:
    """Blocking calls into one cache, run on the loop the cache lives on (see module doc)."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self._home = loop
        self._own = LoopThread()
        # stop our loop's thread when the bridge is collected, or at exit
        self._finalizer = weakref.finalize(self, self._own.stop, 1.0)

    def note_loop(self) -> None:
        """Called from the cache's async paths: the running loop is the cache's home, so
        later blocking calls from other threads are handed to it."""
        if self._home is None:
            self._home = asyncio.get_running_loop()

    def run(self, what: str, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``await fn(*args)`` on the cache's loop, from synchronous code."""
        refuse_inside_loop(what)
        home = self._home
        if home is not None and home is not self._own.loop:
            if home.is_running():
                return asyncio.run_coroutine_threadsafe(_call(fn, args), home).result()
            # The cache's loop has stopped (its asyncio.run ended, say): nothing can serve it
            # there any more, so our own loop takes the cache over.
            self._home = None
        result = self._own.call(fn, *args)
        if self._home is None:
            self._home = self._own.loop
        return result

    def close(self) -> None:
        """Stop the bridge's own loop thread, if it started one (a later call starts a new
        one). Idempotent."""
        self._own.stop()


async def _call(fn: Callable[..., Awaitable[T]], args: tuple[Any, ...]) -> T:
    return await fn(*args)


# One bridge per cache, so a SyncToolCache and every adapter of a cache share its loop.
_bridges: weakref.WeakKeyDictionary[AsyncToolCache, CacheBridge] = weakref.WeakKeyDictionary()
_bridges_lock = threading.Lock()


def bridge_for(cache: AsyncToolCache) -> CacheBridge:
    """The bridge of ``cache``, made on first use."""
    bridge = _bridges.get(cache)
    if bridge is None:
        with _bridges_lock:
            bridge = _bridges.get(cache)
            if bridge is None:
                # made inside a running loop: that loop is where the cache lives
                try:
                    home: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
                except RuntimeError:
                    home = None
                bridge = _bridges[cache] = CacheBridge(home)
    return bridge
