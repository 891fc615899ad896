"""The file store's on-disk entry format, shared by the store and its key listing.

An entry file is a header (magic, key length, expires-at, data length), the full key, then the
entry bytes; the data length catches a file torn after its header.
"""

from __future__ import annotations

import math
import os
import struct

from .file_tree import O_NOFOLLOW

__all__ = [
    "EXPIRES_AT",
    "EXPIRES_AT_OFFSET",
    "HEADER",
    "MAGIC",
    "NEVER",
    "O_READ",
    "TEMP_SUFFIX",
    "read_all",
]

# Store-level header: magic, key length, expires_at (wall clock; NaN = never), data length.
# The data length catches a file torn after its header (never fsynced: file_writes).
HEADER = struct.Struct("<4sIdQ")
# Where expires_at sits in the header, for expiring an entry in place (see file_writes).
EXPIRES_AT = struct.Struct("<d")
EXPIRES_AT_OFFSET = struct.calcsize("<4sI")
MAGIC = b"TWF1"
# expires_at of an entry without a ttl: NaN, which every "expires_at <= now" check finds False.
NEVER = math.nan
TEMP_SUFFIX = ".tmp"
# O_NOFOLLOW: an entry file that is a link is never read through (a link is foreign here).
O_READ = os.O_RDONLY | getattr(os, "O_BINARY", 0) | O_NOFOLLOW  # O_BINARY: Windows only
# First read of an entry file; under glibc's mmap threshold, so the buffer is a cheap malloc.
_READ_SIZE = 64 * 1024


def read_all(fd: int) -> bytes:
    """Everything in the file ``fd``: one read for a small file (a local file returns all it
    has), a size check and one more for a larger one."""
    raw = os.read(fd, _READ_SIZE)
    if len(raw) < _READ_SIZE:
        return raw
    chunks = [raw]
    # +1: a file that grew since (it cannot: entries are replaced, never appended) ends the loop
    want = max(os.fstat(fd).st_size - len(raw), 0) + 1
    while chunk := os.read(fd, want):
        chunks.append(chunk)
    return b"".join(chunks)
