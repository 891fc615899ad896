"""A TCP proxy on 127.0.0.1 for fault tests: latency, connection resets and a black hole.

It forwards every connection to one upstream port (a test's redis-server) and lets a test
change the weather while traffic flows::

    async with TcpProxy(server.port) as proxy:
        config = CacheConfig(use_redis=True, redis_url=proxy.url, ...)
        proxy.latency = 0.5        # each chunk waits this long before it is forwarded
        proxy.black_hole = True    # accept and read, never forward (a SIGSTOPped host)
        proxy.reset_all()          # abort every open connection with an RST
        proxy.refuse = True        # new connections are reset at once

Loopback only: it binds 127.0.0.1 and connects to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType

HOST = "127.0.0.1"
_RST_LINGER = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, not FIN


class TcpProxy:
    """Forwards ``127.0.0.1:<port>`` to ``127.0.0.1:<upstream_port>``."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.latency = 0.0
        self.black_hole = False
        self.refuse = False
        self.connections = 0  # accepted so far
        self.client_bytes = 0  # forwarded (or swallowed) from clients to the server
        self._commands: dict[bytes, int] = {}
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def count(self, command: bytes) -> int:
        """How many times clients sent ``command`` (e.g. ``b"MGET"``) through the proxy."""
        return self._commands.get(command.upper(), 0)

    def watch(self, *commands: bytes) -> None:
        """Start counting these commands in client traffic (see :meth:`count`)."""
        for command in commands:
            self._commands.setdefault(command.upper(), 0)

    async def start(self) -> TcpProxy:
        self._server = await asyncio.start_server(self._accept, HOST, 0)
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
        self.reset_all()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> TcpProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def reset_all(self) -> None:
        """Abort every open connection, both sides, with an RST."""
        for writer in list(self._writers):
            _reset(writer)
        self._writers.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.refuse:
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(HOST, self.upstream_port)
        except OSError:
            _reset(writer)
            return
        self._writers.update((writer, up_writer))
        for source, sink, from_client in ((reader, up_writer, True), (up_reader, writer, False)):
            task = asyncio.get_running_loop().create_task(self._pump(source, sink, from_client))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, from_client: bool
    ) -> None:
        try:
            while chunk := await source.read(65536):
                if from_client:
                    self.client_bytes += len(chunk)
                    for command in self._commands:
                        self._commands[command] += chunk.upper().count(b"\r\n" + command + b"\r\n")
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.black_hole:
                    continue  # swallowed: the client waits for an answer that never comes
                sink.write(chunk)
                await sink.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            _reset(sink)
            self._writers.discard(sink)


def _reset(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RST_LINGER)
    writer.transport.abort()
