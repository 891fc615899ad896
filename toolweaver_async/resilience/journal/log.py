"""The journal's log on disk: one slot file per process, claimed with an exclusive ``flock``.

Processes sharing a cache folder keep separate logs (``<name>-<n>.jrnl`` beside
``<name>-<n>.lock``); claiming a slot also adopts the logs dead processes left in the other
unlocked slots. Every method runs in a worker thread, never on the event loop.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
from pathlib import Path
from typing import Final

from .records import JournalOp, Origin, frame

try:  # POSIX; elsewhere processes sharing a folder are not kept apart
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = ["SLOTS", "JournalFile"]

SLOTS: Final = 16  # journal files per folder: at most this many processes keep theirs on disk


class JournalFile:
    """One claimed slot. The thread lock keeps a cancelled caller's still-running hop from
    interleaving with the next."""

    def __init__(self, folder: Path, name: str, origin: Origin) -> None:
        self.folder = folder
        self.name = name
        self.origin = frame(origin)
        self.path: Path | None = None
        self._lock_fd: int | None = None
        self._adopted: list[tuple[int, Path]] = []  # orphans, held until our log includes them
        self._io = threading.Lock()

    def claim(self) -> list[bytes]:
        """Lock the first free slot; return what a previous owner left in it, then what dead
        processes left in the other unlocked slots (adopted: emptied after the next rewrite)."""
        with self._io:
            self.folder.mkdir(parents=True, exist_ok=True)
            contents: list[bytes] = []
            for n in range(SLOTS if fcntl is not None else 1):
                fd = os.open(self.folder / f"{self.name}-{n}.lock", os.O_RDWR | os.O_CREAT, 0o600)
                if fcntl is not None:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:  # a live process's journal
                        os.close(fd)
                        continue
                path = self.folder / f"{self.name}-{n}.jrnl"
                try:
                    content = path.read_bytes()
                except FileNotFoundError:
                    content = b""
                if self.path is None:
                    self._lock_fd, self.path = fd, path
                    contents.append(content)
                elif content:
                    self._adopted.append((fd, path))
                    contents.append(content)
                else:
                    os.close(fd)
            if self.path is None:
                raise OSError(f"all {SLOTS} journal slots in {self.folder} are held")
            return contents

    def append(self, chunk: bytes, fresh: bool) -> int:
        """Add ``chunk`` to the log (behind the origin record when the log is ``fresh``,
        i.e. empty); returns the bytes written."""
        with self._io:
            assert self.path is not None
            if fresh:
                chunk = self.origin + chunk
            with open(self.path, "ab") as file:
                file.write(chunk)
            return len(chunk)

    def rewrite(self, chunk: bytes) -> None:
        """Replace the log in one atomic step: a reader sees the old or the new one whole."""
        with self._io:
            assert self.path is not None
            temp = self.path.with_name(f".{self.path.name}.{secrets.token_hex(6)}.tmp")
            try:
                with open(temp, "xb") as file:
                    file.write(chunk)
                os.replace(temp, self.path)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(temp)
                raise
            # Our log now holds what we adopted: the orphans can go.
            for fd, path in self._adopted:
                with contextlib.suppress(OSError):
                    path.unlink()
                os.close(fd)
            self._adopted.clear()

    def rewrite_ops(self, ops: list[JournalOp]) -> int:
        """:meth:`rewrite` with the log of ``ops``; returns its size."""
        chunk = b"".join([self.origin, *[frame(op) for op in ops]]) if ops else b""
        self.rewrite(chunk)
        return len(chunk)

    def release(self) -> None:
        with self._io:
            for fd in [fd for fd, _ in self._adopted] + [self._lock_fd or -1]:
                if fd >= 0:
                    os.close(fd)  # closing drops the flock
            self._adopted.clear()
            self._lock_fd = None
