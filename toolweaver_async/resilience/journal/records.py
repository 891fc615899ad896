"""The journal's records: the operations a store missed, and their framing on disk.

Each operation is a frozen msgspec Struct carrying a sequence number; the log on disk is a run of
msgpack records, each framed by its length and CRC32 so a torn tail is detected and ignored.
"""

from __future__ import annotations

import struct
import zlib
from typing import Any, Final, TypeAlias

import msgspec

__all__ = [
    "CLEAR_SLOT",
    "JournalClear",
    "JournalDelete",
    "JournalInvalidate",
    "JournalOp",
    "JournalSet",
    "Landed",
    "Origin",
    "Record",
    "Slot",
    "frame",
    "size_of",
    "slot_of",
    "unframe",
]


class JournalSet(msgspec.Struct, tag="s", array_like=True, frozen=True):
    """Write ``data`` under ``key``; ``expires_at`` is wall-clock time (None: never)."""

    seq: int
    namespace: str
    key: str
    data: bytes
    expires_at: float | None


class JournalDelete(msgspec.Struct, tag="d", array_like=True, frozen=True):
    """Remove ``key``."""

    seq: int
    namespace: str
    key: str


class JournalInvalidate(msgspec.Struct, tag="i", array_like=True, frozen=True):
    """Make every entry of ``namespace`` unreadable (also how an overflowing namespace is
    poisoned)."""

    seq: int
    namespace: str


class JournalClear(msgspec.Struct, tag="c", array_like=True, frozen=True):
    """Remove every entry under the key prefix."""

    seq: int


class Landed(msgspec.Struct, tag="l", array_like=True, frozen=True):
    """The operation numbered ``seq`` reached the store (log record only)."""

    seq: int


class Origin(msgspec.Struct, tag="o", array_like=True, frozen=True):
    """The server (and database) a log's operations are for: the first record of every log."""

    server: str


JournalOp: TypeAlias = JournalSet | JournalDelete | JournalInvalidate | JournalClear
Record: TypeAlias = JournalOp | Landed | Origin
# (namespace, key) for key operations, (namespace, None) for an invalidation, (None, None) clear.
Slot: TypeAlias = tuple[str | None, str | None]

CLEAR_SLOT: Final[Slot] = (None, None)
_FRAME: Final = struct.Struct("<II")  # payload length, CRC32 of the payload
_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(Record)
_OP_OVERHEAD: Final = 32  # rough framing and field cost of one record, for the size estimate


def slot_of(op: JournalOp) -> Slot:
    """Where ``op`` lives in the ledger: a newer operation of the same slot replaces it."""
    if isinstance(op, JournalSet | JournalDelete):
        return (op.namespace, op.key)
    if isinstance(op, JournalInvalidate):
        return (op.namespace, None)
    return CLEAR_SLOT


def size_of(op: JournalOp) -> int:
    """Roughly the bytes ``op`` holds in memory and on disk."""
    if isinstance(op, JournalSet):
        return len(op.data) + len(op.key) + len(op.namespace) + _OP_OVERHEAD
    if isinstance(op, JournalDelete):
        return len(op.key) + len(op.namespace) + _OP_OVERHEAD
    if isinstance(op, JournalInvalidate):
        return len(op.namespace) + _OP_OVERHEAD
    return _OP_OVERHEAD


def frame(record: msgspec.Struct) -> bytes:
    """``record`` (one of ours, or another log's Struct) as one framed log record."""
    payload = _ENCODER.encode(record)
    return _FRAME.pack(len(payload), zlib.crc32(payload)) + payload


def unframe(
    content: bytes, decoder: msgspec.msgpack.Decoder[Any] = _DECODER
) -> tuple[list[Any], bool]:
    """The records of a log (decoded by ``decoder``: the journal's records unless told), and
    whether it ended in a torn or damaged frame (ignored)."""
    records: list[Any] = []
    offset, end = 0, len(content)
    while offset < end:
        if end - offset < _FRAME.size:
            return records, True
        length, crc = _FRAME.unpack_from(content, offset)
        start = offset + _FRAME.size
        payload = content[start : start + length]
        if len(payload) != length or zlib.crc32(payload) != crc:
            return records, True
        try:
            records.append(decoder.decode(payload))
        except msgspec.DecodeError:
            return records, True
        offset = start + length
    return records, False
