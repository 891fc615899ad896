"""Reading the replies of one pipelined round trip off a redis-py connection, in one loop.

redis-py reads a reply through three coroutines (the connection's ``read_response`` with its
timeout and error bookkeeping, a protocol check, the parser), ~0.8 us of CPU per reply; a
cluster round trip carries one ``MGET`` per slot it touches, ~17 for 25 gets at 100
coroutines. With the hiredis parser (a runtime dependency) this module takes each reply
straight from its reader and reads the socket only when the reader needs more bytes: the same
replies, errors and disconnect-on-failure, for ~0.1 us a reply. Any other parser, or RESP3
(push messages), is read the ordinary way.
"""

from __future__ import annotations

from typing import Any, Final

from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

__all__ = ["read_replies", "reads_directly"]

_HiredisParser: type[Any] | None
_NOT_ENOUGH_DATA: object
try:  # redis-py's parser internals: checked here, never assumed (see reads_directly)
    from redis._parsers.hiredis import NOT_ENOUGH_DATA as _NOT_ENOUGH_DATA
    from redis._parsers.hiredis import _AsyncHiredisParser as _HiredisParser
except ImportError:  # pragma: no cover - an older or newer redis-py: the ordinary path
    _HiredisParser = None
    _NOT_ENOUGH_DATA = object()

_RESP2: Final = (None, 2, "2")


def reads_directly(conn: AbstractConnection) -> bool:
    """Whether :func:`read_replies` takes ``conn``'s replies straight from its hiredis reader."""
    parser = getattr(conn, "_parser", None)
    return (
        _HiredisParser is not None
        and type(parser) is _HiredisParser
        and getattr(parser, "_reader", None) is not None
        and getattr(conn, "protocol", None) in _RESP2
    )


async def read_replies(conn: AbstractConnection, count: int, replies: list[Any]) -> None:
    """Append ``count`` replies read from ``conn`` to ``replies``; a command the server
    refused has its :class:`ResponseError` as its reply (the stream is still in step).
    On any other failure or cancellation ``conn`` is disconnected, so it never keeps a
    stray reply, and the error is raised (a socket error as redis-py's ConnectionError)."""
    if not reads_directly(conn):
        for _ in range(count):
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
        return
    parser: Any = conn._parser
    try:
        if not parser._connected:
            raise RedisConnectionError("Connection closed by server.")
        gets = parser._reader.gets
        while len(replies) < count:
            reply = gets()
            if reply is _NOT_ENOUGH_DATA:
                await parser.read_from_socket()
                continue
            # As redis-py's parser: a connection-level error reply (LOADING, NOAUTH ...)
            # fails the connection; an ordinary error reply is that command's answer.
            if isinstance(reply, RedisConnectionError):
                raise reply
            if isinstance(reply, list) and reply and isinstance(reply[0], RedisConnectionError):
                raise reply[0]
            replies.append(reply)
    except OSError as exc:
        await conn.disconnect(nowait=True)
        raise RedisConnectionError(f"Error while reading from redis: {exc}") from exc
    except BaseException:
        await conn.disconnect(nowait=True)
        raise
